"""Keep / reuse / skip fusion: the shared mechanism of every fusion policy.

::

    x (block input) ──► policy ──► mask (N, T, C, 3) one-hot over KEEP/REUSE/SKIP
         │
         └─► first conv ─► y ──► out_t = keep_t·y_t + reuse_t·y_{t-1}   (skip -> 0, y_{-1} = 0)
                                   │
                                   └─► second conv

The history ``y_{t-1}`` is the raw (unfused) output of the previous frame, so reuse does not chain.
A policy's decision per frame covers groups of ``groups`` contiguous channels.
"""

from __future__ import annotations

import torch
from torch import nn

from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE


def fuse(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a policy mask: y (N·T, C, H, W), mask (N, T, C, 3) -> (N·T, C, H, W)."""
    n, t, c, _ = mask.shape
    y5 = y.view(n, t, c, *y.shape[2:])
    history = torch.cat([torch.zeros_like(y5[:, :1]), y5[:, :-1]], dim=1)
    keep = mask[..., KEEP, None, None]
    reuse = mask[..., REUSE, None, None]
    return (keep * y5 + reuse * history).view_as(y)


class Fusion(nn.Module):
    """Base of the fusion slot: ``forward(x, y) -> fused y``; subclasses implement :meth:`decide`.

    The mask of the last forward pass is kept in ``last_mask`` (N, T, C, 3) for cost accounting and
    statistics: blocks return a tensor, the recognizer collects policies from the modules.

    Args:
        channels: C, channels of y (the first conv's output).
        num_segments: frames per video T (updated by the recognizer for each batch).
        groups: channels per decision; C must be divisible by it.
    """

    def __init__(self, channels: int, *, num_segments: int, groups: int = 1) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.channels = channels
        self.num_segments = num_segments
        self.groups = groups
        self.decisions = channels // groups
        self.last_mask: torch.Tensor | None = None

    def decide(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One-hot actions (N·T, G, 3) from block input x (N·T, C_in, H, W) and first-conv output y."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nt, c = y.shape[:2]
        mask = self.decide(x, y)
        if self.groups > 1:
            mask = mask.repeat_interleave(self.groups, dim=1)
        mask = mask.view(nt // self.num_segments, self.num_segments, c, NUM_ACTIONS)
        self.last_mask = mask
        return fuse(y, mask)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


class FusedConvPair(nn.Module):
    """Plug a fusion policy between any two modules of your own: ``second(fusion(x, first(x)))``.

    ``first`` maps x (N·T, C_in, H, W) to y (N·T, C, H', W') — e.g. conv-BN-ReLU — and ``second`` consumes
    it. For cost accounting, the last conv inside ``first`` produces the fused channels and the first
    conv inside ``second`` is the one that skipped channels save.
    """

    def __init__(self, first: nn.Module, second: nn.Module, fusion: Fusion) -> None:
        super().__init__()
        if not _convs(first) or not _convs(second):
            raise ValueError("FusedConvPair needs a Conv2d inside both `first` and `second`")
        self.first, self.fusion, self.second = first, fusion, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.fusion(x, self.first(x)))

    def fusion_cost_links(self):
        """(fusion, [(producer conv, channel offset)], [consumer convs]) for the cost counter."""
        yield self.fusion, [(_convs(self.first)[-1], 0)], [_convs(self.second)[0]]
