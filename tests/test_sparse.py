"""The executor in clip mode: same outputs and masks as the masked dense model; executed MACs equal Eq. 5."""

import pytest
import torch

from adafuse.errors import UserError
from adafuse.flops import adaptive_macs, profile
from adafuse.inference import SparseRecognizer, kernels
from adafuse.layers import KEEP, REUSE, SKIP, AdaptiveFusion
from adafuse.layers.actions import actions_to_mask
from adafuse.models import build_model
from conftest import force_policy

SIZE = 32
DISPATCH = ("kernel", "auto", "dense")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(backbone: str = "resnet18", method: str = "adafuse_tsn", t: int = 3, **kwargs) -> torch.nn.Module:
    """A random model for clips of ``t`` frames whose policies make varied decisions and whose logits are O(1)."""
    model = build_model(backbone=backbone, method=method, num_classes=5, num_segments=t, policy_hidden=8, **kwargs)
    torch.nn.init.normal_(model.head.weight, 0.0, 1.0)
    for m in model.modules():
        if isinstance(m, AdaptiveFusion):
            torch.nn.init.normal_(m.policy.fc0.weight, 0.0, 0.5)
            torch.nn.init.normal_(m.policy.fc1.weight, 0.0, 1.0)
        elif isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, so folding is really exercised
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal within float32 rounding: max |difference| <= 1e-4 x max(1, max |expected|) (folded BatchNorm and
    group-wise sums round differently from the training graph)."""
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= 1e-4 * scale


def executed(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks as the executor runs them: REUSE at a clip's first frame copies zeros, i.e. SKIP."""
    out = {}
    for name, mask in masks.items():
        mask = mask.clone()
        first = mask[:, 0, :, REUSE] == 1
        mask[:, 0][first] = torch.tensor([0.0, 0.0, 1.0])
        out[name] = mask
    return out


def eq5_macs(table, masks: dict[str, torch.Tensor]) -> float:
    """MACs of Eq. 5 (``adafuse.flops``) for the given (N, T, G, 3) masks, summed over the N videos."""
    return float(adaptive_macs(masks, table, batch_size=next(iter(masks.values())).shape[0]).double().sum())


# Per-channel decisions (group 1) on the group kernels make thousands of tiny GEMMs: they are tested on the
# quarter-width resnet10_mini; the other models decide per group of channels.
MODELS = [
    ("resnet10_mini", "adafuse_tsn", {}),
    ("resnet18", "adafuse_tsn", {"policy_group_size": 4}),
    ("resnet50", "adafuse_tsn", {"policy_group_size": 8}),
    ("resnet18", "adafuse_tsm", {"policy_group_size": 8}),  # bidirectional: a clip executor can run it
    ("resnet18", "adafuse_tsm", {"causal_shift": True, "policy_group_size": 16}),
    ("resnet18", "adafuse_tsm", {"policy_group_size": 8, "shifted_shortcut": True}),  # the authors' BateNet
    ("resnet50", "adafuse_tsm_last", {"causal_shift": True, "policy_group_size": 4}),
    ("resnet10_mini", "ada_skip", {"policy_group_size": 2}),
    ("resnet18", "ada_reuse", {"policy_group_size": 16}),
    ("resnet50", "adafuse_tsn", {"policy_group_size": 32}),
]


