"""Inference kernels of the sparse executor: BatchNorm-folded convolutions with a dense and two channel-sliced paths.

Activations are ``(B, C, H, W)`` tensors in ``torch.channels_last`` memory (NHWC): on oneDNN this avoids the
activation reorders PyTorch inserts around every NCHW convolution, and a channel gather is a row gather of the
``(B·H·W, C)`` view. Three ways to run a folded conv:

- :meth:`FoldedConv.dense`: all channels, with the weight pre-packed once per input size into oneDNN's blocked
  layout (a plain weight is re-laid out on every call, which dominates the deep, weight-heavy layers at batch 1);
  ReLU, and the residual add + ReLU of a ResNet block, are fused into the convolution.
- :meth:`FoldedConv.sliced_out`: only some output channels (the channels a policy keeps); rows of the weight are
  gathered per call. A 1×1 conv runs as one GEMM on the ``(B·H·W, C_in)`` view.
- :meth:`FoldedConv.sliced_in`: only some input channels (the channels a policy does not skip), on an input that
  holds just those channels; columns of the weight are gathered per call.

Slices are lists of *units*: groups of ``unit`` contiguous channels, the granularity of the policy's decisions
(the weight is pre-shaped so a unit is one contiguous block). Every call adds the multiply-accumulates it really
ran, from the shapes it passed to the kernel, to :attr:`FoldedConv.executed_macs`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

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


def gather_units(x: torch.Tensor, units: torch.Tensor, unit: int) -> torch.Tensor:
    """Channels of the given units: x (B, C, H, W) NHWC, units (n,) -> (B, n·unit, H, W) NHWC."""
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c // unit, unit)
    return rows.index_select(1, units).view(b, h, w, units.numel() * unit).permute(0, 3, 1, 2)


class FoldedConv:
    """A ``Conv2d`` (+ ``BatchNorm2d``) folded into one biased conv, for inference on NHWC tensors.

    Args:
        conv: the convolution (``groups=1``).
        bn: the BatchNorm that follows it, or None.
        unit: channels per slicing unit (the policy's decision granularity).
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, *, unit: int = 1) -> None:
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not supported")
        weight, bias = fold_batchnorm(conv, bn)
        self.out_channels, self.in_channels, kh, kw = weight.shape
        # Stored OHWI (channels-last), the layout oneDNN wants next to NHWC activations: a sliced weight is then
        # used as gathered, where an OIHW one would be copied into OHWI on every call.
        self.weight = weight.cpu().contiguous(memory_format=torch.channels_last)
        self.bias = bias.cpu()
        self.kernel_size = (kh, kw)
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.unit = unit
        self.pointwise = (kh, kw) == (1, 1) and self.stride == [1, 1] and self.padding == [0, 0]
        ohwi = self.weight.permute(0, 2, 3, 1)
        # A unit of output channels is a contiguous block of rows; a unit of input channels is a contiguous block of
        # ``unit`` floats in every (o, h, w) row.
        self._w_out = ohwi.reshape(self.out_channels // unit, -1) if self.out_channels % unit == 0 else None
        self._w_in = ohwi.reshape(-1, self.in_channels // unit, unit) if self.in_channels % unit == 0 else None
        self._b_out = self.bias.view(-1, unit) if self.out_channels % unit == 0 else None
        self._packed: dict[tuple[int, int, int], torch.Tensor] = {}
        self._fused = _MKLDNN  # False once oneDNN's fused op has refused a call: F.conv2d from then on
        self.executed_macs = 0

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an ``h × w`` input."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def _count(self, out: torch.Tensor, in_channels: int) -> None:
        self.executed_macs += out.numel() * in_channels * self.kernel_size[0] * self.kernel_size[1]

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
        key = tuple(x.shape[1:])
        if key not in self._packed:  # oneDNN picks the blocked layout for the input size it is told
            self._packed[key] = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.contiguous().to_mkldnn(), self.padding, self.stride, self.dilation, 1, [1, *key]
            )
        return self._packed[key]

    def dense(self, x: torch.Tensor, *, relu: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
        """All channels: x (B, C_in, H, W) -> (B, C_out, H', W'). ``residual`` (B, C_out, H', W') is added before a
        final ReLU (which ``residual`` implies)."""
        out = self._conv(x, self._packed_weight(x), self.bias, relu, residual)
        self._count(out, self.in_channels)
        return out

    def sliced_out(self, x: torch.Tensor, units: torch.Tensor, *, relu: bool) -> torch.Tensor:
        """Only the output channels of ``units`` (n,): x (B, C_in, H, W) -> (B, n·unit, H', W'), in ``units`` order."""
        rows = self._w_out.index_select(0, units)
        bias = self._b_out.index_select(0, units).view(-1)
        if self.pointwise:  # one GEMM on the (B·H·W, C_in) view: no weight re-layout, the transpose is free
            b, c, h, w = x.shape
            rows = torch.addmm(bias, x.permute(0, 2, 3, 1).reshape(b * h * w, c), rows.view(-1, c).t())
            out = (rows.relu_() if relu else rows).view(b, h, w, -1).permute(0, 3, 1, 2)
        else:
            weight = rows.view(-1, *self.kernel_size, self.in_channels).permute(0, 3, 1, 2)
            out = self._conv(x, weight, bias, relu, None)
        self._count(out, self.in_channels)
        return out

    def sliced_in(
        self, x: torch.Tensor, units: torch.Tensor, *, relu: bool, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Only the input channels of ``units`` (n,): x (B, n·unit, H, W) holding exactly those channels, in ``units``
        order -> (B, C_out, H', W'). No units gives the bias alone (every input channel is zero)."""
        if units.numel() == 0:
            b, _, h, w = x.shape
            out = x.new_empty(b, *self.output_size(h, w), self.out_channels).copy_(self.bias).permute(0, 3, 1, 2)
            if residual is not None:
                return out.add_(residual).relu_()
            return out.relu_() if relu else out
        weight = self._w_in.index_select(1, units).view(self.out_channels, *self.kernel_size, -1).permute(0, 3, 1, 2)
        out = self._conv(x, weight, self.bias, relu, residual)
        self._count(out, x.shape[1])
        return out
