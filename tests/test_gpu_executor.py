"""Batched GPU sparse execution: the Triton group-sparse conv and the clip executor equal the masked dense model.

Without a GPU the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by conftest.py before any
test module is imported; slow, so shapes are tiny and each forward pass is shared by several checks). With a GPU the
same tests run on it, and the GPU-only ones check float16 and the CUDA-graph replay.
"""

import pytest
import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.flops import adaptive_macs, profile
from adafuse.inference.gpu_executor import (
    GpuSparseRecognizer,
    budget_from_shares,
    executed_policies,
)
from adafuse.inference.triton_group_conv import TritonGroupConv, compact_sources
from adafuse.layers import KEEP, REUSE, SKIP, AdaptiveFusion, TemporalShift
from adafuse.layers.actions import actions_to_mask
from adafuse.layers.gumbel import budget_onehot, one_hot_argmax
from adafuse.models import Recognizer, build_model
from adafuse.models.resnet import BasicBlock, Bottleneck, ResNet
from test_group_conv import reference as reference_conv  # the same group-sparse conv, by definition

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
T = 3  # frames: a middle frame, so reuse of a frame that itself reused or skipped is exercised


def cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def tiny_resnet(block, *, shift: bool, widths=(16, 32, 32, 32), group_size: int = 16) -> Recognizer:
    """A one-block-per-stage ResNet with AdaFuse in every block; random BatchNorm statistics and a head large enough
    that the logits compare meaningfully."""
    torch.manual_seed(0)
    net = ResNet(
        block=block, layers=(1, 1, 1, 1), widths=widths,
        shift_layer=lambda c, s: TemporalShift(num_segments=T) if shift else None,
        fusion_layer=lambda c_in, c, s: AdaptiveFusion(c_in, c, num_segments=T, hidden=8, group_size=group_size),
    )  # fmt: skip
    model = Recognizer(net, num_classes=5, num_segments=T).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.head.weight.normal_(0, 1.0)
    return model


def random_masks(model: Recognizer, n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: actions_to_mask(torch.randint(0, 3, (n, T, f.decisions), generator=gen))
            for name, f in model.fusions().items()}  # fmt: skip


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    assert (a - b).abs().max() <= rel * b.abs().max(), ((a - b).abs().max(), b.abs().max())


@pytest.fixture(scope="module")
def bottleneck_tsm():
    model = tiny_resnet(Bottleneck, shift=True)
    return model, GpuSparseRecognizer.from_model(model, dtype=torch.float32, device=DEVICE)


