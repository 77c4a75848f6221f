"""Fusion semantics: keep / reuse / skip, straight-through gradients, determinism, baselines, plug-in use."""

import pytest
import torch
from torch import nn

from adafuse.flops import adaptive_macs, profile
from adafuse.layers import (
    KEEP,
    REUSE,
    SKIP,
    AdaptiveFusion,
    ChannelGatedConv2d,
    FusedConvPair,
    RandomFusion,
    TemporalShift,
    ThresholdFusion,
    fuse,
)
from adafuse.layers.actions import actions_to_mask
from adafuse.models import build_model
from conftest import force_policy, tiny_clip


def onehot(actions):
    """(N, T, G) action indices -> (N, T, G, 3) policy mask."""
    return actions_to_mask(torch.tensor(actions))


def test_fuse_keep_reuse_skip_by_hand():
    y = torch.arange(1.0, 13.0).view(1 * 3, 2, 1, 2)  # N=1, T=3, C=2, H=1, W=2
    mask = onehot([[[KEEP, SKIP], [REUSE, KEEP], [SKIP, REUSE]]])
    out = fuse(y, mask).view(3, 2, 2)
    y3 = y.view(3, 2, 2)
    assert torch.equal(out[0, 0], y3[0, 0])  # keep
    assert torch.equal(out[0, 1], torch.zeros(2))  # skip
    assert torch.equal(out[1, 0], y3[0, 0])  # reuse copies the raw y of t-1
    assert torch.equal(out[1, 1], y3[1, 1])
    assert torch.equal(out[2, 0], torch.zeros(2))
    assert torch.equal(out[2, 1], y3[1, 1])  # raw history, even though t-1's channel 1 was kept, not fused


def test_reuse_at_first_frame_reads_zeros_and_does_not_chain():
    y = torch.randn(4, 1, 2, 2)  # T=4, C=1
    out = fuse(y, onehot([[[REUSE]] * 4])).view(4, 2, 2)
    assert torch.equal(out[0], torch.zeros(2, 2))
    for t in range(1, 4):  # each frame reads the raw y of t-1, not the fused one
        assert torch.equal(out[t], y.view(4, 2, 2)[t - 1])


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnet10_mini"])
def test_all_keep_adafuse_equals_tsn_exactly(backbone):
    tsn = build_model(backbone=backbone, method="tsn", num_classes=5, num_segments=3).eval()
    ada = build_model(backbone=backbone, method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8).eval()
    missing = ada.load_state_dict(tsn.state_dict(), strict=False).missing_keys
    assert missing and all(".fusion." in k for k in missing)
    force_policy(ada, KEEP)
    x = tiny_clip()
    logits, policies = ada.forward_with_policies(x)
    assert torch.equal(logits, tsn(x))
    assert set(policies) == set(ada.fusions()) and all(bool((m[..., KEEP] == 1).all()) for m in policies.values())


def test_all_skip_and_all_reuse_change_the_output_as_specified():
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8)
    model.eval()
    block = model.backbone.layer1[0]
    seen = {}
    block.conv2.register_forward_hook(lambda m, i, o: seen.__setitem__("in", i[0].detach()))
    block.bn1.register_forward_hook(lambda m, i, o: seen.__setitem__("y", torch.relu(o).detach()))
    x = tiny_clip(n=1)
    force_policy(model, SKIP)
    model(x)
    assert torch.equal(seen["in"], torch.zeros_like(seen["in"]))
    force_policy(model, REUSE)
    model(x)
    y = seen["y"]
    assert torch.equal(seen["in"][0], torch.zeros_like(y[0]))
    assert torch.equal(seen["in"][1:], y[:-1])


