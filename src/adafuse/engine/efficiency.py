"""The efficiency term of the loss and the health of the policies it shapes. Pure functions of tensors and numbers.

- :func:`efficiency_cost`: the cost of Eq. 6, on the normalized or the official absolute scale.
- :func:`efficiency_penalty`: the paper's plain cost (``target=None``), or a *budget*: a hinge that is zero while
  the cost is at most ``target`` of the dense cost and grows linearly above it. Above the budget its gradient is
  the plain form's (λ means the same); at or below it the optimizer is free to spend the budget on accuracy.
  Without it, λ·cost pushes towards skipping for as long as training runs, and on data where the
  cross-entropy's pull on the policy is weak it drives every block to skip nearly everything (collapse).
- :func:`budget_floor`, :func:`budget_warning`: the lowest cost a model's policies can reach (a budget under it
  is never met, so the hinge acts as the plain form all along).
- :func:`efficiency_ramp`: the factor on λ per optimizer step — 0 before the start, then linear up to 1 over
  ``ramp_steps`` steps (``ramp_steps=0``: the official step switch, ``--eff_loss_after``).
- :func:`majority_share`, :func:`block_health`, :func:`collapse_warning`: is a block of the policy dead
  (keep + reuse under a floor: the block's output is mostly zeros) or frozen (nearly every channel takes the same
  action in every frame of every video: the policy no longer looks at its input)?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from adafuse.flops import CostTable, adaptive_macs
from adafuse.layers.actions import NUM_ACTIONS, SKIP

COLLAPSE_FLOOR = 0.1  # a block whose keep + reuse share is under this is reported as collapsed
FROZEN_AGREEMENT = 0.99  # ... and one whose decisions agree with their channel's majority this often, as frozen


def efficiency_cost(macs: torch.Tensor, table: CostTable, *, kind: str) -> torch.Tensor:
    """The cost term of Eq. 6 from adaptive MACs per video (N,): the batch mean of ``macs / dense`` for
    ``kind="normalized"`` (portable across backbones), or of GMACs per frame for ``"absolute"`` (the
    official scale, where the paper's λ = 0.1 means what it meant there)."""
    return (macs / _unit(table, kind)).mean()


def _unit(table: CostTable, kind: str) -> float:
    """MACs per video that make one unit of cost: the dense cost (normalized) or a GMAC per frame (absolute)."""
    return table.dense_macs if kind == "normalized" else table.num_segments * 1e9


def efficiency_penalty(
    macs: torch.Tensor, table: CostTable, *, kind: str, target: float | None = None
) -> torch.Tensor:
    """The term λ multiplies: :func:`efficiency_cost` (``target=None``, the paper's Eq. 6), or the budget hinge
    ``max(0, cost − target · dense)`` in the same unit, where ``target`` is a fraction of the dense cost.

    ``macs`` (N,) adaptive MACs per video -> a scalar. The hinge acts on the batch mean, so single videos may
    spend more than the budget when others spend less (the policy stays adaptive)."""
    cost = efficiency_cost(macs, table, kind=kind)
    if target is None:
        return cost
    return torch.relu(cost - target * table.dense_macs / _unit(table, kind))  # a number: nothing copied to the device


def budget_floor(table: CostTable, *, mode: str = "real") -> float | None:
    """The lowest cost a model's fusion policies can reach, as a fraction of the dense cost: every fused channel
    skipped in every frame (the unfused layers stay dense). None for models with other policies (CGNet, AR-Net).

    A ``loss.cost_target`` under it can never be met: the hinge then never switches off, and every lower target
    trains the same run (AdaFuse-TSM+Last fuses the last stage only: its floor is far above half the dense cost)."""
    if not table.fusion or table.gated or table.choice:
        return None
    skip = torch.zeros(NUM_ACTIONS)
    skip[SKIP] = 1.0
    policies = {name: skip.expand(1, table.num_segments, up.numel(), NUM_ACTIONS)
                for name, (up, _) in table.fusion.items()}  # fmt: skip
    return float(adaptive_macs(policies, table, batch_size=1, mode=mode, device="cpu")[0]) / table.dense_macs


def budget_warning(table: CostTable, *, target: float | None, mode: str = "real") -> str | None:
    """One line when ``target`` (``loss.cost_target``) is under :func:`budget_floor`, else None."""
    floor = budget_floor(table, mode=mode) if target is not None else None
    if floor is None or target >= floor:
        return None
    return (f"loss.cost_target={target:g} is below the lowest cost this model can reach ({floor:.2f} of the dense "
            "cost, every fused channel skipped): the budget is never met, so the penalty acts as λ·cost all along "
            "and any lower target trains the same run")


def efficiency_ramp(step: int, *, start: int = 0, ramp_steps: int = 0) -> float:
    """Factor on λ at optimizer step ``step``: 0 before ``start``, then ``(step − start) / ramp_steps`` up to 1
    (1 from ``start`` on when ``ramp_steps`` is 0)."""
    if step < start:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - start) / ramp_steps)