@pytest.mark.parametrize("dispatch", DISPATCH)
@pytest.mark.parametrize(("backbone", "method", "kwargs"), MODELS)
def test_clip_equals_masked_dense_model_on_random_policies(backbone, method, kwargs, dispatch):
    model = tiny(backbone, method, t=4, **kwargs)
    clip = torch.randn(2, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, policies = model.forward_with_policies(clip, per_frame=True)
    executor = SparseRecognizer.from_model(model, dispatch=dispatch)
    logits, masks = executor.forward_with_policies(clip, per_frame=True)
    assert_same(logits, expected)
    assert set(masks) == set(policies)
    for name, mask in masks.items():
        assert torch.equal(mask, policies[name])  # the very same decisions, not only the same outputs
    shares = executor.stats.shares()
    assert 0 < shares["keep"] < 1 and (shares["skip"] > 0 or method == "ada_reuse")
    if dispatch == "kernel":  # what ran is Eq. 5 of those masks, to the multiply-accumulate
        table = profile(model, input_size=SIZE)
        assert executor.stats.kernel_calls > 0 and executor.stats.dense_calls == 0
        assert executor.stats.macs == pytest.approx(eq5_macs(table, executed(policies)), rel=1e-12)
    else:
        assert_same(executor(clip), expected.mean(dim=1))


@pytest.mark.parametrize("action", [KEEP, REUSE, SKIP])
@pytest.mark.parametrize(("backbone", "group_size"), [("resnet10_mini", 1), ("resnet50", 16)])
def test_all_keep_all_reuse_all_skip(backbone, group_size, action):
    model = tiny(backbone, policy_group_size=group_size)
    force_policy(model, action)
    clip = torch.randn(1, 3, 3, SIZE, SIZE)
    table = profile(model, input_size=SIZE)
    with torch.no_grad():
        expected, policies = model.forward_with_policies(clip, per_frame=True)
    for dispatch in DISPATCH:
        executor = SparseRecognizer.from_model(model, dispatch=dispatch)
        assert_same(executor.frame_logits(clip), expected)
        macs = executor.stats.macs
        if dispatch == "kernel":
            assert macs == pytest.approx(eq5_macs(table, executed(policies)), rel=1e-12)
        if dispatch == "dense" or (dispatch == "auto" and (action == KEEP or group_size == 1)):
            assert macs == table.dense_macs  # every conv dense: nothing saved
    # Eq. 5 charges a first frame's REUSE as a conv2 input; the executor runs it as SKIP and saves exactly that
    if action == REUSE:
        first = sum(float((policies[n][:, 0, :, REUSE] * table.fusion[n][1]).sum()) for n in policies)
        assert first > 0
        assert eq5_macs(table, policies) - eq5_macs(table, executed(policies)) == pytest.approx(first, rel=1e-9)


def test_forced_actions_are_run_and_returned():
    model = tiny("resnet18", t=3, policy_group_size=8)
    clip = torch.randn(1, 3, 3, SIZE, SIZE)
    gen = torch.Generator().manual_seed(1)
    forced = {name: actions_to_mask(torch.randint(0, 3, (1, 3, f.decisions), generator=gen))
              for name, f in model.fusions().items()}  # fmt: skip
    with torch.no_grad():
        expected, _ = model.forward_with_policies(clip, actions=forced)
    executor = SparseRecognizer.from_model(model, dispatch="kernel")
    logits, masks = executor.forward_with_policies(clip, actions=forced)
    assert_same(logits, expected)
    assert all(torch.equal(masks[k], forced[k]) for k in forced)
    table = profile(model, input_size=SIZE)
    assert executor.stats.macs == pytest.approx(eq5_macs(table, executed(forced)), rel=1e-12)
    name = next(iter(forced))
    with pytest.raises(ValueError, match="policy mask of shape"):
        executor.forward_with_policies(clip, actions={name: forced[name][:, :2]})
    with pytest.raises(ValueError, match="without a policy"):
        executor.forward_with_policies(clip, actions={"backbone.layer9.fusion": forced[name]})


def test_pure_pytorch_kernels_give_the_same_results(monkeypatch):
    monkeypatch.setenv("ADAFUSE_KERNELS", "torch")  # the path that runs where the extension cannot be built
    model = tiny("resnet50", "adafuse_tsm", t=3, policy_group_size=8)
    clip = torch.randn(2, 3, 3, SIZE, SIZE)
    executor = SparseRecognizer.from_model(model, dispatch="kernel")
    assert executor.blocks[0].sparse1.backend == "torch"
    with torch.no_grad():
        assert_same(executor.frame_logits(clip), model.frame_logits(clip))


def test_tsn_and_tsm_without_policies_run_dense():
    for backbone, method, kwargs in (("resnet50", "tsn", {}), ("resnet18", "tsm", {}),
                                     ("resnet18", "tsm", {"causal_shift": True})):  # fmt: skip
        model = tiny(backbone, method, **kwargs)
        clip = torch.randn(2, 3, 3, SIZE, SIZE)
        executor = SparseRecognizer.from_model(model)
        with torch.no_grad():
            assert_same(executor.frame_logits(clip), model.frame_logits(clip))
        assert executor.stats.macs == 2 * profile(model, input_size=SIZE).dense_macs
        assert executor.forward_with_policies(clip)[1] == {}


def test_bad_arguments():
    model = tiny()
    with pytest.raises(ValueError, match="dispatch"):
        SparseRecognizer.from_model(model, dispatch="fast")
    with pytest.raises(ValueError, match="N, T, 3, H, W"):
        SparseRecognizer.from_model(model)(torch.randn(3, 3, SIZE, SIZE))


@pytest.mark.parametrize(
    ("method", "message"), [("cgnet", "ChannelGatedConv2d"), ("lstm", "average consensus"), ("random", "RandomFusion")]
)
def test_unsupported_models_are_refused_with_one_line(method, message):
    model = build_model(backbone="resnet18", method=method, num_classes=5, num_segments=3)
    with pytest.raises(UserError, match=message) as info:
        SparseRecognizer.from_model(model)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "bninception"])
