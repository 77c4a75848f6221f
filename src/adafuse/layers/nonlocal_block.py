"""The space-time non-local block (Wang et al., CVPR 2018), in the form of the released 32-frame I3D models.

::

    x (N, C, T, H, W) ─► θ = 1×1×1 conv (C → C/2)                        ─┐
      └─► 1×2×2 max pool ─► φ, g = 1×1×1 convs (C → C/2)                  ├─► softmax(θᵀφ / √(C/2)) · g
                                                                          ─┘      ─► 1×1×1 conv (C/2 → C) ─► BN ─► + x

The max pool before φ and g is the released code's subsampling trick (4× fewer keys); the output BatchNorm starts
at γ = 0, so a new block is the identity and an ImageNet-inflated network keeps its function at initialisation.
The two attention products run through :class:`BatchMatMul` so the cost counter sees their multiply-accumulates.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchMatMul(nn.Module):
    """``a @ b`` as a module: (B, n, k) @ (B, k, m) -> (B, n, m), so :mod:`adafuse.flops` counts its n·m·k MACs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a, b)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block with a residual connection: (N, C, T, H, W) -> same shape.

    Args:
        channels: C. inner: width of θ/φ/g (C/2 in the paper).
        subsample: spatial max-pool factor of φ and g (2 in the released models; 1: none).
    """

    def __init__(self, channels: int, *, inner: int | None = None, subsample: int = 2) -> None:
        super().__init__()
        inner = inner or channels // 2
        self.inner = inner
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.pool = nn.MaxPool3d((1, subsample, subsample), ceil_mode=True) if subsample > 1 else nn.Identity()
        self.affinity = BatchMatMul()
        self.aggregate = BatchMatMul()
        self.out = nn.Conv3d(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels)
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)  # the block starts as the identity
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, THW, C')
        pooled = self.pool(x)
        phi = self.phi(pooled).flatten(2)  # (N, C', THW')
        g = self.g(pooled).flatten(2).transpose(1, 2)  # (N, THW', C')
        attention = (self.affinity(theta, phi) * self.inner**-0.5).softmax(dim=-1)  # (N, THW, THW')
        y = self.aggregate(attention, g).transpose(1, 2).reshape(n, self.inner, t, h, w)
        return x + self.bn(self.out(y))
