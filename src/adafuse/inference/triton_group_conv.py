"""Group-sparse convolution on a GPU, in Triton: compute only chosen output channel groups, reading only each
sample's non-skipped input channel groups, each possibly from another row (frame) of the input, without copies.

The GPU counterpart of :mod:`adafuse.inference.group_conv` (same semantics: ``out_groups`` and ``in_source``), for a
whole batch of clips at once. One program computes one (sample, tile of ``BLOCK_M`` output pixels, block of output
channels): an implicit GEMM whose reduction walks only that sample's listed input groups — each group is
``group_size`` contiguous input channels read in place from the row its source names (KEEP: the sample's own row;
REUSE: the previous frame's row of the same buffer, so reuse costs nothing) — over the k×k taps, accumulating in
float32 on the tensor cores, then bias (BatchNorm folded), residual and ReLU in the epilogue, written in place into
a full-width NHWC output. Programs of output groups that are not computed return at once, so every launch has a
static grid: the executor's forward pass has no data-dependent shapes and can be captured in a CUDA graph.

``TRITON_INTERPRET=1`` in the environment *before this module is imported* runs the kernel in Triton's interpreter on
CPU tensors (slowly): what the test suite does to check exactness without a GPU.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from adafuse.errors import UserError

try:
    import triton
    import triton.language as tl
except ImportError:  # the executor refuses with one line (check_available); importing this module still works
    triton = tl = None


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_available() -> None:
    """Raise :class:`~adafuse.errors.UserError` (one line) unless the Triton kernels can run here."""
    if triton is None:
        raise UserError("GPU sparse execution needs Triton (it comes with PyTorch's CUDA builds: pip install triton)")
    if not torch.cuda.is_available() and not interpreting():
        raise UserError("GPU sparse execution needs a CUDA GPU (or TRITON_INTERPRET=1 set before adafuse is imported, "
                        "to run its kernels slowly on the CPU)")  # fmt: skip


class GroupSources(NamedTuple):
    """Per sample, the input groups a group-sparse conv reads, listed first-to-last (static shapes).

    Attributes:
        group: (B, G_in) int32, input group indices; the first ``count[b]`` entries of row b are the ones read.
        row: (B, G_in) int32, the input row each listed group is read from.
        count: (B,) int32, how many groups sample b reads.
    """

    group: torch.Tensor
    row: torch.Tensor
    count: torch.Tensor


def compact_sources(in_source: torch.Tensor) -> GroupSources:
    """``in_source`` (B, G_in) int (the row input group g of sample b reads, -1: skipped, as in
    :class:`~adafuse.inference.group_conv.GroupSparseConv`) -> the lists the kernel walks. On the device, no sync: a
    stable sort puts each sample's read groups first, in increasing group order."""
    read = in_source >= 0
    order = torch.argsort((~read).to(torch.int8), dim=1, stable=True)
    return GroupSources(
        group=order.to(torch.int32), row=in_source.gather(1, order).to(torch.int32),
        count=read.sum(dim=1, dtype=torch.int32),
    )  # fmt: skip


