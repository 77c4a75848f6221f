"""The executor's policy nets and global average pool, on the compiled ops and on PyTorch, against the unfolded
AdaptiveFusion module: the same decisions for clips (history from the row above), streams (history given or zeros)
and policies without history or with a subset of the actions; the pool equals ``mean`` over odd pixel counts."""

import pytest
import torch

from adafuse.inference import extension
from adafuse.inference.kernels import global_avg_pool, to_channels_last
from adafuse.inference.sparse import FoldedPolicy
from adafuse.layers import KEEP, REUSE, SKIP, AdaptiveFusion
from conftest import HAS_COMPILER

# (C_in, channels, hidden, group_size, actions): hidden and G·A off the 16-wide panels (padded), a wide input
# (R50's last stage), per-channel decisions, KEEP/SKIP only (an action subset: ids mapped back).
POLICIES = [(64, 64, 64, 32, (KEEP, REUSE, SKIP)), (2048, 512, 64, 32, (KEEP, REUSE, SKIP)),
            (48, 40, 20, 1, (KEEP, REUSE, SKIP)), (24, 16, 8, 8, (KEEP, SKIP))]


def random_fusion(c_in: int, channels: int, hidden: int, group_size: int, actions) -> AdaptiveFusion:
    fusion = AdaptiveFusion(c_in, channels, num_segments=4, hidden=hidden, group_size=group_size, actions=actions)
    with torch.no_grad():
        for p in fusion.parameters():
            p.normal_(0.0, 0.5)
        fusion.policy.bn.running_mean.normal_()
        fusion.policy.bn.running_var.uniform_(0.5, 2.0)
    return fusion.eval()


def reference_ids(fusion: AdaptiveFusion, v_prev: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The module's own arg-max decisions as action ids (B, G), from its unfolded layers."""
    features = torch.cat([v_prev, v], dim=1) if fusion.history else v
    with torch.no_grad():
        choice = fusion.policy(features).argmax(dim=-1)
    return torch.tensor([int(a) for a in fusion.actions])[choice]


@pytest.mark.parametrize("spec", POLICIES)
def test_policy_decides_as_the_module(spec, backend):
    fusion = random_fusion(*spec)
    policy = FoldedPolicy(fusion)
    assert (policy._ops is None) == (backend == "torch")
    c_in = spec[0]
    for rows, clip_len in [(8, 4), (12, 4), (9, 3), (8, 1)]:  # clips: the row above is the previous frame
        v = torch.randn(rows, c_in)
        v3 = v.view(-1, clip_len, c_in)
        v_prev = torch.cat([torch.zeros_like(v3[:, :1]), v3[:, :-1]], dim=1).view_as(v)
        assert torch.equal(policy(None, v, clip_len=clip_len), reference_ids(fusion, v_prev, v))
    for rows in (1, 3, 13):  # streams: the previous frame given, or zeros
        v, v_prev = torch.randn(rows, c_in), torch.randn(rows, c_in)
        assert torch.equal(policy(v_prev, v), reference_ids(fusion, v_prev, v))
        assert torch.equal(policy(None, v), reference_ids(fusion, torch.zeros_like(v), v))
    folded_only = FoldedPolicy(fusion, cpu_kernel=False)  # the GPU executor's: the folded weights, no CPU op
    assert folded_only._ops is None
    assert torch.equal(folded_only(None, v, clip_len=1), reference_ids(fusion, torch.zeros_like(v), v))


@pytest.mark.parametrize("shape", [(1, 16, 1, 1), (3, 40, 7, 7), (2, 64, 1, 5), (1, 24, 3, 3), (2, 8, 2, 3)])
def test_global_avg_pool_is_the_mean(shape, backend):
    x = to_channels_last(torch.randn(shape))
    torch.testing.assert_close(global_avg_pool(x), x.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    # any other layout is pooled too (the PyTorch path)
    torch.testing.assert_close(global_avg_pool(x.contiguous()), x.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler")
def test_policy_op_checks_its_inputs(monkeypatch):
    monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
    policy = FoldedPolicy(random_fusion(*POLICIES[0]))
    ops = extension.extension_ops()
    ids = torch.empty(2, policy.decisions, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="fc0 takes"):
        ops.policy(torch.randn(2, 32), None, 0, *policy._packed, policy.decisions, 3, ids)
    with pytest.raises(RuntimeError, match="ids must be"):
        ops.policy(torch.randn(2, 64), None, 0, *policy._packed, policy.decisions, 3, ids[:1])
    with pytest.raises(RuntimeError, match="v_prev must be"):
        ops.policy(torch.randn(2, 64), torch.randn(3, 64), 0, *policy._packed, policy.decisions, 3, ids)
    w0, b0, w1, b1 = policy._packed
    with pytest.raises(RuntimeError, match="contiguous float32"):
        ops.policy(torch.randn(2, 64), None, 0, w0, b0.double(), w1, b1, policy.decisions, 3, ids)
    with pytest.raises(RuntimeError, match="mean must be"):
        ops.mean_hw(to_channels_last(torch.randn(2, 8, 3, 3)), torch.empty(2, 9))
