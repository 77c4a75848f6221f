"""Eq. 5 policy-aware cost against hand computations."""

import pytest
import torch

from adafuse.flops import adaptive_macs, fusion_saving, profile, upstream_saving
from adafuse.layers import KEEP, REUSE, SKIP
from adafuse.layers.actions import actions_to_mask
from adafuse.models import build_model
from conftest import force_policy, tiny_clip

# One video, T = 3, C = 2.   t=0: (keep, skip)   t=1: (reuse, keep)   t=2: (skip, reuse)
MASK = actions_to_mask(torch.tensor([[[KEEP, SKIP], [REUSE, KEEP], [SKIP, REUSE]]]))
UP = torch.tensor([10.0, 20.0])  # MACs per frame to compute channel 0 / 1
DOWN = torch.tensor([1.0, 2.0])  # MACs per frame the consumer spends on input channel 0 / 1


def test_upstream_saving_by_hand():
    # t=0: c0 kept -> paid; c1 not kept and not reused at t=1 -> saved
    # t=1: c0 not kept, not reused at t=2 -> saved; c1 kept -> paid (and it is reused at t=2)
    # t=2 (last): saved unless kept -> both saved
    assert upstream_saving(MASK).tolist() == [[[0, 1], [1, 0], [1, 1]]]
    # official code: the last frame reads frame T-2's keep mask (c0 not kept -> saved, c1 kept -> paid)
    assert upstream_saving(MASK, last_frame="official").tolist() == [[[0, 1], [1, 0], [1, 0]]]


def test_channel_reused_next_frame_is_paid_even_when_not_kept():
    mask = actions_to_mask(torch.tensor([[[SKIP], [REUSE]]]))
    assert upstream_saving(mask).tolist() == [[[0], [1]]]


def test_eq5_by_hand():
    # up: 20 (t0 c1) + 10 (t1 c0) + 10 + 20 (t2) = 60; down: skipped t0 c1 (2) + t2 c0 (1) = 3
    assert fusion_saving(MASK, UP, DOWN).item() == 63
    assert fusion_saving(MASK, UP, DOWN, mode="upb").item() == 3
    assert fusion_saving(MASK, UP, DOWN, last_frame="official").item() == 43


def test_all_keep_saves_nothing_and_skip_only_bound():
    keep = torch.zeros(2, 4, 3, 3)
    keep[..., KEEP] = 1
    assert fusion_saving(keep, torch.ones(3), torch.ones(3)).tolist() == [0, 0]
    skip = torch.zeros(2, 4, 3, 3)
    skip[..., SKIP] = 1
    # everything skipped: the whole producer and consumer cost of the block, per frame, per channel
    assert fusion_saving(skip, UP.repeat(2)[:3], DOWN.repeat(2)[:3]).tolist() == [4 * (40 + 4)] * 2


def test_model_cost_all_keep_equals_dense_and_skip_matches_block_table():
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8)
    model.eval()
    table = profile(model, input_size=32)
    x = tiny_clip()
    force_policy(model, KEEP)
    policies = model.forward_with_policies(x)[1]
    assert adaptive_macs(policies, table, batch_size=2).tolist() == [table.dense_macs] * 2
    force_policy(model, SKIP)
    policies = model.forward_with_policies(x)[1]
    conv12 = sum(v for k, v in table.per_module.items() if k.endswith(("conv1", "conv2")) and "layer" in k)
    assert adaptive_macs(policies, table, batch_size=2).tolist() == pytest.approx([table.dense_macs - conv12] * 2)
    # upper bound: only the consumer (conv2) savings
    conv2 = sum(v for k, v in table.per_module.items() if k.endswith("conv2"))
    upb = adaptive_macs(policies, table, batch_size=2, mode="upb")
    assert upb.tolist() == pytest.approx([table.dense_macs - conv2] * 2)


def test_tsn_cost_is_dense_and_cgnet_saves():
    tsn = build_model(backbone="resnet18", method="tsn", num_classes=5, num_segments=3).eval()
    table = profile(tsn, input_size=32)
    assert adaptive_macs(tsn.forward_with_policies(tiny_clip())[1], table, batch_size=2).tolist() == (
        [table.dense_macs] * 2
    )
    cg = build_model(backbone="resnet18", method="cgnet", num_classes=5, num_segments=3).eval()
    table = profile(cg, input_size=32)
    for m in cg.modules():
        if hasattr(m, "threshold_loss"):
            torch.nn.init.constant_(m.threshold, 1e6)  # everything gated off
    policies = cg.forward_with_policies(tiny_clip())[1]
    conv1 = sum(v for k, v in table.per_module.items() if k.endswith("conv1") and "layer" in k)
    assert adaptive_macs(policies, table, batch_size=2).tolist() == pytest.approx([table.dense_macs - 0.75 * conv1] * 2)