if triton is not None:

    @triton.jit
    def _group_conv_kernel(
        x_ptr, w_ptr, bias_ptr, out_ptr, res_ptr, out_mask_ptr, src_group_ptr, src_row_ptr, src_count_ptr,
        H, W, Ho, Wo, C_in, C_out, G_in, tiles,
        K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, GS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        GATED_OUT: tl.constexpr, DENSE_IN: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
        IEEE: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        b = pid_m // tiles
        tile = pid_m % tiles
        active = 1
        if GATED_OUT:  # BLOCK_N is one output group
            active = tl.load(out_mask_ptr + b * (C_out // BLOCK_N) + pid_n)
        if active != 0:
            # int64 offsets: no overflow on large batches (and the interpreter skips its int32 overflow checks)
            offs_m = (tile * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
            m_ok = offs_m < Ho * Wo
            oh = offs_m // Wo
            ow = offs_m % Wo
            offs_k = tl.arange(0, GS).to(tl.int64)
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            lists = b.to(tl.int64) * G_in
            if DENSE_IN:  # noqa: SIM108 (a constexpr branch, not a ternary: Triton compiles one side only)
                count = G_in
            else:
                count = tl.load(src_count_ptr + b)
            row_size = H * W * C_in.to(tl.int64)
            for tap in tl.static_range(K * K):  # taps outside: the pixel offsets and padding mask once per tap
                ih = oh * STRIDE - PAD + tap // K
                iw = ow * STRIDE - PAD + tap % K
                ok = (m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))[:, None]
                pix = x_ptr + ((ih * W + iw) * C_in)[:, None] + offs_k[None, :]
                w_tap = w_ptr + tap * C_in * C_out + offs_k[:, None] * C_out + offs_n[None, :]
                for i in range(0, count):
                    if DENSE_IN:
                        q = i
                        row = b
                    else:
                        q = tl.load(src_group_ptr + lists + i)
                        row = tl.load(src_row_ptr + lists + i)
                    a = tl.load(pix + (row * row_size + q * GS), mask=ok, other=0.0)
                    wt = tl.load(w_tap + q * (GS * C_out))
                    if IEEE:
                        acc += tl.dot(a, wt, input_precision="ieee")
                    else:
                        acc += tl.dot(a, wt)
            acc += tl.load(bias_ptr + offs_n)[None, :]
            out_offs = (b.to(tl.int64) * Ho * Wo + offs_m)[:, None] * C_out + offs_n[None, :]
            if HAS_RES:
                acc += tl.load(res_ptr + out_offs, mask=m_ok[:, None], other=0.0).to(tl.float32)
            if RELU:
                acc = tl.maximum(acc, 0.0)
            tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None])


class _Config(NamedTuple):
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


class TritonGroupConv:
    """A conv (BatchNorm already folded) on NHWC activations that computes only chosen output channel groups, reading
    only chosen input channel groups, each input group possibly from another row of the input.

    Args:
        weight: ``(C_out, C_in, k, k)``, BatchNorm folded; ``k`` in {1, 3}, padding ``k // 2``.
        bias: ``(C_out,)``.
        stride: 1 or 2.
        group_size: channels per group (the policy's decision unit): 16, 32 or 64 (a tensor-core tile side),
            dividing ``C_in`` and ``C_out``.
        dtype: of the activations and weights (float16, bfloat16; float32 computes in IEEE float32, for tests).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, *, stride: int, group_size: int, dtype: torch.dtype
    ) -> None:
        c_out, c_in, kh, kw = weight.shape
        if kh != kw or kh not in (1, 3):
            raise ValueError(f"kernel must be 1x1 or 3x3, got {kh}x{kw}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if group_size not in (16, 32, 64) or c_in % group_size or c_out % group_size:
            raise UserError(f"GPU sparse execution needs policy_group_size 16, 32 or 64 dividing every fused conv's "
                            f"channels; got {group_size} for a {c_in} -> {c_out} conv")  # fmt: skip
        self.in_channels, self.out_channels, self.kernel_size = c_in, c_out, kh
        self.stride, self.padding, self.group_size = stride, kh // 2, group_size
        # (taps, C_in, C_out): for a tap and an input group, one contiguous (group, C_out) block of rows.
        self.weight = weight.detach().permute(2, 3, 1, 0).reshape(kh * kw, c_in, c_out).to(dtype).contiguous()
        self.bias = bias.detach().float().contiguous()
        self._configs: dict[tuple, _Config] = {}

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an ``h × w`` input."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def __call__(
        self,
        x: torch.Tensor,
        *,
        out: torch.Tensor,
        out_groups: torch.Tensor | None = None,
        sources: GroupSources | None = None,
        relu: bool = False,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the chosen output groups into ``out`` in place.

        Args:
            x: ``(S, C_in, H, W)`` channels_last: S source rows (frames).
            out: ``(B, C_out, Ho, Wo)`` channels_last; groups not computed are left untouched.
            out_groups: ``(B, C_out // group_size)`` bool or int8, the groups to compute; None: all.
            sources: the input groups each sample reads and from which row (:func:`compact_sources`); None: every
                group, from row b.
            relu: apply a ReLU (after the residual).
            residual: ``(B, C_out, Ho, Wo)`` channels_last, added before the ReLU.

        Returns:
            ``out``.
        """
        s, c_in, h, w = x.shape
        b, c_out, ho, wo = out.shape
        if c_in != self.in_channels or c_out != self.out_channels or (ho, wo) != self.output_size(h, w):
            raise ValueError(f"shapes {tuple(x.shape)} -> {tuple(out.shape)} do not fit this {self.in_channels} -> "
                             f"{self.out_channels}, stride-{self.stride} conv")  # fmt: skip
        for name, t in (("x", x), ("out", out), ("residual", residual)):
            if t is not None and not t.is_contiguous(memory_format=torch.channels_last):
                raise ValueError(f"{name} must be channels_last")
        gated = out_groups is not None
        key = (b, c_in, c_out, h, w, self.kernel_size, self.stride, gated, sources is None, x.dtype)
        config = self._configs.get(key)
        args = (x, self.weight, self.bias, out, out if residual is None else residual,
                out_groups.to(torch.int8) if gated else out, *(sources or (out, out, out)), h, w, ho, wo, c_in, c_out,
                c_in // self.group_size)  # fmt: skip
        meta = dict(K=self.kernel_size, STRIDE=self.stride, PAD=self.padding, GS=self.group_size, GATED_OUT=gated,
                    DENSE_IN=sources is None, HAS_RES=residual is not None, RELU=relu,
                    IEEE=x.dtype == torch.float32)  # fmt: skip
        if config is None:
            config = self._configs[key] = self._pick(args, meta, ho * wo, c_out, gated, x.device)
        self._launch(args, meta, config, ho * wo, c_out)
        return out

    def _launch(self, args: tuple, meta: dict, config: _Config, pixels: int, c_out: int) -> None:
        tiles = triton.cdiv(pixels, config.block_m)
        grid = (args[3].shape[0] * tiles, c_out // config.block_n)
        _group_conv_kernel[grid](*args, tiles, **meta, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                                 num_warps=config.num_warps, num_stages=config.num_stages)  # fmt: skip

    def _pick(self, args: tuple, meta: dict, pixels: int, c_out: int, gated: bool, device: torch.device) -> _Config:
        """The launch configuration of a layer shape: fixed small tiles in the interpreter; on a GPU the fastest of a
        few candidates, timed on this call's own inputs (the kernel only writes ``out``, so repeating it is safe)."""
        n_choices = [self.group_size] if gated else [n for n in (16, 32, 64, 128) if c_out % n == 0]
        if device.type != "cuda":  # the interpreter: as few programs as possible
            return _Config(block_m=min(1024, max(16, triton.next_power_of_2(pixels))), block_n=n_choices[-1],
                           num_warps=1, num_stages=1)  # fmt: skip
        from triton.testing import do_bench

        # Few candidates: each distinct tile shape is one more compilation (about a second) the first time.
        n_choices = n_choices if gated else [n for n in n_choices if n >= 32] or n_choices
        m_choices = sorted({min(m, max(16, triton.next_power_of_2(pixels))) for m in (64, 128)})
        candidates = [_Config(m, n, 8 if m * n >= 128 * 128 else 4, 3) for m in m_choices for n in n_choices]
        times = {c: do_bench(lambda c=c: self._launch(args, meta, c, pixels, c_out), warmup=5, rep=20)
                 for c in candidates}  # fmt: skip
        return min(times, key=times.get)