def test_straight_through_gradients_reach_the_policy():
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8)
    model.train()
    table = profile(model, input_size=32)
    logits, policies = model.forward_with_policies(tiny_clip())
    cost = adaptive_macs(policies, table, batch_size=2) / table.dense_macs
    (nn.functional.cross_entropy(logits, torch.tensor([0, 1])) + cost.mean()).backward()
    for fusion in model.fusions().values():
        assert fusion.policy.fc1.weight.grad.abs().sum() > 0
        assert fusion.policy.fc0.weight.grad.abs().sum() > 0


def test_eval_is_deterministic_and_sampling_is_opt_in():
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8)
    model.eval()
    x = tiny_clip()
    first = model.forward_with_policies(x)[1]
    again = model.forward_with_policies(x)[1]
    assert all(torch.equal(first[k], v) for k, v in again.items())

    def sampled(seed):
        policies = model.forward_with_policies(x, sample=True, generator=torch.Generator().manual_seed(seed))[1]
        return torch.cat([v.flatten() for v in policies.values()])

    rng = torch.get_rng_state()
    a, b = sampled(1), sampled(2)
    assert not torch.equal(a, b)  # the official protocol: noise changes the policy
    assert torch.equal(a, sampled(1))  # ... repeatably with a seeded generator
    assert torch.equal(torch.get_rng_state(), rng)  # and the global RNG is left alone


def test_masks_are_one_hot_and_ablations_restrict_actions():
    for method, absent in (("ada_skip", REUSE), ("ada_reuse", SKIP), ("adafuse_tsn", None)):
        model = build_model(backbone="resnet18", method=method, num_classes=5, num_segments=3, policy_hidden=8)
        model.train()
        for mask in model.forward_with_policies(tiny_clip())[1].values():
            assert torch.equal(mask.sum(-1), torch.ones_like(mask[..., 0]))
            if absent is not None:
                assert mask[..., absent].sum() == 0


def test_ada_skip_policy_sees_only_the_current_frame():
    fusion = AdaptiveFusion(4, 6, num_segments=3, hidden=5, actions=(KEEP, SKIP))
    assert fusion.policy.fc0.in_features == 4
    assert AdaptiveFusion(4, 6, num_segments=3, hidden=5).policy.fc0.in_features == 8


def test_policy_input_is_previous_then_current_with_zero_history():
    fusion = AdaptiveFusion(2, 4, num_segments=3, hidden=5)
    x = torch.arange(6.0).view(3, 2, 1, 1)  # one video, T=3, C_in=2, pooled v_t = x_t
    v = fusion.policy_input(x)
    assert torch.equal(v, torch.tensor([[0, 0, 0, 1], [0, 1, 2, 3], [2, 3, 4, 5]], dtype=torch.float))


def test_channel_groups_are_contiguous():
    fusion = AdaptiveFusion(4, 8, num_segments=2, hidden=5, group_size=4).train()
    y = torch.randn(4, 8, 3, 3)
    fused, mask = fusion.decide_and_fuse(torch.randn(4, 4, 3, 3), y)
    assert mask.shape == (2, 2, 2, 3) and fusion.policy.fc1.out_features == 2 * 3
    channels = mask.repeat_interleave(4, dim=2)  # (N, T, C, 3): each decision covers 4 contiguous channels
    expected = fuse(y, channels)
    assert torch.equal(fused, expected)


def test_hidden_quota_and_bad_sizes():
    assert AdaptiveFusion(64, 256, num_segments=8, quota=196608).policy.fc0.out_features == 768
    with pytest.raises(ValueError, match="divisible"):
        AdaptiveFusion(4, 6, num_segments=2, hidden=3, group_size=4)
    with pytest.raises(ValueError, match="exactly one"):
        AdaptiveFusion(4, 6, num_segments=2)


def test_random_fusion_ratios_and_repeatable_eval():
    fusion = RandomFusion(1000, num_segments=2, ratios=(0.5, 0.25, 0.25)).train()
    share = fusion(torch.randn(40, 1, 1, 1), torch.randn(40, 1000, 1, 1)).mean(dim=(0, 1, 2))
    assert torch.allclose(share, torch.tensor([0.5, 0.25, 0.25]), atol=0.01)
    fusion.eval()
    first = fusion(None, torch.randn(4, 1000, 1, 1))
    assert torch.equal(first, fusion(None, torch.randn(4, 1000, 1, 1)))


