"""The three fusion actions, in the paper's order (p ∈ {0, 1, 2} = keep, reuse, skip), and the one representation
of a decision used everywhere (layers, cost, executor, benchmarks).

A **policy mask** is a one-hot float tensor ``(N, T, G, 3)`` over (KEEP, REUSE, SKIP): one decision per video,
frame and channel group (G = C / group_size; G = C with per-channel decisions). ``mask[..., KEEP]`` is the keep
indicator. Models return their masks with :meth:`adafuse.models.Recognizer.forward_with_policies`, take forced
ones through its ``actions`` argument, and :func:`adafuse.flops.adaptive_macs` costs them.

The official code stores the actions in the reverse order (0 = skip, 1 = reuse, 2 = keep).
"""

from enum import IntEnum

import torch


class Action(IntEnum):
    """Per-channel-group, per-frame decision of a fusion policy."""

    KEEP = 0  # compute the channel at frame t
    REUSE = 1  # copy the channel from frame t-1 (the raw, unfused conv output of t-1)
    SKIP = 2  # drop the channel (zero)


KEEP, REUSE, SKIP = Action.KEEP, Action.REUSE, Action.SKIP
NUM_ACTIONS = 3


def actions_to_mask(actions: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Action ids ``(..., G)`` (values of :class:`Action`) -> one-hot policy mask ``(..., G, 3)``."""
    if actions.dtype.is_floating_point:
        raise ValueError("actions must be integer Action ids; one-hot masks are already policy masks")
    if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= NUM_ACTIONS):
        raise ValueError(f"action ids must be in 0..{NUM_ACTIONS - 1} (KEEP, REUSE, SKIP)")
    return torch.zeros(*actions.shape, NUM_ACTIONS, dtype=dtype, device=actions.device).scatter_(
        -1, actions.long().unsqueeze(-1), 1.0
    )


def mask_to_actions(mask: torch.Tensor) -> torch.Tensor:
    """One-hot policy mask ``(..., G, 3)`` -> action ids ``(..., G)`` (int64)."""
    return mask.argmax(dim=-1)
