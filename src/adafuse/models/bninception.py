"""BN-Inception (Ioffe & Szegedy, 2015) with temporal slots, in the layout of the TSN/TSM checkpoint.

Not in torchvision. Names, shapes and layers follow the Caffe-converted ``bn_inception`` of tsn-pytorch,
TSM and Cadene's ``pretrainedmodels`` (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``,
``inception_3a_double_3x3_1``, ``inception_3a_pool_proj``, ...), so their ImageNet file loads strictly with
its classifier (``last_linear.*`` or ``fc.*``) dropped. Every conv has a bias (Caffe) and is followed by a
BatchNorm (eps 1e-5, affine) and ReLU. Input: BGR in 0–255 minus the per-channel mean (``"bgr255"``).

The state-dict names are flat, so an Inception module is not an ``nn.Module`` child: it is a row of
:data:`INCEPTION_MODULES` and a set of attributes ``inception_<name>_*``. It is the "block" of the
temporal slots, with the fusion on its concatenated output (the official placement)::

    x ─► [shift] ─┬─► 1×1 ──────────────────────┐
                  ├─► 1×1 reduce ─► 3×3 ────────┤
                  ├─► 1×1 reduce ─► 3×3 ─► 3×3 ─┼─► concat ─► [fusion(x_shifted, ·)] ─► next module
                  └─► 3×3 pool ─► [1×1 proj] ───┘

3c and 4e reduce the resolution (stride-2 3×3 convs) and pass the max-pooled input through without a
1×1 branch or projection; 5b pools with max instead of average. The network returns pooled features
(N·T, 1024).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from adafuse.layers.fusion import Policies
from adafuse.models._registry import BackboneSpec, register_backbone
from adafuse.models._slots import FusionFactory, ShiftFactory, no_fusion, no_shift


@dataclass(frozen=True)
class InceptionSpec:
    """Branch widths of one Inception module.

    Attributes:
        name: ``"3a"`` … ``"5b"``; the digit gives the slot stage (3 -> 0, 4 -> 1, 5 -> 2).
        in_channels: width of the module input.
        n1x1: 1×1 branch (0: none).
        n3x3_reduce, n3x3: 1×1 -> 3×3 branch.
        double_reduce, double: 1×1 -> 3×3 -> 3×3 branch.
        pool: ``"avg"`` or ``"max"`` 3×3 pooling of the pool branch.
        pool_proj: 1×1 projection after the pooling (0: the pooled input passes through).
        stride: 2 for the modules that halve the resolution (3c, 4e).
    """

    name: str
    in_channels: int
    n1x1: int
    n3x3_reduce: int
    n3x3: int
    double_reduce: int
    double: int
    pool: str
    pool_proj: int
    stride: int = 1

    @property
    def out_channels(self) -> int:
        """Width of the concatenated output."""
        return self.n1x1 + self.n3x3 + self.double + (self.pool_proj or self.in_channels)

    @property
    def stage(self) -> int:
        """Stage index passed to the slot factories."""
        return int(self.name[0]) - 3


INCEPTION_MODULES = (
    InceptionSpec("3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    InceptionSpec("3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    InceptionSpec("3c", 320, 0, 128, 160, 64, 96, "max", 0, stride=2),
    InceptionSpec("4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    InceptionSpec("4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    InceptionSpec("4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    InceptionSpec("4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    InceptionSpec("4e", 608, 0, 128, 192, 192, 256, "max", 0, stride=2),
    InceptionSpec("5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    InceptionSpec("5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


def _slot(module: nn.Module | None) -> nn.Module:
    return nn.Identity() if module is None else module


_STEM = ("conv1_7x7_s2", "pool1_3x3_s2", "conv2_3x3_reduce", "conv2_3x3", "pool2_3x3_s2")


class BNInception(nn.Module):
    """BN-Inception trunk returning globally pooled features: (N·T, 3, H, W) -> (N·T, 1024).

    Args:
        shift_layer, fusion_layer: slot factories, called per Inception module with its stage index
            (3x -> 0, 4x -> 1, 5x -> 2). The shift of module ``m`` is ``inception_<m>_shift`` and applies to
            the input of all its branches; the fusion ``inception_<m>_fusion`` fuses its concatenated output.
    """

    num_stages = 3

    def __init__(self, *, shift_layer: ShiftFactory = no_shift, fusion_layer: FusionFactory = no_fusion) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self._conv_bn("conv1_7x7_s2", 3, 64, 7, stride=2)
        # ceil_mode: Caffe rounds pooled sizes up; it also keeps the pass-through max pool of 3c/4e as large
        # as their stride-2 conv branches at any input size.
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._conv_bn("conv2_3x3_reduce", 64, 64, 1)
        self._conv_bn("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # Per module, its branches as the attribute names of their layers, in concatenation order.
        self.branches: dict[str, tuple[tuple[str, ...], ...]] = {}
        for spec in INCEPTION_MODULES:
            p, cin, s = f"inception_{spec.name}", spec.in_channels, spec.stride
            setattr(self, f"{p}_shift", _slot(shift_layer(cin, spec.stage)))
            branches = []
            if spec.n1x1:
                branches.append((self._conv_bn(f"{p}_1x1", cin, spec.n1x1, 1),))
            branches.append(
                (
                    self._conv_bn(f"{p}_3x3_reduce", cin, spec.n3x3_reduce, 1),
                    self._conv_bn(f"{p}_3x3", spec.n3x3_reduce, spec.n3x3, 3, stride=s),
                )
            )
            branches.append(
                (
                    self._conv_bn(f"{p}_double_3x3_reduce", cin, spec.double_reduce, 1),
                    self._conv_bn(f"{p}_double_3x3_1", spec.double_reduce, spec.double, 3),
                    self._conv_bn(f"{p}_double_3x3_2", spec.double, spec.double, 3, stride=s),
                )
            )
            if spec.pool == "avg":
                pool: nn.Module = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
            else:
                pool = nn.MaxPool2d(3, stride=s, padding=1 if s == 1 else 0, ceil_mode=True)
            setattr(self, f"{p}_pool", pool)
            if spec.pool_proj:
                branches.append((f"{p}_pool", self._conv_bn(f"{p}_pool_proj", cin, spec.pool_proj, 1)))
            else:
                branches.append((f"{p}_pool",))
            self.branches[spec.name] = tuple(branches)
            setattr(self, f"{p}_fusion", fusion_layer(cin, spec.out_channels, spec.stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = INCEPTION_MODULES[-1].out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _conv_bn(self, name: str, cin: int, cout: int, kernel_size: int, *, stride: int = 1) -> str:
        """Add conv ``name`` (with bias, "same" padding) and its BatchNorm ``name_bn``; returns ``name``."""
        setattr(self, name, nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout))
        return name

    def _layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        layer = getattr(self, name)
        if isinstance(layer, nn.Conv2d):
            return self.relu(getattr(self, f"{name}_bn")(layer(x)))
        return layer(x)

    def inception(
        self, name: str, x: torch.Tensor, *, actions: torch.Tensor | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inception module ``name``: (N·T, in_channels, H, W) -> ((N·T, out_channels, H/stride, W/stride), the
        fusion's mask (N, T, G, 3) or None); ``actions`` forces the mask."""
        xs = getattr(self, f"inception_{name}_shift")(x)
        outs = []
        for branch in self.branches[name]:
            y = xs
            for layer in branch:
                y = self._layer(layer, y)
            outs.append(y)
        y = torch.cat(outs, dim=1)
        fusion = getattr(self, f"inception_{name}_fusion")
        if fusion is None:
            return y, None
        return fusion.decide_and_fuse(xs, y, actions=actions, sample=sample, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_policies(x)[0]

    def forward_with_policies(
        self, x: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """Pooled features (N·T, 1024) and the policies of every fused module (``inception_3a_fusion`` ...)."""
        for name in _STEM:
            x = self._layer(name, x)
        policies: Policies = {}
        for spec in INCEPTION_MODULES:
            key = f"inception_{spec.name}_fusion"
            x, mask = self.inception(spec.name, x, actions=(actions or {}).get(key), sample=sample,
                                     generator=generator)  # fmt: skip
            if mask is not None:
                policies[key] = mask
        return torch.flatten(self.avgpool(x), 1), policies

    def _branch_convs(self, name: str) -> list[list[nn.Conv2d]]:
        """The convs of each branch of module ``name`` (empty for a pass-through pool branch)."""
        layers = [[getattr(self, layer) for layer in branch] for branch in self.branches[name]]
        return [[m for m in branch if isinstance(m, nn.Conv2d)] for branch in layers]

    def fusion_cost_links(self):
        """(fusion, [(producer conv, channel offset)], [consumer convs]) per fused module (reference §3.4).

        Producers are the last convs of the branches at their offsets in the concatenation; the max-pooled
        pass-through channels of 3c/4e have no conv and cost nothing to produce. Consumers are the first
        convs of every branch of the next module (none after 5b)."""
        for spec, after in zip(INCEPTION_MODULES, (*INCEPTION_MODULES[1:], None), strict=True):
            fusion = getattr(self, f"inception_{spec.name}_fusion")
            if fusion is None:
                continue
            producers, offset = [], 0
            for convs in self._branch_convs(spec.name):
                if convs:
                    producers.append((convs[-1], offset))
                offset += convs[-1].out_channels if convs else spec.in_channels
            consumers = [] if after is None else [convs[0] for convs in self._branch_convs(after.name) if convs]
            yield fusion, producers, consumers


def bninception(*, shift_layer: ShiftFactory = no_shift, fusion_layer: FusionFactory = no_fusion) -> BNInception:
    """BN-Inception trunk (1024 features, 224 px, BGR 0–255 input)."""
    return BNInception(shift_layer=shift_layer, fusion_layer=fusion_layer)


register_backbone(
    BackboneSpec(
        name="bninception",
        builder=bninception,
        normalization="bgr255",
        classifier_prefixes=("last_linear.", "fc."),
        num_stages=BNInception.num_stages,
    )
)