def test_threshold_keeps_the_largest_channels():
    fusion = ThresholdFusion(4, num_segments=1, keep_ratio=0.5)
    y = torch.tensor([1.0, -5.0, 0.5, 3.0]).view(1, 4, 1, 1)
    out, mask = fusion.decide_and_fuse(None, y)
    assert torch.equal(out.flatten(), torch.tensor([0.0, -5.0, 0.0, 3.0]))
    assert torch.equal(mask[0, 0, :, SKIP], torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_temporal_shift_bidirectional_and_causal():
    x = torch.arange(3.0).view(3, 1, 1, 1).repeat(1, 8, 1, 1)  # T=3, 8 channels, channel value = frame index
    out = TemporalShift(num_segments=3, shift_div=8)(x).flatten(1)
    assert out[:, 0].tolist() == [1, 2, 0]  # from the future, zero at the end
    assert out[:, 1].tolist() == [0, 0, 1]  # from the past, zero at the start
    assert out[:, 2:].equal(x.flatten(1)[:, 2:])
    causal = TemporalShift(num_segments=3, shift_div=8, causal=True)(x).flatten(1)
    assert causal[:, 0].tolist() == [0, 0, 1]
    assert causal[:, 1:].equal(x.flatten(1)[:, 1:])


def test_causal_shift_model_does_not_look_ahead():
    model = build_model(backbone="resnet18", method="tsm", num_classes=4, num_segments=3, causal_shift=True).eval()
    x = tiny_clip(n=1)
    y = x.clone()
    y[:, 2] = torch.randn_like(y[:, 2])  # change the last frame only
    fx, fy = model.frame_logits(x), model.frame_logits(y)
    assert torch.allclose(fx[:, :2], fy[:, :2]) and not torch.allclose(fx[:, 2], fy[:, 2])


def test_channel_gated_conv_bounds_and_loss():
    conv = ChannelGatedConv2d(8, 4, 3, padding=1, bias=False, partitions=4).eval()
    x = torch.randn(2, 8, 5, 5)
    full = nn.functional.conv2d(x, conv.weight, padding=1)
    partial = nn.functional.conv2d(x[:, :2], conv.weight[:, :2], padding=1)
    with torch.no_grad():
        conv.threshold.fill_(-1e6)
    out, off = conv(x, with_gate=True)
    assert torch.allclose(out, full, atol=1e-5) and off.eq(0).all() and torch.equal(conv(x), out)
    with torch.no_grad():
        conv.threshold.fill_(1e6)
    out, off = conv(x, with_gate=True)
    assert torch.allclose(out, partial, atol=1e-5) and off.eq(1).all()
    assert conv.threshold_loss().item() == pytest.approx(4 * (1e6 - 1.0) ** 2, rel=1e-6)


def test_plug_in_around_a_users_own_convs():
    first = nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.ReLU())
    second = nn.Conv2d(6, 3, 3, padding=1, bias=False)
    pair = FusedConvPair(first, second, AdaptiveFusion(4, 6, num_segments=2, hidden=5)).eval()
    x = torch.randn(2 * 2, 4, 8, 8)
    force_policy(pair, KEEP)
    assert torch.equal(pair(x), second(first(x)))
    skip = actions_to_mask(torch.full((2, 2, 6), int(SKIP)))
    out, policies = pair.forward_with_policies(x, actions={"fusion": skip})
    assert torch.equal(out, second(torch.zeros_like(first(x)))) and torch.equal(policies["fusion"], skip)
    (fusion, producers, consumers), = pair.fusion_cost_links()
    assert producers == [(first[0], 0)] and consumers == [second]
