"""The efficiency term: the budget hinge and the paper's plain cost, the ramp, and the collapse detector."""

import logging

import pytest
import torch

from adafuse.engine.efficiency import (
    block_health,
    budget_floor,
    budget_warning,
    collapse_warning,
    efficiency_cost,
    efficiency_penalty,
    efficiency_ramp,
    majority_share,
)
from adafuse.engine.metrics import RecognitionMetrics
from adafuse.flops import CostTable
from adafuse.layers.actions import KEEP, REUSE, SKIP

# Dense cost 8 GMACs per video of T = 4 frames: 2 GMACs per frame.
TABLE = CostTable(num_segments=4, dense_macs=8e9)


def test_budget_penalty_is_zero_below_the_target_and_grows_above_it():
    for fraction, expected in [(0.3, 0.0), (0.6, 0.0), (0.7, 0.1), (0.9, 0.3), (1.0, 0.4)]:
        macs = torch.tensor([fraction * 8e9])
        got = efficiency_penalty(macs, TABLE, kind="normalized", target=0.6)
        assert got.item() == pytest.approx(expected, abs=1e-6), fraction
    # On the batch mean: one video over the budget, one under, mean 0.65 -> 0.05.
    assert efficiency_penalty(torch.tensor([0.9e9 * 8, 0.4e9 * 8]), TABLE, kind="normalized", target=0.6).item() == (
        pytest.approx(0.05, abs=1e-6))
    # Absolute scale (GMACs per frame): budget 0.6 of 2 GMACs = 1.2; a video at 0.9 of dense costs 1.8 -> 0.6.
    assert efficiency_penalty(torch.tensor([0.9 * 8e9]), TABLE, kind="absolute", target=0.6).item() == pytest.approx(
        0.6, abs=1e-6)
    assert efficiency_penalty(torch.tensor([0.5 * 8e9]), TABLE, kind="absolute", target=0.6).item() == 0.0


def test_budget_gradient_is_the_plain_one_above_and_zero_below():
    for fraction, grad in [(0.8, 1 / 8e9), (0.5, 0.0)]:
        macs = torch.tensor([fraction * 8e9], requires_grad=True)
        efficiency_penalty(macs, TABLE, kind="normalized", target=0.6).backward()
        assert macs.grad.item() == pytest.approx(grad)


def test_plain_form_is_the_papers_cost():
    macs = torch.tensor([4e9, 6e9])
    assert efficiency_penalty(macs, TABLE, kind="normalized").item() == pytest.approx(0.625)
    assert efficiency_penalty(macs, TABLE, kind="absolute").item() == pytest.approx(1.25)  # GMACs per frame
    assert efficiency_cost(macs, TABLE, kind="normalized").item() == pytest.approx(0.625)


