"""BatchNorm-folded dense convolutions of the executor, on oneDNN with weights pre-packed once.

Activations are ``(B, C, H, W)`` tensors in ``torch.channels_last`` memory (NHWC): on oneDNN this avoids the
activation reorders PyTorch inserts around every NCHW convolution. :meth:`FoldedConv.dense` runs all channels with
the weight pre-packed once per input size into oneDNN's blocked layout (a plain weight is re-laid out on every call,
which dominates the deep, weight-heavy layers at batch 1); ReLU, and the residual add + ReLU of a ResNet block, are
fused into the convolution. The policy-controlled convolutions run on the group-sparse kernels of
:mod:`adafuse.inference.group_conv` (:meth:`FoldedConv.group_sparse` builds one on the same folded weight).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from adafuse.inference.group_conv import GroupSparseConv

# oneDNN's fused convolution with pre-packed weights (what inductor's CPU freezing uses); F.conv2d otherwise.
_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``(C_out, C_in/groups, kh, kw)`` and bias ``(C_out,)`` of ``bn(conv(x))`` as one conv (eval-mode BN)."""
    weight = conv.weight.detach().float()
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
    if bn is None:
        return weight.contiguous(), bias
    scale = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
    shift = -bn.running_mean.detach().float() * scale
    if bn.affine:
        scale, shift = scale * bn.weight.detach().float(), shift * bn.weight.detach().float() + bn.bias.detach().float()
    return (weight * scale[:, None, None, None]).contiguous(), bias * scale + shift


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in NHWC memory (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


class FoldedConv:
    """A ``Conv2d`` (+ ``BatchNorm2d``) folded into one biased conv, for inference on NHWC tensors.

    Args:
        conv: the convolution (``groups=1``).
        bn: the BatchNorm that follows it, or None.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> None:
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not supported")
        weight, bias = fold_batchnorm(conv, bn)
        self.weight, self.bias = weight.cpu(), bias.cpu()  # (C_out, C_in, kh, kw), (C_out,)
        self.out_channels, self.in_channels, kh, kw = weight.shape
        self.kernel_size = (kh, kw)
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self._packed: dict[tuple[int, ...], torch.Tensor] = {}
        self._fused = _MKLDNN  # False once oneDNN's fused op has refused a call: F.conv2d from then on

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an ``h × w`` input."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def macs(self, out: torch.Tensor) -> int:
        """Multiply-accumulates of a dense call that produced ``out``."""
        return out.numel() * self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def group_sparse(self, group_size: int) -> GroupSparseConv:
        """The same folded convolution on the group-sparse kernels, deciding per ``group_size`` channels."""
        if self.kernel_size[0] != self.kernel_size[1] or self.stride[0] != self.stride[1] or self.dilation != [1, 1]:
            raise ValueError("group-sparse convolutions need square kernels and strides and no dilation")
        return GroupSparseConv(self.weight, self.bias, stride=self.stride[0], padding=self.padding[0],
                               group_size=group_size)  # fmt: skip

    def _conv(self, x, weight, bias, relu: bool, residual: torch.Tensor | None) -> torch.Tensor:
        if self._fused:
            args = (self.padding, self.stride, self.dilation, 1)
            try:
                if residual is not None:
                    return torch.ops.mkldnn._convolution_pointwise.binary(
                        x, residual, weight, bias, *args, "add", 1.0, "relu", [], ""
                    )
                return torch.ops.mkldnn._convolution_pointwise(
                    x, weight, bias, *args, "relu" if relu else "none", [], ""
                )
            except RuntimeError as e:  # a private op: some torch / oneDNN / CPU combinations reject some shapes
                warnings.warn(f"oneDNN fused convolution failed ({e}); this layer falls back to F.conv2d", stacklevel=2)
                self._fused = False
                weight = self.weight if weight.is_mkldnn else weight
        y = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)
        if residual is not None:
            return y.add_(residual).relu_()
        return y.relu_() if relu else y

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fused:
            return self.weight
        key = tuple(x.shape)
        if key not in self._packed:  # oneDNN picks the blocked layout for the input shape it is told
            self._packed[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(), self.padding, self.stride, self.dilation, 1, list(key)
            )
        return self._packed[key]

    def dense(self, x: torch.Tensor, *, relu: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
        """All channels: x (B, C_in, H, W) -> (B, C_out, H', W'). ``residual`` (B, C_out, H', W') is added before a
        final ReLU (which ``residual`` implies)."""
        return self._conv(x, self._packed_weight(x), self.bias, relu, residual)
