"""Typed factories for the temporal slots of our backbones.

A backbone calls them once per block while it is built; returning ``None`` leaves the slot empty, so
the block has exactly torchvision's modules and state-dict keys (TSN). The method builder
(:func:`adafuse.models.build_model`) makes them from a method name.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from adafuse.layers.fusion import Fusion


class ShiftFactory(Protocol):
    """``(channels, stage) -> module or None``: the temporal shift applied to a block's input."""

    def __call__(self, channels: int, stage: int) -> nn.Module | None: ...


class FusionFactory(Protocol):
    """``(in_channels, channels, stage) -> Fusion or None``: the fusion slot after a block's first conv."""

    def __call__(self, in_channels: int, channels: int, stage: int) -> Fusion | None: ...


class ConvFactory(Protocol):
    """Builds a block's first conv with ``nn.Conv2d``'s arguments (e.g. a channel-gated conv for CGNet)."""

    def __call__(self, in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> nn.Conv2d: ...


def no_shift(channels: int, stage: int) -> None:
    """Empty shift slot."""
    return None


def no_fusion(in_channels: int, channels: int, stage: int) -> None:
    """Empty fusion slot."""
    return None