def test_other_backbones_are_refused(backbone):
    with torch.device("meta"):  # only the structure matters
        model = build_model(backbone=backbone, method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8)
    with pytest.raises(UserError, match="resnet\\* backbones only"):
        SparseRecognizer.from_model(model)


@pytest.mark.skipif(not kernels._MKLDNN, reason="this torch has no fused oneDNN convolution: F.conv2d is the default")
def test_a_refused_fused_convolution_falls_back_to_conv2d(monkeypatch):
    # oneDNN's fused op is private API: on torch 2.11 on the GPU test machine it raised "could not create a memory".
    # A layer whose call is refused must warn once and give F.conv2d's result, with the residual and ReLU applied.
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8).eval()
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    expected = (bn(conv(x)) + residual).relu()
    folded = kernels.FoldedConv(conv, bn)

    def refuse(*args, **kwargs):
        raise RuntimeError("could not create a memory")

    monkeypatch.setattr(kernels.torch.ops.mkldnn._convolution_pointwise, "binary", refuse, raising=False)
    folded._fused = True  # as on a machine where the op exists
    with pytest.warns(UserWarning, match="falls back to F.conv2d"):
        out = folded.dense(x, relu=True, residual=residual)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not folded._fused
    torch.testing.assert_close(folded.dense(x, relu=True, residual=residual), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not kernels._MKLDNN_IN_PLACE, reason="this torch has no in-place fused oneDNN convolution")
def test_dense_3x3_in_place_accumulates_into_the_residual():
    # A BasicBlock's conv2 on oneDNN (its sum post-op): the result is written into the residual's buffer only when
    # asked to, and equals the out-of-place result.
    conv, bn = torch.nn.Conv2d(32, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32).eval()
    bn.running_mean.uniform_(-1, 1)
    folded = kernels.FoldedConv(conv, bn)
    assert folded._kernel is None  # 3 × 32 values per kernel row: oneDNN, not the row kernel
    x = torch.randn(2, 32, 6, 7).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 32, 6, 7).contiguous(memory_format=torch.channels_last)
    expected = (bn(conv(x)) + residual).relu()
    kept = residual.clone()
    torch.testing.assert_close(folded.dense(x, relu=True, residual=residual), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(residual, kept), "without in_place the residual is left as it was"
    out = folded.dense(x, relu=True, residual=residual, in_place=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert out.data_ptr() == residual.data_ptr()
