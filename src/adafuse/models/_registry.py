"""A tiny registry of backbones: name -> builder and the facts needed around it."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from adafuse.errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    Attributes:
        name: registry name, e.g. ``"resnet50"``.
        builder: ``builder(**slots) -> nn.Module`` returning (N·T, 3, H, W) -> (N·T, num_features).
        input_size: native resolution (EfficientNet-b1…b3 use 240/260/300).
        normalization: ``"imagenet"`` (RGB, 0–1, ImageNet mean/std) or ``"bgr255"`` (BN-Inception).
        torchvision_weights: name of the torchvision weights enum, or None.
        classifier_prefixes: ImageNet classifier keys a pretrained file carries and we drop.
        supports_channel_gating: whether ``conv_layer`` can be swapped (CGNet).
        supports_shifted_shortcut: whether the builder takes ``shifted_shortcut`` (ResNet projection shortcuts).
        num_stages: stage indices passed to the slot factories are 0 .. num_stages − 1.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: int = 224
    normalization: str = "imagenet"
    torchvision_weights: str | None = None
    classifier_prefixes: tuple[str, ...] = ()
    supports_channel_gating: bool = False
    supports_shifted_shortcut: bool = False
    num_stages: int = 4


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; names are unique."""
    if spec.name in _BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _BACKBONES[spec.name] = spec
    return spec


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a glob pattern, sorted."""
    return sorted(n for n in _BACKBONES if fnmatch.fnmatch(n, pattern))


def get_backbone(name: str) -> BackboneSpec:
    """The spec of a backbone, or a one-line error listing the known names."""
    try:
        return _BACKBONES[name]
    except KeyError:
        raise UserError(f"unknown backbone {name!r}; choose from {', '.join(list_backbones())}") from None