# -- the kernel ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "stride", "c_in", "c_out", "size"), [(1, 1, 32, 48, 5), (3, 2, 48, 32, 7)])
def test_group_conv_computes_only_chosen_groups_from_chosen_rows(k, stride, c_in, c_out, size):
    gen = torch.Generator().manual_seed(k)
    weight, bias = torch.randn(c_out, c_in, k, k, generator=gen), torch.randn(c_out, generator=gen)
    conv = TritonGroupConv(weight.to(DEVICE), bias.to(DEVICE), stride=stride, group_size=16, dtype=torch.float32)
    rows, batch = 5, 4
    x = cl(torch.randn(rows, c_in, size, size, generator=gen))
    ho, wo = conv.output_size(size, size)
    out0 = cl(torch.full((batch, c_out, ho, wo), float("nan")))  # poison: what is not computed stays NaN
    out_groups = torch.rand(batch, c_out // 16, generator=gen) < 0.5
    in_source = torch.randint(-1, rows, (batch, c_in // 16), generator=gen)  # any row, -1 = skipped
    in_source[0] = -1  # a sample that reads nothing: bias only
    residual = cl(torch.randn(batch, c_out, ho, wo, generator=gen))
    cases = [(out_groups, in_source, True, residual), (None, None, False, None), (out_groups, None, True, None)]
    for groups, source, relu, res in cases:
        out = out0.clone().to(DEVICE)
        conv(x.to(DEVICE), out=out, out_groups=None if groups is None else groups.to(DEVICE),
             sources=None if source is None else compact_sources(source.to(DEVICE)), relu=relu,
             residual=None if res is None else res.to(DEVICE))  # fmt: skip
        expected = reference_conv(x, weight, bias, stride=stride, out0=out0, out_groups=groups, in_source=source,
                                  relu=relu, residual=res, group_size=16)  # fmt: skip
        out = out.cpu()
        assert torch.equal(out.isnan(), expected.isnan())  # exactly the chosen groups were written
        assert_close(out.nan_to_num(), expected.nan_to_num())


def test_compact_sources_lists_read_groups_first_in_order():
    src = compact_sources(torch.tensor([[-1, 3, 0, -1], [2, 2, 2, 2], [-1, -1, -1, -1]]))
    assert src.count.tolist() == [2, 4, 0]
    assert src.group[0, :2].tolist() == [1, 2] and src.row[0, :2].tolist() == [3, 0]
    assert src.group[1].tolist() == [0, 1, 2, 3] and src.row[1].tolist() == [2, 2, 2, 2]


def test_group_conv_refuses_bad_sizes():
    with pytest.raises(UserError, match="policy_group_size 16, 32 or 64"):
        TritonGroupConv(torch.randn(48, 40, 1, 1), torch.zeros(48), stride=1, group_size=16, dtype=torch.float32)
    with pytest.raises(UserError, match="policy_group_size"):
        TritonGroupConv(torch.randn(32, 32, 1, 1), torch.zeros(32), stride=1, group_size=8, dtype=torch.float32)


# -- the budget rule ----------------------------------------------------------------------------------------------


def test_budget_keeps_the_largest_margins_and_agrees_with_argmax_at_its_own_count():
    # (keep, reuse, skip) logits of 4 groups; margins max(keep, reuse) - skip = 2, -1, 0.5, -3
    logits = torch.tensor([[[3.0, 1.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.5, 1.0], [-3.0, -2.0, 1.0]]])
    ids = budget_onehot(logits, budget=2, skip=2).argmax(-1)
    assert ids.tolist() == [[KEEP, SKIP, REUSE, SKIP]]
    assert budget_onehot(logits, budget=3, skip=2).argmax(-1).tolist() == [[KEEP, REUSE, REUSE, SKIP]]
    assert budget_onehot(logits, budget=0, skip=2).argmax(-1).tolist() == [[SKIP] * 4]
    random = torch.randn(64, 10, 3)
    argmax = one_hot_argmax(random)
    for row, mask in zip(random, argmax, strict=True):  # same decisions when the budget is the arg-max's own count
        k = int((mask[:, SKIP] == 0).sum())
        assert torch.equal(budget_onehot(row, budget=k, skip=SKIP), mask)
    with pytest.raises(ValueError, match="budget"):
        budget_onehot(logits, budget=5, skip=2)


# -- the executor -------------------------------------------------------------------------------------------------


def test_forced_masks_match_the_masked_dense_model(bottleneck_tsm):
    """Every action at every frame, REUSE on first frames and across a clip boundary (row t-1 of the second clip's
    first frame is the first clip's last frame: it must read zeros), bidirectional TSM, stride-2 blocks."""
    model, engine = bottleneck_tsm
    clips = torch.randn(2, T, 3, 32, 32)
    masks = random_masks(model, 2, seed=1)
    masks["backbone.layer1.0.fusion"][1, 0] = actions_to_mask(torch.tensor([REUSE]))  # first frame of clip 2
    logits, policies = engine.forward_with_policies(clips.to(DEVICE), actions={k: v.to(DEVICE) for k, v in
                                                                               masks.items()})  # fmt: skip
    assert_close(logits, model.forward_with_policies(clips, actions=masks)[0])
    assert all(torch.equal(policies[k].cpu(), masks[k]) for k in masks)


def test_own_policy_and_budget_match_the_masked_dense_model(bottleneck_tsm):
    model, engine = bottleneck_tsm
    clips = torch.randn(2, T, 3, 32, 32)
    logits, policies = engine.forward_with_policies(clips.to(DEVICE))
    expected, dense_policies = model.forward_with_policies(clips)
    assert_close(logits, expected)
    assert all(torch.equal(policies[k].cpu(), v) for k, v in dense_policies.items())  # the same arg-max decisions

    budget = {name: 1 for name in engine.fusion_names}  # one non-skipped group per frame (of 1 or 2)
    budgeted = GpuSparseRecognizer.from_model(model, dtype=torch.float32, device=DEVICE, budget=budget)
    logits, policies = budgeted.forward_with_policies(clips.to(DEVICE))
    for mask in policies.values():
        assert ((1 - mask[..., SKIP]).sum(-1) == 1).all()
    assert_close(logits, model.forward_with_policies(clips, actions={k: v.cpu() for k, v in policies.items()})[0])
    # where the arg-max left exactly one group unskipped, the budget decided the same
    for name, mask in policies.items():
        same = (1 - dense_policies[name][..., SKIP]).sum(-1) == 1
        assert torch.equal(mask.cpu()[same], dense_policies[name][same])


def test_basic_blocks_gated_3x3_first_conv_with_stride():
    model = tiny_resnet(BasicBlock, shift=False, widths=(16, 16, 32, 32))
    engine = GpuSparseRecognizer.from_model(model, dtype=torch.float32, device=DEVICE)
    clips = torch.randn(2, T, 3, 32, 32)
    masks = random_masks(model, 2, seed=2)
    logits, _ = engine.forward_with_policies(clips.to(DEVICE), actions={k: v.to(DEVICE) for k, v in masks.items()})
    assert_close(logits, model.forward_with_policies(clips, actions=masks)[0])


def test_executed_cost_is_eq5_less_first_frame_reuse():
    model = build_model(backbone="resnet50", method="adafuse_tsn", num_classes=5, num_segments=T, policy_hidden=8,
                        policy_group_size=32)  # fmt: skip
    table = profile(model, input_size=224)
    masks = random_masks(model, 2, seed=3)
    executed = executed_policies(masks)
    first_reuse = sum((masks[k][:, 0, :, REUSE] * table.fusion[k][1]).sum(1) for k in masks)
    assert torch.allclose(adaptive_macs(executed, table, batch_size=2),
                          adaptive_macs(masks, table, batch_size=2) - first_reuse)  # fmt: skip
    assert all(torch.equal(executed[k][:, 1:], masks[k][:, 1:]) for k in masks)
    budget = budget_from_shares(model, ((0.07, 0.02, 0.91), (0.12, 0.02, 0.86), (0.25, 0.07, 0.68), (0.28, 0.3, 0.42)))
    assert budget["backbone.layer1.0.fusion"] == 0 and budget["backbone.layer4.2.fusion"] == round(0.58 * 16)
    assert budget["backbone.layer3.5.fusion"] == round(0.32 * 8) and len(budget) == 16


def test_refusals_are_one_line(monkeypatch):
    model = tiny_resnet(Bottleneck, shift=False)
    with pytest.raises(UserError, match="budget must name every fused block"):
        GpuSparseRecognizer.from_model(model, dtype=torch.float32, device=DEVICE, budget={"backbone.layer1.0": 1})
    cgnet = build_model(backbone="resnet18", method="cgnet", num_classes=5, num_segments=T)
    with pytest.raises(UserError, match="CGNet"):
        GpuSparseRecognizer.from_model(cgnet)
    with pytest.raises(UserError, match="policy_group_size"):
        GpuSparseRecognizer.from_model(build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5,
                                                   num_segments=T, policy_group_size=1))  # fmt: skip
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU") as error:
        GpuSparseRecognizer.from_model(model)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_float16_and_cuda_graph_on_the_gpu(bottleneck_tsm):
    model, _ = bottleneck_tsm
    engine = GpuSparseRecognizer.from_model(model, dtype=torch.float16)
    clips = torch.randn(4, T, 3, 64, 64)
    masks = random_masks(model, 4, seed=4)
    forced = {k: v.cuda() for k, v in masks.items()}
    logits, _ = engine.forward_with_policies(clips.cuda(), actions=forced)
    assert_close(logits, model.forward_with_policies(clips, actions=masks)[0], rel=2e-2)
    run = engine.graphed(clips.cuda())
    other = torch.randn(4, T, 3, 64, 64)
    replayed, policies = run(other.cuda())
    eager, eager_policies = engine.forward_with_policies(other.cuda())
    assert all(torch.equal(policies[k], eager_policies[k]) for k in policies)
    assert_close(replayed, eager, rel=1e-3)  # the same kernels; cuDNN may pick another algorithm when capturing
