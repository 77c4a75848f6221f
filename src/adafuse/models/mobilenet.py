"""MobileNetV2 (Sandler et al., 2018) as a frame backbone: torchvision's network and state-dict keys, without the
ImageNet classifier. AR-Net's policy network; also usable as a TSN/LSTM/TRN backbone (no temporal slots)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

from adafuse.models._registry import BackboneSpec, register_backbone


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 features + global average pool: (N·T, 3, H, W) -> (N·T, 1280)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = tv_mobilenet_v2(weights=None).features
        self.num_features = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def mobilenet_v2() -> MobileNetV2:
    """MobileNetV2 trunk (1280 features); takes no temporal slots."""
    return MobileNetV2()


register_backbone(
    BackboneSpec(
        name="mobilenet_v2",
        builder=mobilenet_v2,
        torchvision_weights="MobileNet_V2_Weights",
        classifier_prefixes=("classifier.",),
        num_stages=0,
    )
)
