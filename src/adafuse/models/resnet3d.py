"""3D ResNets inflated from the 2D ones (I3D, Carreira & Zisserman 2017), with optional non-local blocks.

The layout is that of the released 32-frame I3D-ResNet models of the non-local paper (Wang et al., 2018; the
backbone of Wang & Gupta's I3D in the paper's Table 5), for any ResNet depth of this package::

    clip (N, 3, T, H, W) ─► conv1 5×7×7 /(2,2,2) ─► BN ─► ReLU ─► maxpool 2×3×3 /(2,2,2)
        ─► layer1 ─► maxpool 2×1×1 /(2,1,1) ─► layer2 ─► layer3 ─► layer4 ─► global average pool ─► (N, C)

Blocks keep torchvision's 2D names (``layer1.0.conv1`` …) with 3D kernels: the first conv of a block is
inflated to 3 frames (3×1×1 in a bottleneck, 3×3×3 in a basic block) in every block of layer1, the even blocks of
layer2 and layer3 and the odd blocks of layer4 (the released ``use_temp_convs``); every other kernel is 1×k×k, so
the stride-2 3×3 convs (torchvision v1.5 placement) reduce space only. Non-local blocks follow the odd blocks of
layer2 and layer3 (5 for ResNet-50). :meth:`ResNet3d.adapt_imagenet_state` inflates a 2D ImageNet state dict: a k×k
kernel becomes kt copies divided by kt, so a clip of identical frames gives the 2D network's features.

Why not torchvision's video ResNets (r3d_18, mc3_18, r2plus1d_18): their Bottleneck has a fixed 1×1×1 first conv,
no temporal pooling after layer1 and no non-local slot, and their keys (``layer1.0.conv1.0``) are not the 2D ones.
"""

from __future__ import annotations

import torch
from torch import nn

from adafuse.layers.nonlocal_block import NonLocalBlock
from adafuse.models.resnet import BasicBlock, Bottleneck


def _temporal(stage: int, index: int) -> bool:
    """Whether block ``index`` of stage ``stage`` (0..3) has a 3-frame first conv (the released I3D pattern)."""
    return stage == 0 or (stage in (1, 2) and index % 2 == 0) or (stage == 3 and index % 2 == 1)


class Block3d(nn.Module):
    """A residual block of a 3D ResNet (basic or bottleneck, 2D names), optionally followed by a non-local block.

    Input (N, inplanes, T, H, W) -> (N, planes·expansion, T, H/stride, W/stride).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        bottleneck: bool,
        stride: int = 1,
        temporal: bool = False,
        downsample: nn.Module | None = None,
        non_local: bool = False,
    ) -> None:
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        kt = 3 if temporal else 1
        first = (kt, 1, 1) if bottleneck else (kt, 3, 3)
        self.conv1 = nn.Conv3d(inplanes, planes, first, stride=1 if bottleneck else (1, stride, stride),
                               padding=tuple(k // 2 for k in first), bias=False)  # fmt: skip
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, stride, stride) if bottleneck else 1,
                               padding=(0, 1, 1), bias=False)  # fmt: skip
        self.bn2 = nn.BatchNorm3d(planes)
        if bottleneck:
            self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.non_local = NonLocalBlock(planes * self.expansion) if non_local else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.expansion == 4:
            y = self.bn3(self.conv3(self.relu(y)))
        y = self.relu(y + (x if self.downsample is None else self.downsample(x)))
        return y if self.non_local is None else self.non_local(y)


class ResNet3d(nn.Module):
    """Inflated 3D ResNet over whole clips: (N, T, 3, H, W) -> pooled video features (N, num_features).

    Args:
        block: the 2D block type whose 3D twin to build (:class:`BasicBlock` or :class:`Bottleneck`).
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        widths: planes per stage (the 2D network's).
        non_local: add the non-local blocks of the released NL-I3D (after the odd blocks of layer2 and layer3).
    """

    clip_level = True  # the recognizer hands it whole clips

    def __init__(self, *, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...],
                 widths: tuple[int, ...] = (64, 128, 256, 512), non_local: bool = False) -> None:  # fmt: skip
        super().__init__()
        bottleneck = block is Bottleneck
        self.conv1 = nn.Conv3d(3, widths[0], (5, 7, 7), stride=2, padding=(2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        # The released 2×3×3 /2 pool1 as its two separable halves (a max over a box is a max of maxes): ceil_mode on
        # the temporal ones keeps one frame of a clip shorter than the stride, without changing spatial sizes.
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.pool1 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1), ceil_mode=True)
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1), ceil_mode=True)
        inplanes = widths[0]
        for stage, (planes, count) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                out = planes * (4 if bottleneck else 1)
                downsample = None
                if stride != 1 or inplanes != out:
                    downsample = nn.Sequential(nn.Conv3d(inplanes, out, 1, stride=(1, stride, stride), bias=False),
                                               nn.BatchNorm3d(out))  # fmt: skip
                blocks.append(Block3d(inplanes, planes, bottleneck=bottleneck, stride=stride,
                                      temporal=_temporal(stage, i), downsample=downsample,
                                      non_local=non_local and stage in (1, 2) and i % 2 == 1))  # fmt: skip
                inplanes = out
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.num_features = inplanes
        own_init = {id(c) for b in self.modules() if isinstance(b, NonLocalBlock) for c in b.modules()}
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and id(m) not in own_init:  # non-local blocks keep their own init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.transpose(1, 2)  # (N, 3, T, H, W)
        x = self.pool1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        x = self.pool2(self.layer1(x))
        x = self.layer4(self.layer3(self.layer2(x)))
        return torch.flatten(self.avgpool(x), 1)

    def adapt_imagenet_state(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Inflate a 2D ResNet state dict (torchvision keys) to this network: every 2D kernel (O, I, kh, kw) whose
        key is a 3D kernel (O, I, kt, kh, kw) here becomes kt copies / kt. Returns (state, keys not used: none)."""
        own = self.state_dict()
        inflated = {}
        for key, value in state.items():
            target = own.get(key)
            if target is not None and value.dim() == 4 and target.dim() == 5:
                kt = target.shape[2]
                value = value.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
            inflated[key] = value
        return inflated, []



# The 2D ResNets this package registers, as (block, blocks per stage, widths).
_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": (BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet101": (Bottleneck, (3, 4, 23, 3), (64, 128, 256, 512)),
    "resnet10_mini": (BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128)),
}


def inflated_resnet(backbone: str, *, non_local: bool = False) -> ResNet3d:
    """The I3D inflation of a registered 2D ResNet (``resnet50`` …), optionally with non-local blocks."""
    block, layers, widths = _LAYOUTS[backbone]
    return ResNet3d(block=block, layers=layers, widths=widths, non_local=non_local)
