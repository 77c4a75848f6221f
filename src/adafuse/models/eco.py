"""ECO (Zolfaghari et al., ECCV 2018): a 2D BN-Inception trunk per frame, a 3D ResNet-18 head over the stacked
frame features, and (full ECO) the rest of BN-Inception as a 2D branch in parallel.

Layout of the authors' ``ECOfull.yaml`` / ``ECO.yaml``::

    frames (N·T, 3, H, W) ─► BN-Inception stem, 3a, 3b, 3c's double-3×3 branch up to its first 3×3
        ─► (N, 96, T, H/8, W/8) ─► 3D head: conv 3×3×3 96→128, BasicBlock 128,
                                   BasicBlock 128→256 /2, BasicBlock 256, BasicBlock 256→512 /2, BasicBlock 512
                                   ─► global average pool ─► dropout 0.3 ─► (N, 512)            [ECO-Lite]
        └─► (full ECO) the rest of inception-3c, 4a … 5b per frame ─► average pool ─► dropout 0.5
                                   ─► mean over frames (N, 1024) ─► concat ─► (N, 1536)         [ECO]

The 3D head's downsampling blocks stride 2 in time and space and use a 3×3×3 projection shortcut (as ``res4a_down``
/ ``res5a_down``); T must be at least 1 (T = 8 leaves 2 frames at res5). The 2D layers keep the BN-Inception
checkpoint names, so the ImageNet file loads into them (:meth:`ECO.adapt_imagenet_state`; ECO-Lite reports the
layers it does not have as dropped). Unlike the Caffe-style yaml, every 3D conv is bias-free with a BatchNorm after
it in the branch (torchvision's BasicBlock form): 4,480 fewer parameters, the same function class.
"""

from __future__ import annotations

import torch
from torch import nn

from adafuse.models.bninception import _STEM, INCEPTION_MODULES, BNInception

_CUT = ("inception_3c_double_3x3_reduce", "inception_3c_double_3x3_1")  # the 2D layers feeding the 3D head


class BasicBlock3d(nn.Module):
    """3×3×3 → 3×3×3 residual block: (N, inplanes, T, H, W) -> (N, planes, T/s, H/s, W/s); a 3×3×3 strided
    projection shortcut when the shape changes (ECO's ``res4a_down``)."""

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv3d(inplanes, planes, 3, stride=stride, padding=1, bias=False),
                                            nn.BatchNorm3d(planes))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ECO(nn.Module):
    """ECO over whole clips: (N, T, 3, H, W) -> video features (N, 1536), or (N, 512) for ECO-Lite.

    Args:
        two_d_branch: keep BN-Inception's 3c … 5b as a 2D branch in parallel (ECO); False: ECO-Lite.
    """

    clip_level = True

    def __init__(self, *, two_d_branch: bool = True) -> None:
        super().__init__()
        self.two_d_branch = two_d_branch
        self.trunk = BNInception()
        if not two_d_branch:  # ECO-Lite: BN-Inception ends at 3c's first double 3×3
            keep = {*_STEM, "inception_3a", "inception_3b", *_CUT}
            for name in list(self.trunk._modules):
                base = name.removesuffix("_bn")
                if not (base in keep or base.startswith(("inception_3a_", "inception_3b_")) or name == "relu"):
                    delattr(self.trunk, name)
        self.head3d = nn.Sequential(
            nn.Conv3d(96, 128, 3, padding=1, bias=False), nn.BatchNorm3d(128), nn.ReLU(inplace=True),
            BasicBlock3d(128, 128), BasicBlock3d(128, 256, stride=2), BasicBlock3d(256, 256),
            BasicBlock3d(256, 512, stride=2), BasicBlock3d(512, 512),
        )  # fmt: skip
        self.pool3d = nn.AdaptiveAvgPool3d(1)
        self.dropout3d = nn.Dropout(0.3)
        self.dropout2d = nn.Dropout(0.5) if two_d_branch else None
        self.num_features = 512 + (INCEPTION_MODULES[-1].out_channels if two_d_branch else 0)
        for m in self.head3d.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t = clips.shape[:2]
        net = self.trunk
        x = clips.flatten(0, 1)
        for name in _STEM:
            x = net._layer(name, x)
        x = net.inception("3b", net.inception("3a", x)[0])[0]
        cut = x
        for name in _CUT:
            cut = net._layer(name, cut)
        stacked = cut.view(n, t, *cut.shape[1:]).transpose(1, 2)  # (N, 96, T, H/8, W/8)
        features = self.dropout3d(torch.flatten(self.pool3d(self.head3d(stacked)), 1))
        if not self.two_d_branch:
            return features
        for spec in INCEPTION_MODULES[2:]:
            x = net.inception(spec.name, x)[0]
        frames = self.dropout2d(torch.flatten(net.avgpool(x), 1)).view(n, t, -1).mean(dim=1)
        return torch.cat([frames, features], dim=1)

    def adapt_imagenet_state(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """A BN-Inception ImageNet state dict (checkpoint names) for the 2D layers (``trunk.*``); returns it and the
        file's keys of layers this model does not have (ECO-Lite: 3c's other branches, 4a … 5b)."""
        own = self.state_dict()
        mapped = {f"trunk.{k}": v for k, v in state.items()}
        unused = sorted(k for k, full in zip(state, mapped, strict=True) if full not in own)
        return {k: v for k, v in mapped.items() if k in own}, unused
