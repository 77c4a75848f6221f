"""Sparse executor: same outputs and masks as the masked dense model; executed MACs equal Eq. 5."""

import pytest
import torch

from adafuse.errors import UserError
from adafuse.flops import adaptive_macs, profile
from adafuse.inference import CostModel, SparseRecognizer, kernels
from adafuse.layers import KEEP, REUSE, SKIP, AdaptiveFusion
from adafuse.models import build_model
from conftest import force_policy

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


COST_MODELS = {
    "sparse": CostModel.always_sparse(),  # every policy-controlled conv sliced
    "dense": CostModel.always_dense(),  # every conv dense, skipped channels zeroed
    "mixed": CostModel(default=0.6),  # per frame and layer, whichever the active fraction says
}


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
    sliced sums round differently from the training graph)."""
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= 1e-4 * scale


def run_engine(engine: SparseRecognizer, clip: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Frame logits (N, T, K) of the executor and the policy masks (N, T, G, 3) it executed, by fusion name."""
    state = engine.init_state(clip.shape[0])
    logits, frames = [], []
    for t in range(clip.shape[1]):
        logits.append(engine.step(clip[:, t], state))
        frames.append(engine.last_policies)
    masks = {name: torch.stack([f[name] for f in frames], dim=1) for name in frames[0]}
    return torch.stack(logits, dim=1), masks


@pytest.mark.parametrize("cost", COST_MODELS)
@pytest.mark.parametrize(
    ("backbone", "method", "kwargs"),
    [
        ("resnet18", "adafuse_tsn", {}),
        ("resnet50", "adafuse_tsn", {}),
        ("resnet18", "adafuse_tsm", {"causal_shift": True}),
        ("resnet18", "adafuse_tsm", {"causal_shift": True, "shifted_shortcut": True}),
        ("resnet50", "adafuse_tsm_last", {"causal_shift": True, "policy_group_size": 4}),
        ("resnet18", "ada_skip", {"policy_group_size": 2}),
        ("resnet18", "ada_reuse", {}),
    ],
)
def test_sparse_equals_masked_dense_on_random_policies(backbone, method, kwargs, cost):
    model = tiny(backbone, method, t=4, **kwargs)
    clip = torch.randn(2, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, policies = model.forward_with_policies(clip, per_frame=True)
    engine = SparseRecognizer.from_model(model, input_size=SIZE, cost_model=COST_MODELS[cost])
    logits, masks = run_engine(engine, clip)
    assert_same(logits, expected)
    assert set(masks) == set(policies)
    for name, mask in masks.items():
        assert torch.equal(mask, policies[name])  # the very same decisions, not only the same outputs
    shares = engine.stats.shares()
    assert 0 < shares["keep"] < 1 and (shares["skip"] > 0 or method == "ada_reuse")


@pytest.mark.parametrize("action", [KEEP, REUSE, SKIP])
@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_forced_policies_and_the_first_frame(backbone, action):
    model = tiny(backbone)
    force_policy(model, action)
    clip = torch.randn(1, 3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.frame_logits(clip)
    for cost in COST_MODELS.values():
        engine = SparseRecognizer.from_model(model, input_size=SIZE, cost_model=cost)
        assert_same(engine.frame_logits(clip), expected)
        # a single frame is a first frame: REUSE copies the zero history, like SKIP
        assert_same(engine.frame_logits(clip[:, :1]), expected[:, :1])


def test_tsn_and_causal_tsm_without_policies_run_dense():
    for method, kwargs in (("tsn", {}), ("tsm", {"causal_shift": True})):
        model = tiny("resnet50", method, **kwargs)
        clip = torch.randn(2, 3, 3, SIZE, SIZE)
        engine = SparseRecognizer.from_model(model, input_size=SIZE, cost_model=CostModel.always_sparse())
        with torch.no_grad():
            assert_same(engine.frame_logits(clip), model.frame_logits(clip))
        table = profile(model, input_size=SIZE)
        assert engine.executed_macs == 2 * table.dense_macs


def eq5_macs(table, masks: dict[str, torch.Tensor]) -> float:
    """MACs of Eq. 5 (``adafuse.flops``) for the given (N, T, G, 3) masks, summed over the N videos."""
    return float(adaptive_macs(masks, table, batch_size=next(iter(masks.values())).shape[0]).double().sum())


@pytest.mark.parametrize(("backbone", "group_size"), [("resnet18", 1), ("resnet50", 2)])
def test_executed_macs_equal_eq5_accounting(backbone, group_size):
    model = tiny(backbone, t=4, policy_group_size=group_size)
    clip = torch.randn(2, 4, 3, SIZE, SIZE)
    engine = SparseRecognizer.from_model(model, input_size=SIZE, cost_model=CostModel.always_sparse())
    _, masks = run_engine(engine, clip)
    table = profile(model, input_size=SIZE)
    # Executed: REUSE at a stream's first frame reads the zero history and is run as SKIP.
    effective = {}
    for name, mask in masks.items():
        mask = mask.clone()
        first = mask[:, 0, :, REUSE] == 1
        mask[:, 0][first] = torch.tensor([0.0, 0.0, 1.0])
        effective[name] = mask
    executed = engine.executed_macs
    assert executed == pytest.approx(eq5_macs(table, effective), rel=1e-9)
    # Eq. 5 itself charges those first-frame REUSE channels as conv2 inputs: the executor saved exactly them.
    first_reuse = sum(float((mask[:, 0, :, REUSE] * table.fusion[name][1]).sum()) for name, mask in masks.items())
    assert first_reuse > 0
    assert eq5_macs(table, masks) - executed == pytest.approx(first_reuse, rel=1e-9)


def test_dense_layers_count_everything():
    model = tiny("resnet18")
    engine = SparseRecognizer.from_model(model, input_size=SIZE, cost_model=CostModel.always_dense())
    engine.frame_logits(torch.randn(1, 3, 3, SIZE, SIZE))
    # all convolutions dense, plus the lazy recomputation of channels reused but not computed the frame before:
    # at least the dense cost, never less
    assert engine.executed_macs >= profile(model, input_size=SIZE).dense_macs


def test_cost_model_measures_every_dynamic_layer():
    model = tiny("resnet18")
    engine = SparseRecognizer.from_model(model, input_size=SIZE)  # measured on this machine
    names = set(engine.dynamic_layers(SIZE))
    assert len(names) == 16 and set(engine.cost_model.timings) == names
    for timing in engine.cost_model.timings.values():
        assert timing.dense_us > 0 and timing.threshold >= 0 and len(timing.sliced_us) == 4
    with torch.no_grad():
        clip = torch.randn(1, 3, 3, SIZE, SIZE)
        assert_same(engine.frame_logits(clip), model.frame_logits(clip))


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("adafuse_tsm", {}, "bidirectional"),
        ("cgnet", {}, "ChannelGatedConv2d"),
        ("lstm", {}, "LSTM"),
        ("random", {}, "RandomFusion"),
    ],
)
def test_unsupported_models_are_refused_with_one_line(method, kwargs, message):
    model = build_model(backbone="resnet18", method=method, num_classes=5, num_segments=3, **kwargs)
    with pytest.raises(UserError, match=message) as info:
        SparseRecognizer.from_model(model, input_size=SIZE, cost_model=CostModel.always_sparse())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "bninception"])
def test_other_backbones_are_refused(backbone):
    with torch.device("meta"):  # only the structure matters
        model = build_model(backbone=backbone, method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8)
    with pytest.raises(UserError, match="resnet\\* backbones only"):
        SparseRecognizer.from_model(model, cost_model=CostModel.always_sparse())


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
