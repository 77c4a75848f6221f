"""Group-sparse convolutions for the sparse executor: compute only chosen output channel groups, read only chosen
input channel groups, each input group possibly from another row (frame) of the input, without copies.

AdaFuse decides per frame and per group of channels: a block's first conv computes, for frame t, the groups kept
at t or reused at t+1; its second conv reads group g of frame t from frame t's conv1 output (KEEP), from frame
t−1's (REUSE: the same buffer, one row up, so reuse costs nothing) or not at all (SKIP: the group never enters the
reduction). :class:`GroupSparseConv` runs one such conv on NHWC float32 activations and writes the computed groups
in place into a full-width output.

Two back ends, same results:

- the compiled op (``csrc/group_conv.cpp``, built by :mod:`adafuse.inference.extension`) on the batch-reduce
  GEMM micro-kernel PyTorch exports from oneDNN (``at::native::cpublas::brgemm``): weights packed once per
  (output group, input group) as K-major blocks; a 1×1 reads activations in place, runs of consecutive input
  groups from the same row merged into one reduction chunk; a 3×3 gathers the active input groups of a block of
  output pixels once into a patch matrix (each group from its own row, zeros for the padding) that serves every
  output group, all taps in one reduction — in an AVX-512 build, over groups of 32 or 64 channels, reduced on the
  dense kernels' 7 × 32 register tile instead of brgemm (bias, residual and ReLU in the tile's store);
- pure PyTorch (gather the input groups, ``F.conv2d``, write the computed groups back): used when the extension
  cannot be built (one warning says why) or when ``ADAFUSE_KERNELS=torch`` is set in the environment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adafuse.inference.extension import extension_ops
from adafuse.inference.huge_pages import in_huge_pages

# Output pixels per work item: rows of the output are grouped until a block holds about this many pixels (a tile of
# 32 channels then stays in the L1/L2 cache while its input runs accumulate into it).
_TILE_PIXELS = 256


class GroupSparseConv:
    """A conv (BatchNorm already folded) on NHWC float32 activations that computes only chosen output channel
    groups, reading only chosen input channel groups, each input group possibly from another row of the input.

    Args:
        weight: ``(C_out, C_in, k, k)`` float32, BatchNorm folded; ``k`` in {1, 3}.
        bias: ``(C_out,)``.
        stride: 1 or 2.
        padding: zero padding on each side.
        group_size: channels per group (the policy's decision unit); divides ``C_in`` and ``C_out``, at most 64.
        sparse_input: calls may choose the input groups they read (``in_source``: a block's conv2). False: every call
            reads all input channels of its own rows (a block's conv1), and a 3×3 on the register tile then reads
            its input in place instead of gathering it into a patch matrix.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, *, stride: int, padding: int, group_size: int,
        sparse_input: bool = True,
    ) -> None:  # fmt: skip
        c_out, c_in, kh, kw = weight.shape
        if kh != kw or kh not in (1, 3):
            raise ValueError(f"kernel must be 1x1 or 3x3, got {kh}x{kw}")
        if padding != kh // 2:
            raise ValueError(f"padding must be {kh // 2} for a {kh}x{kh} kernel, got {padding}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if not 1 <= group_size <= 64 or c_in % group_size or c_out % group_size:
            raise ValueError(f"group_size {group_size} must be in 1..64 and divide C_in={c_in} and C_out={c_out}")
        if bias.shape != (c_out,):
            raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
        self.in_channels, self.out_channels, self.kernel_size = c_in, c_out, kh
        self.stride, self.padding, self.group_size = stride, padding, group_size
        self.sparse_input = sparse_input
        self.weight = weight.detach().float().contiguous()
        self.bias = bias.detach().float().contiguous()
        self._ops = extension_ops()
        if self._ops is not None:
            # brgemm: (G_out, G_in, taps, group, group): for output group j, input group q's taps as K-major
            # (group, group) blocks one after the other, so consecutive input groups are one contiguous (K, group)
            # matrix of the micro-kernel (all taps of a 3×3 in one reduction). The register tile:
            # (C_out / 16, G_in · taps · group, 16) panels, K in the patch matrix's column order; read in place
            # (no sparse input), (C_out / 16, taps · C_in, 16), tap-major: a tap's input channels, contiguous in
            # the NHWC input, meet consecutive panel rows.
            g_out, g_in = c_out // group_size, c_in // group_size
            self._tap_major = not sparse_input and self._ops.group_conv_on_tiles(kh, group_size)
            if self._tap_major:
                self._packed = (self.weight.view(c_out // 16, 16, c_in, kh * kw)
                                .permute(0, 3, 2, 1).reshape(c_out // 16, -1, 16).contiguous())  # fmt: skip
            elif self._ops.group_conv_on_tiles(kh, group_size):
                self._packed = (self.weight.view(c_out // 16, 16, g_in, group_size, kh * kw)
                                .permute(0, 2, 4, 3, 1).reshape(c_out // 16, -1, 16).contiguous())  # fmt: skip
            else:
                self._packed = (self.weight.view(g_out, group_size, g_in, group_size, kh * kw)
                                .permute(0, 2, 4, 3, 1).contiguous())  # fmt: skip
            self._packed = in_huge_pages(self._packed)  # read from memory once per frame when streaming

    @property
    def backend(self) -> str:
        """``"extension"`` or ``"torch"``: which implementation runs."""
        return "torch" if self._ops is None else "extension"

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an ``h × w`` input."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def __call__(
        self,
        x: torch.Tensor,
        *,
        out: torch.Tensor,
        out_groups: torch.Tensor | None,
        in_source: torch.Tensor | None,
        relu: bool = False,
        residual: torch.Tensor | None = None,
        mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the chosen output groups into ``out`` in place.

        Args:
            x: ``(S, C_in, H, W)`` channels_last: S source rows (frames).
            out: ``(B, C_out, Ho, Wo)`` channels_last; groups not computed are left untouched.
            out_groups: ``(B, C_out // group_size)`` bool, the groups to compute; None: all.
            in_source: ``(B, C_in // group_size)`` int64, the row of ``x`` that input group g of sample b reads;
                -1 leaves the group out of the reduction (a zero input). None: row b, every group (the only choice
                without ``sparse_input``).
            relu: apply a ReLU (after the residual).
            residual: ``(B, C_out, Ho, Wo)`` channels_last, added before the ReLU; ``out`` may be the residual
                itself (each element is read just before it is overwritten).
            mean: ``(B, C_out)`` float32, filled with the global average pool of ``out`` (what the next block's
                policy reads; summed in the kernel's epilogue). Only with ``out_groups`` None.

        Returns:
            ``out``.
        """
        if mean is not None and out_groups is not None:
            raise ValueError("mean needs every output group computed (out_groups None)")
        if in_source is not None and not self.sparse_input:
            raise ValueError("this conv reads every input group (sparse_input=False): in_source must be None")
        if self._ops is not None:
            self._ops.group_conv(
                x, self._packed, self.bias, out, out_groups, in_source, residual, mean,
                self.kernel_size, self.stride, self.padding, self.group_size, relu, self._tap_major, _TILE_PIXELS,
            )  # fmt: skip
            return out
        self._torch_forward(x, out, out_groups, in_source, relu, residual)
        if mean is not None:
            mean.copy_(out.mean(dim=(2, 3)))
        return out

    def _torch_forward(self, x, out, out_groups, in_source, relu, residual) -> torch.Tensor:
        b, g = out.shape[0], self.group_size
        s, c_in, h, w = x.shape
        if in_source is None:
            xin = x[:b]
        else:  # gather group q of sample i from row in_source[i, q]; zeros for -1
            if in_source.min() < -1 or in_source.max() >= s:
                raise RuntimeError(f"in_source holds a value outside -1..{s - 1}")
            groups = x.permute(0, 2, 3, 1).reshape(s, h, w, c_in // g, g)
            picked = groups[in_source.clamp(min=0), :, :, torch.arange(c_in // g)]  # (B, G_in, H, W, g)
            # where, not a product: a group that is not read may hold anything (an executor's unwritten buffer)
            picked = torch.where((in_source >= 0)[:, :, None, None, None], picked, 0.0)
            xin = picked.permute(0, 2, 3, 1, 4).reshape(b, h, w, c_in).permute(0, 3, 1, 2)
        y = F.conv2d(xin, self.weight, self.bias, self.stride, self.padding)
        if residual is not None:
            y = y + residual
        if relu:
            y = y.relu()
        if out_groups is None:
            return out.copy_(y)
        keep = out_groups.repeat_interleave(g, dim=1)[:, :, None, None]
        return out.copy_(torch.where(keep, y, out))
