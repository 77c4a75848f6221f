"""Channel gating (CGNet, Hua et al., NeurIPS 2019), the paper's "CGNet" baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adafuse.errors import UserError


class _StraightThroughStep(torch.autograd.Function):
    """Forward 1[z > 0]; backward passes the gradient of sigmoid(z) (identity through the step)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (z,) = ctx.saved_tensors
        s = torch.sigmoid(z)
        return grad * s * (1 - s)


class ChannelGatedConv2d(nn.Conv2d):
    """A conv whose outputs are gated by a partial sum over the first 1/p of the input channels.

    ``Yp`` = conv over input channels ``[0, C_in/p)``; gate ``d = 1[sigmoid(alpha·(BN(Yp) − θ)) > 0.5]`` per
    output element, with a learnable per-channel threshold θ and a non-affine BN; output
    ``d·Y + (1 − d)·Yp``. A gated-off element needs only the partial sum, saving (1 − 1/p) of its MACs:
    ``forward(x, with_gate=True)`` also returns the gated-off share of every frame, the cost counter's input.
    The weight stays at ``<name>.weight``, so ImageNet checkpoints load unchanged.
    """

    def __init__(self, *args, partitions: int = 4, alpha: float = 2.0, target: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.in_channels % partitions:
            raise UserError(f"in_channels ({self.in_channels}) must be divisible by partitions ({partitions})")
        self.partitions = partitions
        self.alpha = alpha
        self.target = target
        self.threshold = nn.Parameter(torch.zeros(self.out_channels))
        self.gate_bn = nn.BatchNorm2d(self.out_channels, affine=False)

    def forward(self, x: torch.Tensor, *, with_gate: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (N·T, C_in, H, W) -> output (N·T, C_out, H', W'); with ``with_gate``, (output, gated-off share per
        frame (N·T,))."""
        k = self.in_channels // self.partitions
        partial = F.conv2d(x[:, :k], self.weight[:, :k], None, self.stride, self.padding, self.dilation)
        full = partial + F.conv2d(x[:, k:], self.weight[:, k:], None, self.stride, self.padding, self.dilation)
        if self.bias is not None:
            partial, full = partial + self.bias[:, None, None], full + self.bias[:, None, None]
        gate = _StraightThroughStep.apply(self.alpha * (self.gate_bn(partial) - self.threshold[:, None, None]))
        off = 1.0 - gate.detach().mean(dim=(1, 2, 3))
        out = gate * full + (1 - gate) * partial
        return (out, off) if with_gate else out

    def threshold_loss(self) -> torch.Tensor:
        """CGNet's regulariser pushing thresholds to ``target``: Σ(θ − target)²."""
        return ((self.threshold - self.target) ** 2).sum()
