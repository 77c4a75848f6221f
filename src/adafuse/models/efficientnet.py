"""EfficientNet-b0…b3 (Tan & Le, 2019) with temporal slots; torchvision's module names and keys.

Every inverted-residual (MBConv) block has two optional slots (see :mod:`adafuse.models._slots`)::

    x ─► [shift] ─► expand 1×1 ─► BN ─► SiLU ─► [fusion(x_shifted, ·)] ─► depthwise k×k ─► BN ─► SiLU ─► SE
                  ─► project 1×1 ─► BN ─► stochastic depth ─► (+ x)

The fusion sits between the block's first and second conv, as the paper places it. Blocks with expand
ratio 1 (the first stage) have no expansion conv: there the first conv is the depthwise one and the
fusion sits after it and its squeeze-excitation, before the projection. The shift sits on the residual
branch only, so the identity is unshifted. There is no ``conv_layer`` slot (CGNet is ResNet-only).
Stochastic depth is active in training only, as in torchvision.

The network returns pooled features (N·T, num_features); the ImageNet ``classifier.*`` lives in the
recognizer's head instead, so torchvision's ``efficientnet_bX`` weights load with that prefix dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from functools import partial

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation, StochasticDepth

from adafuse.layers.fusion import Fusion, Policies, qualify, scope
from adafuse.models._registry import BackboneSpec, register_backbone
from adafuse.models._slots import FusionFactory, ShiftFactory, no_fusion, no_shift

# Table 1 of the EfficientNet paper (b0): expand ratio, kernel, stride of the first block, in and out
# channels, blocks per stage. b1…b3 scale channels by ``width_mult`` and blocks by ``depth_mult``.
_B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% down (torchvision's rule,
    which fixes the widths the ImageNet weights were trained with)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _slot(module: nn.Module | None) -> nn.Module:
    return nn.Identity() if module is None else module


class MBConv(nn.Module):
    """Inverted-residual block: [1×1 expand] → k×k depthwise → squeeze-excitation → 1×1 project (+ x).

    Input (N·T, in_channels, H, W) -> (N·T, out_channels, H/stride, W/stride). The fused tensor is the
    first conv's output, (N·T, expanded_channels, H', W').

    Args:
        in_channels, expanded_channels, out_channels: widths; no expansion conv when the first two are equal.
        kernel_size, stride: of the depthwise conv.
        stochastic_depth_prob: probability of dropping the residual branch of a sample in training.
        shift, fusion: the temporal slots (None: empty).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        stochastic_depth_prob: float,
        shift: nn.Module | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        super().__init__()
        self.shift = _slot(shift)
        expand = expanded_channels != in_channels
        layers: list[nn.Module] = []
        if expand:
            layers.append(Conv2dNormActivation(in_channels, expanded_channels, kernel_size=1, activation_layer=nn.SiLU))
        layers += [
            Conv2dNormActivation(
                expanded_channels,
                expanded_channels,
                kernel_size=kernel_size,
                stride=stride,
                groups=expanded_channels,
                activation_layer=nn.SiLU,
            ),
            SqueezeExcitation(expanded_channels, max(1, in_channels // 4), activation=partial(nn.SiLU, inplace=True)),
            Conv2dNormActivation(expanded_channels, out_channels, kernel_size=1, activation_layer=None),
        ]
        self.block = nn.Sequential(*layers)
        self.fusion = fusion
        # Index in ``block`` of the layer holding the second conv, before which the fusion runs: the
        # depthwise conv after an expansion, else the projection (after depthwise + SE).
        self.fusion_index = 1 if expand else 2
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    @property
    def first_conv(self) -> nn.Conv2d:
        """The conv producing the fused channels (expansion, or depthwise when there is none)."""
        return self.block[0][0]

    @property
    def second_conv(self) -> nn.Conv2d:
        """The conv reading the fused channels (depthwise, or projection when there is no expansion)."""
        return self.block[self.fusion_index][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_policies(x)[0]

    def forward_with_policies(
        self, x: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """(output, {"fusion": mask (N, T, G, 3)} when the block has a fusion)."""
        xs = self.shift(x)
        y = xs
        policies: Policies = {}
        for i, layer in enumerate(self.block):
            if i == self.fusion_index and self.fusion is not None:
                forced = (actions or {}).get("fusion")
                y, policies["fusion"] = self.fusion.decide_and_fuse(xs, y, actions=forced, sample=sample,
                                                                    generator=generator)  # fmt: skip
            y = layer(y)
        if self.use_res_connect:
            y = self.stochastic_depth(y) + x
        return y, policies


class EfficientNet(nn.Module):
    """EfficientNet trunk returning globally pooled features: (N·T, 3, H, W) -> (N·T, num_features).

    ``features`` is torchvision's: ``features[0]`` the stem, ``features[1..7]`` the MBConv stages (slot
    stages 0..6), ``features[8]`` the 1×1 head conv to ``num_features`` = 4 × the last stage's width.

    Args:
        width_mult, depth_mult: compound-scaling multipliers of channels and blocks per stage.
        shift_layer, fusion_layer: slot factories, called per block with its stage index 0..6.
        stochastic_depth_prob: drop probability of the last block; it grows linearly from 0 over blocks.
    """

    num_stages = 7

    def __init__(
        self,
        *,
        width_mult: float,
        depth_mult: float,
        shift_layer: ShiftFactory = no_shift,
        fusion_layer: FusionFactory = no_fusion,
        stochastic_depth_prob: float = 0.2,
    ) -> None:
        super().__init__()
        stages = []
        for expand, kernel, stride, cin, cout, count in _B0_STAGES:
            cin, cout = _make_divisible(cin * width_mult), _make_divisible(cout * width_mult)
            stages.append((expand, kernel, stride, cin, cout, math.ceil(count * depth_mult)))
        total_blocks = sum(s[-1] for s in stages)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, stages[0][3], kernel_size=3, stride=2, activation_layer=nn.SiLU)
        ]
        block_id = 0
        for stage, (expand, kernel, stride, cin, cout, count) in enumerate(stages):
            blocks = []
            for i in range(count):
                inplanes = cin if i == 0 else cout
                expanded = _make_divisible(inplanes * expand)
                blocks.append(
                    MBConv(
                        inplanes,
                        expanded,
                        cout,
                        kernel_size=kernel,
                        stride=stride if i == 0 else 1,
                        stochastic_depth_prob=stochastic_depth_prob * block_id / total_blocks,
                        shift=shift_layer(inplanes, stage),
                        fusion=fusion_layer(inplanes, expanded, stage),
                    )
                )
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        last = stages[-1][4]
        layers.append(Conv2dNormActivation(last, 4 * last, kernel_size=1, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 4 * last
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_policies(x)[0]

    def forward_with_policies(
        self, x: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """Pooled features (N·T, num_features) and the policies of every block (``features.1.0.fusion`` ...)."""
        x = self.features[0](x)
        policies: Policies = {}
        for name, block in self.named_blocks():
            x, decided = block.forward_with_policies(x, actions=scope(actions, name), sample=sample,
                                                     generator=generator)  # fmt: skip
            policies.update(qualify(name, decided))
        return torch.flatten(self.avgpool(self.features[-1](x)), 1), policies

    def named_blocks(self) -> Iterator[tuple[str, MBConv]]:
        """All MBConv blocks with their names (``features.1.0`` ...), in order."""
        for stage in range(1, len(self.features) - 1):
            for i, block in enumerate(self.features[stage]):
                yield f"features.{stage}.{i}", block

    def blocks(self) -> Iterator[MBConv]:
        """All MBConv blocks, in order."""
        for _, block in self.named_blocks():
            yield block

    def fusion_cost_links(self):
        """(fusion, [(producer conv, channel offset)], [consumer convs]) per fused block, for the cost counter."""
        for b in self.blocks():
            if b.fusion is not None:
                yield b.fusion, [(b.first_conv, 0)], [b.second_conv]


def efficientnet_b0(*, shift_layer: ShiftFactory = no_shift, fusion_layer: FusionFactory = no_fusion) -> EfficientNet:
    """EfficientNet-b0 trunk (1280 features, native 224 px)."""
    return EfficientNet(width_mult=1.0, depth_mult=1.0, shift_layer=shift_layer, fusion_layer=fusion_layer)


def efficientnet_b1(*, shift_layer: ShiftFactory = no_shift, fusion_layer: FusionFactory = no_fusion) -> EfficientNet:
    """EfficientNet-b1 trunk (1280 features, native 240 px)."""
    return EfficientNet(width_mult=1.0, depth_mult=1.1, shift_layer=shift_layer, fusion_layer=fusion_layer)


def efficientnet_b2(*, shift_layer: ShiftFactory = no_shift, fusion_layer: FusionFactory = no_fusion) -> EfficientNet:
    """EfficientNet-b2 trunk (1408 features, native 260 px)."""
    return EfficientNet(width_mult=1.1, depth_mult=1.2, shift_layer=shift_layer, fusion_layer=fusion_layer)


def efficientnet_b3(*, shift_layer: ShiftFactory = no_shift, fusion_layer: FusionFactory = no_fusion) -> EfficientNet:
    """EfficientNet-b3 trunk (1536 features, native 300 px)."""
    return EfficientNet(width_mult=1.2, depth_mult=1.4, shift_layer=shift_layer, fusion_layer=fusion_layer)


for _builder, _size in ((efficientnet_b0, 224), (efficientnet_b1, 240), (efficientnet_b2, 260), (efficientnet_b3, 300)):
    register_backbone(
        BackboneSpec(
            name=_builder.__name__,
            builder=_builder,
            input_size=_size,
            torchvision_weights=f"EfficientNet_B{_builder.__name__[-1]}_Weights",
            classifier_prefixes=("classifier.",),
            num_stages=EfficientNet.num_stages,
        )
    )
