"""ResNet-18/34/50/101 (He et al., 2016) with temporal slots; torchvision's module names and keys.

Each residual block has three optional slots (see :mod:`adafuse.models._slots`)::

    x ─► [shift] ─► conv1 ─► bn1 ─► relu ─► [fusion(x_shifted, ·)] ─► conv2 ─► ... ─► (+ identity) ─► relu
    └──────────────────────────────── downsample(x) ─────────────────────────────────┘

The shift sits on the residual branch only (original TSM); the policy sees the shifted input, like the
official code. The official BateNet also feeds the shifted x to the projection shortcut (``downsample``, the
identity path stays unshifted): ``shifted_shortcut=True`` does that, for the authors' released TSM weights.
``conv1`` can be swapped for a channel-gated conv (CGNet). The network returns pooled features
(N·T, num_features); the classifier lives in the recognizer. Blocks and trunk have ``forward(x) -> Tensor``
and ``forward_with_policies(x, ...) -> (Tensor, policies)``, which also returns what their slots decided.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from adafuse.layers.channel_gating import ChannelGatedConv2d
from adafuse.layers.fusion import Fusion, Policies, qualify, scope
from adafuse.models._registry import BackboneSpec, register_backbone
from adafuse.models._slots import ConvFactory, FusionFactory, ShiftFactory, no_fusion, no_shift


def _slot(module: nn.Module | None) -> nn.Module:
    return nn.Identity() if module is None else module


def _first_conv(conv: nn.Conv2d, x: torch.Tensor, policies: Policies) -> torch.Tensor:
    """conv1 of a block; a channel-gated conv (CGNet) also reports its gated-off shares under ``"conv1"``."""
    if isinstance(conv, ChannelGatedConv2d):
        y, policies["conv1"] = conv(x, with_gate=True)  # through __call__: hooks (the cost counter) see it
        return y
    return conv(x)


class _Block(nn.Module):
    """What both residual blocks share: ``forward`` is ``forward_with_policies`` without the policies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_policies(x)[0]

    def _fused_first(
        self, x: torch.Tensor, actions: Mapping[str, torch.Tensor] | None, sample, generator
    ) -> tuple[torch.Tensor, torch.Tensor, Policies]:
        """Shift, conv1, BN, ReLU and the fusion: returns (shifted input, fused y, policies)."""
        policies: Policies = {}
        xs = self.shift(x)
        y = self.relu(self.bn1(_first_conv(self.conv1, xs, policies)))
        if self.fusion is not None:
            forced = (actions or {}).get("fusion")
            y, policies["fusion"] = self.fusion.decide_and_fuse(xs, y, actions=forced, sample=sample,
                                                                generator=generator)  # fmt: skip
        return xs, y, policies

    def _shortcut(self, x: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The identity, or the projection of the block input (of the shifted input ``xs`` with
        ``shifted_shortcut``, as in the official BateNet)."""
        if self.downsample is None:
            return x
        return self.downsample(xs if self.shifted_shortcut else x)


class BasicBlock(_Block):
    """3×3 → 3×3 residual block (ResNet-18/34). Input (N·T, inplanes, H, W) -> (N·T, planes, H/s, W/s)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        shift: nn.Module | None = None,
        fusion: Fusion | None = None,
        conv_layer: ConvFactory = nn.Conv2d,
        shifted_shortcut: bool = False,
    ) -> None:
        super().__init__()
        self.shift = _slot(shift)
        self.shifted_shortcut = shifted_shortcut
        self.conv1 = conv_layer(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.fusion = fusion
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward_with_policies(
        self, x: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """(output, {"fusion": mask (N, T, G, 3)} when the block has a fusion)."""
        xs, y, policies = self._fused_first(x, actions, sample, generator)
        return self.after_fusion(x, xs, y), policies

    def after_fusion(self, x: torch.Tensor, xs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The block after its fusion slot: block input x, shifted input xs and fused first-conv output y -> output."""
        y = self.bn2(self.conv2(y))
        return self.relu(y + self._shortcut(x, xs))


class Bottleneck(_Block):
    """1×1 → 3×3 (stride) → 1×1 residual block (ResNet-50/101, torchvision v1.5).
    Input (N·T, inplanes, H, W) -> (N·T, 4·planes, H/s, W/s)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        shift: nn.Module | None = None,
        fusion: Fusion | None = None,
        conv_layer: ConvFactory = nn.Conv2d,
        shifted_shortcut: bool = False,
    ) -> None:
        super().__init__()
        self.shift = _slot(shift)
        self.shifted_shortcut = shifted_shortcut
        self.conv1 = conv_layer(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.fusion = fusion
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward_with_policies(
        self, x: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """(output, {"fusion": mask (N, T, G, 3)} when the block has a fusion)."""
        xs, y, policies = self._fused_first(x, actions, sample, generator)
        return self.after_fusion(x, xs, y), policies

    def after_fusion(self, x: torch.Tensor, xs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The block after its fusion slot: block input x, shifted input xs and fused first-conv output y -> output."""
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self._shortcut(x, xs))


class ResNet(nn.Module):
    """ResNet trunk returning globally pooled features: (N·T, 3, H, W) -> (N·T, num_features).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        widths: planes per stage (torchvision: 64, 128, 256, 512); the stem has ``widths[0]`` channels.
        shift_layer, fusion_layer, conv_layer: slot factories, called per block with its stage index 0..3.
        shifted_shortcut: projection shortcuts take the shifted block input (the official BateNet).
    """

    num_stages = 4

    def __init__(
        self,
        *,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        shift_layer: ShiftFactory = no_shift,
        fusion_layer: FusionFactory = no_fusion,
        conv_layer: ConvFactory = nn.Conv2d,
        shifted_shortcut: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = widths[0]
        for stage, (planes, count) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                downsample = None
                if stride != 1 or inplanes != planes * block.expansion:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion),
                    )
                blocks.append(
                    block(
                        inplanes,
                        planes,
                        stride=stride,
                        downsample=downsample,
                        shift=shift_layer(inplanes, stage),
                        fusion=fusion_layer(inplanes, planes, stage),
                        conv_layer=conv_layer,
                        shifted_shortcut=shifted_shortcut,
                    )
                )
                inplanes = planes * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_policies(x)[0]

    def forward_with_policies(
        self, x: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """Pooled features (N·T, num_features) and the policies of every block, named like ``layer1.0.fusion``."""
        x = self.stem(x)
        policies: Policies = {}
        for name, block in self.named_blocks():
            x, decided = block.forward_with_policies(x, actions=scope(actions, name), sample=sample,
                                                     generator=generator)  # fmt: skip
            policies.update(qualify(name, decided))
        return torch.flatten(self.avgpool(x), 1), policies

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1, BN, ReLU, max-pool: frames (B, 3, H, W) -> the first block's input (B, widths[0], H/4, W/4)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def named_blocks(self) -> Iterator[tuple[str, BasicBlock | Bottleneck]]:
        """All residual blocks with their names (``layer1.0`` ...), in order."""
        for stage in range(self.num_stages):
            for i, block in enumerate(getattr(self, f"layer{stage + 1}")):
                yield f"layer{stage + 1}.{i}", block

    def blocks(self) -> Iterator[BasicBlock | Bottleneck]:
        """All residual blocks, in order."""
        for _, block in self.named_blocks():
            yield block

    def fusion_cost_links(self):
        """(fusion, [(producer conv, channel offset)], [consumer convs]) per fused block, for the cost counter."""
        for b in self.blocks():
            if b.fusion is not None:
                yield b.fusion, [(b.conv1, 0)], [b.conv2]


def resnet18(**slots) -> ResNet:
    """ResNet-18 trunk (512 features)."""
    return ResNet(block=BasicBlock, layers=(2, 2, 2, 2), **slots)


def resnet10_mini(**slots) -> ResNet:
    """A quarter-width ResNet-10 trunk (128 features, 0.3 M parameters) for CPU demos and tests; not in the
    paper. Same blocks and slots as ResNet-18, one block per stage."""
    return ResNet(block=BasicBlock, layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), **slots)


def resnet34(**slots) -> ResNet:
    """ResNet-34 trunk (512 features)."""
    return ResNet(block=BasicBlock, layers=(3, 4, 6, 3), **slots)


def resnet50(**slots) -> ResNet:
    """ResNet-50 trunk (2048 features)."""
    return ResNet(block=Bottleneck, layers=(3, 4, 6, 3), **slots)


def resnet101(**slots) -> ResNet:
    """ResNet-101 trunk (2048 features)."""
    return ResNet(block=Bottleneck, layers=(3, 4, 23, 3), **slots)


for _name, _builder in ((f.__name__, f) for f in (resnet18, resnet34, resnet50, resnet101, resnet10_mini)):
    register_backbone(
        BackboneSpec(
            name=_name,
            builder=_builder,
            torchvision_weights=None if _name == "resnet10_mini" else f"ResNet{_name[6:]}_Weights",
            classifier_prefixes=("fc.",),
            supports_channel_gating=True,
            supports_shifted_shortcut=True,
        )
    )
