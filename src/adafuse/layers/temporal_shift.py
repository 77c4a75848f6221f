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
        num_segments: frames per video T, fixed when the model is built; input is (N·T, C, H, W).
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
        if nt % t:
            raise ValueError(f"{nt} frames do not split into videos of num_segments={t}")
        # Concatenation of shifted slices, not slice assignment into a zero tensor: traced graphs (ONNX export)
        # keep the shift as data movement instead of freezing it into constants. A channels_last input is shifted
        # on its (N, T, H, W, C) view, so the output stays channels_last (no layout round trip per block).
        nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        x = x.permute(0, 2, 3, 1).reshape(-1, t, h, w, c) if nhwc else x.view(-1, t, c, h, w)
        dim = 4 if nhwc else 2
        fold = c // self.shift_div
        if self.causal:
            parts = [_later(x.narrow(dim, 0, fold)), x.narrow(dim, fold, c - fold)]
        else:
            parts = [_earlier(x.narrow(dim, 0, fold)), _later(x.narrow(dim, fold, fold)),
                     x.narrow(dim, 2 * fold, c - 2 * fold)]  # fmt: skip
        out = torch.cat(parts, dim=dim)
        return out.view(nt, h, w, c).permute(0, 3, 1, 2) if nhwc else out.view(nt, c, h, w)

    def step(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame of B streams through the causal shift, with the carried channels as explicit state.

        x (B, C, H, W) the frame's input; buffer (B, C/shift_div, H, W) the previous frame's first channels (zeros
        at a stream's start) -> (shifted x, the next frame's buffer). Equals :meth:`forward` frame by frame.
        """
        if not self.causal:
            raise ValueError("the bidirectional temporal shift looks one frame ahead: it has no per-frame step")
        fold = x.shape[1] // self.shift_div
        return torch.cat([buffer, x[:, fold:]], dim=1), x[:, :fold]

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}, causal={self.causal}"


def _later(x: torch.Tensor) -> torch.Tensor:
    """Frame t takes frame t−1's values (zeros at t = 0): x (N, T, C', H, W)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


def _earlier(x: torch.Tensor) -> torch.Tensor:
    """Frame t takes frame t+1's values (zeros at the last frame): x (N, T, C', H, W)."""
    return torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