def majority_share(mask: torch.Tensor) -> torch.Tensor:
    """For each channel, the share of its N·T decisions that take its most common action: mask (N, T, C, 3)
    one-hot -> (C,) in [1/3, 1]. 1 for a channel whose action does not depend on the frame or the video."""
    counts = mask.detach().float().sum(dim=(0, 1))  # (C, 3)
    return counts.max(dim=1).values / counts.sum(dim=1).clamp(min=1)


def block_health(
    block: dict[str, Any], *, floor: float = COLLAPSE_FLOOR, frozen: float = FROZEN_AGREEMENT
) -> str:
    """``"collapsed"`` when the block's keep + reuse share is under ``floor``, ``"frozen"`` when its
    ``agreement`` (mean :func:`majority_share`) is at least ``frozen``, else ``"ok"``. ``block`` holds the shares
    ``keep``, ``reuse`` (and ``agreement``, optional)."""
    if block["keep"] + block["reuse"] < floor:
        return "collapsed"
    if block.get("agreement", 0.0) >= frozen:
        return "frozen"
    return "ok"


def collapse_warning(blocks: Sequence[dict[str, Any]], *, where: str = "", floor: float = COLLAPSE_FLOOR) -> str | None:
    """One line naming the collapsed and frozen blocks, or None when every block is healthy.

    ``blocks``: dicts with ``name``, ``keep``, ``reuse``, ``skip`` (shares) and optionally ``agreement``."""
    problems = []
    for b in blocks:
        health = block_health(b, floor=floor)
        if health == "collapsed":
            problems.append(f"{b['name']} collapsed (keep+reuse {100 * (b['keep'] + b['reuse']):.1f}% < "
                            f"{100 * floor:g}%, skip {100 * b['skip']:.1f}%)")
        elif health == "frozen":
            problems.append(f"{b['name']} frozen ({100 * b['agreement']:.1f}% of decisions are the channel's "
                            "usual action)")
    if not problems:
        return None
    prefix = f"{where}: " if where else ""
    collapsed = "collapsed (" in "".join(problems)
    advice = " (raise loss.cost_target or lower loss.efficiency_weight)" if collapsed else ""
    # a frozen block still computes: its channel choice is static, not its output dead
    headline = "policy collapse" if collapsed else "frozen policy"
    return f"{prefix}{headline} in {len(problems)} of {len(blocks)} blocks: " + "; ".join(problems) + advice


def block_shares(mask: torch.Tensor) -> torch.Tensor:
    """Shares of KEEP, REUSE and SKIP and the mean majority share of one block: mask (N, T, C, 3) -> (4,)."""
    shares = mask.detach().float().mean(dim=(0, 1, 2))
    return torch.cat([shares, majority_share(mask).mean().reshape(1)])

