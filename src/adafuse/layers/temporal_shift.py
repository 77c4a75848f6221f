"""Temporal shift (TSM, Lin et al. 2019) on (N·T, C, H, W) feature maps."""

from __future__ import annotations

import torch
from torch import nn


class TemporalShift(nn.Module):
    """Shift a fraction of channels along time, zero-padded at the clip ends.

    Bidirectional (offline TSM): channels ``[0, C/shift_div)`` take frame t+1 and
    ``[C/shift_div, 2C/shift_div)`` take frame t-1. Causal (online TSM, for streaming): channels
    ``[0, C/shift_div)`` take frame t-1 and nothing looks ahead.

    Args:
        num_segments: frames per video T; input is (N·T, C, H, W). The recognizer updates it per batch.
        shift_div: 1/shift_div of the channels moves in each direction (8 in the paper).
        causal: use the uni-directional, past-only variant.
    """

    def __init__(self, *, num_segments: int, shift_div: int = 8, causal: bool = False) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.shift_div = shift_div
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        t = self.num_segments
        x = x.view(nt // t, t, c, h, w)
        fold = c // self.shift_div
        out = torch.zeros_like(x)
        if self.causal:
            out[:, 1:, :fold] = x[:, :-1, :fold]
            out[:, :, fold:] = x[:, :, fold:]
        else:
            out[:, :-1, :fold] = x[:, 1:, :fold]
            out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
            out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return out.view(nt, c, h, w)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}, causal={self.causal}"
