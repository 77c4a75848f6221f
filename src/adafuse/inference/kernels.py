"""BatchNorm-folded dense convolutions of the executor, weights pre-packed once.

Activations are ``(B, C, H, W)`` tensors in ``torch.channels_last`` memory (NHWC): on oneDNN this avoids the
activation reorders PyTorch inserts around every NCHW convolution. :meth:`FoldedConv.dense` runs all channels, ReLU
and the residual add + ReLU of a ResNet block fused in:

- 1×1 convolutions (a bottleneck's conv1 and conv3, the projection shortcuts) on the compiled 1×1 kernel
  (``csrc/conv1x1.cpp``, AVX-512 or AVX2 register tiles): weights packed once in 16-channel panels, bias, residual
  and ReLU applied in registers
  before the single store, optionally into the residual's own buffer (``in_place``). oneDNN's NHWC 1×1 on AVX2
  runs the expanding conv3 + residual at 1.24–1.47× ONNX Runtime's time; this kernel at about ONNX Runtime's
  (docs/speed.md);
- thin-input convolutions (a stem: 7×7 over 3 channels) on the compiled row kernel (``csrc/conv_rows.cpp``): each
  work item zero-pads the input rows it reads (in any layout) into its own buffer, so each kernel row of a pixel
  is one contiguous run of ``kw · C_in`` values against
  the same panels (oneDNN's NHWC kernel runs a ResNet stem at 1.3–1.6× ONNX Runtime's time, this one ~25% faster
  than oneDNN);
- everything else (and every conv when the extension is not built) on oneDNN, the weight pre-packed once per
  input size into oneDNN's blocked layout (a plain weight is re-laid out on every call, which dominates the deep,
  weight-heavy layers at batch 1); with ``in_place`` a residual add accumulates into the residual's buffer (oneDNN's
  sum post-op), as on the 1×1 kernel.

The policy-controlled convolutions run on the group-sparse kernels of :mod:`adafuse.inference.group_conv`
(:meth:`FoldedConv.group_sparse` builds one on the same folded weight).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adafuse.inference.extension import extension_ops
from adafuse.inference.group_conv import GroupSparseConv
from adafuse.inference.huge_pages import in_huge_pages

# oneDNN's fused convolution with pre-packed weights (what inductor's CPU freezing uses); F.conv2d otherwise.
_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# Its in-place form (the sum post-op: the result accumulated into the residual's buffer), registered beside it.
_MKLDNN_IN_PLACE = _MKLDNN and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")
# Output pixels per work item of the 1×1 kernel: a block's input rows serve a chunk of 16-channel weight panels from
# the L1/L2 cache (96 to 1024 ran alike on ResNet-50's shapes; docs/kernels.md).
_BLOCK_PIXELS = 256
_LANES = 16  # output channels per weight panel of the compiled kernels
# Convolutions whose kernel rows hold at most this many input values (kw · C_in: a stem's 7 × 3 = 21) run on the
# compiled row kernel (csrc/conv_rows.cpp); wider ones on oneDNN, which runs them faster than it.
_ROW_VALUES = 64


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


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of an NHWC tensor, (B, C, H, W) -> (B, C): the compiled pool (``csrc/pool.cpp``), or
    without it a sum over the rows of the (B, H·W, C) view, the fastest of mean / GEMV / sum on these CPUs."""
    b, c, h, w = x.shape
    ops = extension_ops()
    if ops is not None and x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous(
        memory_format=torch.channels_last
    ):
        mean = torch.empty(b, c)
        ops.mean_hw(x, mean)
        return mean
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c).sum(dim=1).mul_(1.0 / (h * w))


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
        # The compiled kernels run the 1×1 convolutions and the thin-input ones (a stem), C_out a multiple of 16.
        pointwise = (kh, kw) == (1, 1) and self.padding == [0, 0] and self.dilation == [1, 1]
        thin = kw * self.in_channels <= _ROW_VALUES and self.dilation == [1, 1]
        ops = extension_ops() if self.out_channels % _LANES == 0 and self.stride[0] == self.stride[1] else None
        self._kernel = None  # the compiled kernel this convolution runs on: "conv1x1", "conv_rows" or None (oneDNN)
        if ops is not None and pointwise and self.stride[0] in (1, 2):
            self._kernel = "conv1x1"
        elif ops is not None and thin and not pointwise:
            self._kernel = "conv_rows"
        self._ops = ops if self._kernel is not None else None
        if self._ops is not None:
            # (C_out / 16, kh · kw · C_in, 16): panel j holds output channels [16j, 16j + 16) for every (kernel row,
            # kernel column, input channel), K-major: the order of an NHWC input's values along a kernel row
            k = kh * kw * self.in_channels
            panels = self.weight.permute(0, 2, 3, 1).reshape(-1, _LANES, k).transpose(1, 2)
            self._panels = in_huge_pages(panels.contiguous())  # read from memory once per frame when streaming

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an ``h × w`` input."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def macs(self, out_shape: Sequence[int]) -> int:
        """Multiply-accumulates of a dense call whose output has shape ``out_shape`` (B, C_out, H', W')."""
        return math.prod(out_shape) * self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def group_sparse(self, group_size: int, *, sparse_input: bool = True) -> GroupSparseConv:
        """The same folded convolution on the group-sparse kernels, deciding per ``group_size`` channels
        (``sparse_input``: see :class:`GroupSparseConv`)."""
        if self.kernel_size[0] != self.kernel_size[1] or self.stride[0] != self.stride[1] or self.dilation != [1, 1]:
            raise ValueError("group-sparse convolutions need square kernels and strides and no dilation")
        return GroupSparseConv(self.weight, self.bias, stride=self.stride[0], padding=self.padding[0],
                               group_size=group_size, sparse_input=sparse_input)  # fmt: skip

    def _conv(self, x, weight, bias, relu: bool, residual: torch.Tensor | None, in_place: bool) -> torch.Tensor:
        if self._fused:
            args = (self.padding, self.stride, self.dilation, 1)
            try:
                if residual is not None and in_place and _MKLDNN_IN_PLACE:  # into the residual: no fresh output
                    return torch.ops.mkldnn._convolution_pointwise_.binary(
                        residual, x, weight, bias, *args, "add", 1.0, "relu", [], ""
                    )
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

    def dense(
        self, x: torch.Tensor, *, relu: bool, residual: torch.Tensor | None = None, in_place: bool = False
    ) -> torch.Tensor:
        """All channels: x (B, C_in, H, W) NHWC -> (B, C_out, H', W') NHWC. ``residual`` (B, C_out, H', W') NHWC is
        added before a final ReLU (which ``residual`` implies); ``in_place``: the result may be written into
        ``residual``'s buffer (the caller no longer needs it), which saves a fresh output and its memory traffic."""
        if self._kernel == "conv_rows":
            return self._rows(x, relu, residual)
        if self._kernel is None:
            return self._conv(x, self._packed_weight(x), self.bias, relu, residual, in_place)
        return self._pointwise(x, relu, residual, in_place, None)

    def dense_and_mean(
        self, x: torch.Tensor, *, relu: bool, residual: torch.Tensor | None = None, in_place: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`dense` and the global average pool of its result, (B, C_out): on the 1×1 kernel the pool is
        summed from the output registers (no second pass over the output)."""
        if self._kernel != "conv1x1":
            out = self.dense(x, relu=relu, residual=residual)
            return out, global_avg_pool(out)
        mean = torch.empty(x.shape[0], self.out_channels)
        return self._pointwise(x, relu, residual, in_place, mean), mean

    def dense_max_pool(self, x: torch.Tensor) -> torch.Tensor:
        """A ResNet stem: ReLU(conv(x)), then a 3×3 max pool of stride 2 and padding 1. x (B, C_in, H, W), any memory
        layout -> (B, C_out, H'', W'') NHWC. On the row kernel the pool is fused: the full-size convolution output
        (25 MB for a clip of 8 at 224 px) is never written."""
        if self._kernel == "conv_rows":
            return self._rows(x, True, None, max_pool=True)
        return F.max_pool2d(self.dense(to_channels_last(x), relu=True), 3, 2, 1)

    def _pointwise(self, x, relu: bool, residual, in_place: bool, mean: torch.Tensor | None) -> torch.Tensor:
        if residual is not None and in_place:
            out = residual
        else:
            h, w = self.output_size(*x.shape[2:])
            out = torch.empty(x.shape[0], h, w, self.out_channels).permute(0, 3, 1, 2)
        self._ops.conv1x1(x, self._panels, self.bias, out, residual, mean, self.stride[0],
                          relu or residual is not None, _BLOCK_PIXELS)  # fmt: skip
        return out

    def _rows(self, x: torch.Tensor, relu: bool, residual: torch.Tensor | None, *, max_pool: bool = False):
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        ho, wo = self.output_size(*x.shape[2:])
        if max_pool:
            ho, wo = (ho - 1) // 2 + 1, (wo - 1) // 2 + 1
        out = torch.empty(x.shape[0], ho, wo, self.out_channels).permute(0, 3, 1, 2)
        # x in any layout (frames come NCHW): the kernel pads the rows each work item reads into its own buffer
        self._ops.conv_rows(x, self._panels, self.bias, out, residual, kh, kw, self.stride[0], ph, pw,
                            relu or residual is not None, max_pool, _BLOCK_PIXELS)  # fmt: skip
        return out
