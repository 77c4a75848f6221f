"""The three fusion actions, in the paper's order (p ∈ {0, 1, 2} = keep, reuse, skip).

The official code stores them in the reverse order (0 = skip, 1 = reuse, 2 = keep); we use the paper's
order everywhere, so ``mask[..., KEEP]`` is the keep indicator of a (N, T, C, 3) policy mask.
"""

from enum import IntEnum


class Action(IntEnum):
    """Per-channel, per-frame decision of a fusion policy."""

    KEEP = 0  # compute the channel at frame t
    REUSE = 1  # copy the channel from frame t-1 (the raw, unfused conv output of t-1)
    SKIP = 2  # drop the channel (zero)


KEEP, REUSE, SKIP = Action.KEEP, Action.REUSE, Action.SKIP
NUM_ACTIONS = 3