def test_ramp_values():
    assert [efficiency_ramp(s, start=10, ramp_steps=4) for s in (0, 9, 10, 11, 12, 13, 14, 100)] == [
        0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [efficiency_ramp(s, start=3, ramp_steps=0) for s in (2, 3, 4)] == [0.0, 1.0, 1.0]  # the step switch
    assert efficiency_ramp(0, start=0, ramp_steps=0) == 1.0  # the paper's presets: on from the first step


def _mask(actions: torch.Tensor) -> torch.Tensor:
    """One-hot mask (N, T, C, 3) from action indices (N, T, C)."""
    return torch.nn.functional.one_hot(actions, 3).float()


def test_majority_share_by_hand():
    # Channel 0: keep, keep, keep, skip -> 3/4. Channel 1: keep, reuse, skip, skip -> 2/4.
    actions = torch.tensor([[[KEEP, KEEP], [KEEP, REUSE]], [[KEEP, SKIP], [SKIP, SKIP]]])  # (N=2, T=2, C=2)
    assert majority_share(_mask(actions)).tolist() == [0.75, 0.5]


def _metrics(masks: dict[str, torch.Tensor]) -> dict:
    metrics = RecognitionMetrics(list(masks))
    n = next(iter(masks.values())).shape[0]
    metrics.update(torch.zeros(n, 3), torch.zeros(n, dtype=torch.long), torch.ones(n), masks)
    return metrics.compute()


def test_collapse_warning_fires_on_a_collapsed_policy_and_not_on_a_healthy_one():
    g = torch.Generator().manual_seed(0)
    healthy = _mask(torch.randint(0, 3, (4, 8, 16), generator=g))  # ~1/3 each, varying with frame and video
    collapsed = torch.full((4, 8, 16), SKIP)
    collapsed[:, :, 0] = KEEP  # 1 of 16 channels alive: keep + reuse 6%
    frozen = torch.tensor([KEEP, REUSE, SKIP, KEEP] * 4).expand(4, 8, 16)  # alive, but the same in every frame
    result = _metrics({"layer1.0.fusion": healthy, "layer2.0.fusion": _mask(collapsed),
                       "layer3.0.fusion": _mask(frozen)})
    blocks = result["blocks"]
    assert [b["status"] for b in blocks] == ["ok", "collapsed", "frozen"]
    assert result["policy"]["collapsed_blocks"] == ["layer2.0.fusion"]
    assert result["policy"]["frozen_blocks"] == ["layer3.0.fusion"]
    assert blocks[1]["keep"] == pytest.approx(1 / 16) and blocks[2]["agreement"] == 1.0
    assert blocks[0]["agreement"] < 0.6
    message = collapse_warning(blocks, where="epoch 5")
    assert "\n" not in message and message.startswith("epoch 5: policy collapse in 2 of 3 blocks")
    assert "layer2.0.fusion collapsed (keep+reuse 6.2% < 10%, skip 93.8%)" in message
    assert "layer3.0.fusion frozen" in message and "layer1.0.fusion" not in message
    assert message.endswith("(raise loss.cost_target or lower loss.efficiency_weight)")
    frozen_only = collapse_warning(blocks[2:])  # not a matter of the budget, and not called a collapse
    assert frozen_only.startswith("frozen policy in 1 of 1 blocks: layer3.0.fusion frozen (100.0% of decisions")
    assert "loss.cost_target" not in frozen_only
    assert collapse_warning(blocks[:1]) is None
    assert block_health({"keep": 0.05, "reuse": 0.06, "skip": 0.89}) == "ok"  # 11% alive: above the floor


def test_training_warns_when_the_policy_collapses(tmp_path, caplog, monkeypatch):
    from adafuse.data.synthetic import generate_synthetic
    from adafuse.engine import train
    from adafuse.engine.config import load_config

    generate_synthetic(kind="camera", out=tmp_path / "data", num_videos=16, size=32, frames=4)
    common = ["model.backbone=resnet10_mini", "model.num_segments=2", "model.policy_hidden=8", "data.input_size=32",
              "data.batch_size=4", "data.workers=0", "optim.epochs=1", "optim.lr=1.0e-12", "trainer.progress=false",
              "trainer.tensorboard=false", f"data.dataset={tmp_path / 'data' / 'dataset.yaml'}"]
    build = train.build_model

    def run(name: str, action: int | None) -> list[str]:
        """Train one epoch (lr ~0: the policy stays as built), forced to one action; the collapse warnings."""

        def forced(**kwargs):
            model = build(**kwargs)
            for fusion in model.fusions().values():
                if action is None:  # large random weights: the decisions depend on the input, all actions taken
                    torch.nn.init.normal_(fusion.policy.fc1.weight, 0.0, 1.0)
                else:
                    bias = fusion.policy.fc1.bias.data.view(-1, 3)
                    bias.zero_()
                    bias[:, action] = 20.0
            return model

        monkeypatch.setattr(train, "build_model", forced)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="adafuse"):
            train.fit(load_config(None, [*common, f"trainer.out={tmp_path / name}"]))
        return [r.getMessage() for r in caplog.records if "policy collapse" in r.getMessage()
                or "frozen policy" in r.getMessage()]

    skip = run("skip", SKIP)
    assert len(skip) == 1 and skip[0].startswith("epoch 0: policy collapse in 4 of 4 blocks") and "collapsed" in skip[0]
    header = (tmp_path / "skip" / "metrics.csv").read_text().splitlines()[0]
    assert all(k in header for k in ("val/collapsed_blocks", "train/alive_min", "val/backbone.layer1.0.fusion/skip"))
    assert run("healthy", None) == []


@pytest.mark.parametrize(("method", "kwargs"), [("adafuse_tsn", {}), ("adafuse_tsm_last", {"causal_shift": True})])
def test_budget_floor_is_what_the_executor_runs_with_every_channel_skipped(method, kwargs):
    # The floor from the cost table equals the MACs the sparse executor really runs when every fused group is
    # SKIP, over the dense cost; a target under it gets one line naming both numbers, one above it none.
    from adafuse.flops import profile
    from adafuse.inference import SparseRecognizer
    from adafuse.models import build_model

    torch.manual_seed(0)
    model = build_model(backbone="resnet10_mini", method=method, num_classes=5, num_segments=3, policy_hidden=8,
                        **kwargs).eval()  # fmt: skip
    table = profile(model, input_size=32)
    executor = SparseRecognizer.from_model(model, dispatch="kernel")
    skip = {b.fusion_name: _mask(torch.full((1, 3, b.groups), SKIP)) for b in executor.blocks if b.policy is not None}
    executor.forward_with_policies(torch.randn(1, 3, 3, 32, 32), actions=skip)
    floor = budget_floor(table)
    assert floor == pytest.approx(executor.stats.macs / table.dense_macs, rel=1e-9)
    assert budget_warning(table, target=min(floor + 0.01, 1.0)) is None and budget_warning(table, target=None) is None
    message = budget_warning(table, target=0.3)
    assert message.startswith(f"loss.cost_target=0.3 is below the lowest cost this model can reach ({floor:.2f} ")
    if method == "adafuse_tsm_last":  # fusion in the last stage only: no budget of the study's range can be met
        assert floor > 0.75 and budget_warning(table, target=0.75) is not None
    else:
        assert floor < 0.5


def test_budget_floor_is_none_without_fusion_policies():
    from adafuse.flops import profile
    from adafuse.models import build_model

    model = build_model(backbone="resnet10_mini", method="tsn", num_classes=5, num_segments=3)
    assert budget_floor(profile(model, input_size=32)) is None
