"""GroupSparseConv: both back ends against F.conv2d on the masked input, in-place semantics, errors, the fallback."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adafuse.inference import extension
from adafuse.inference.group_conv import GroupSparseConv
from adafuse.inference.kernels import FoldedConv, to_channels_last
from conftest import HAS_COMPILER


def reference(x, weight, bias, *, stride, out0, out_groups, in_source, relu, residual, group_size):
    """F.conv2d over the input where sample b's group q is x[in_source[b, q], group q] (zeros for -1)."""
    b, g = out0.shape[0], group_size
    xin = torch.zeros(b, *x.shape[1:])
    for i in range(b):
        for q in range(x.shape[1] // g):
            row = i if in_source is None else int(in_source[i, q])
            if row >= 0:
                xin[i, q * g : (q + 1) * g] = x[row, q * g : (q + 1) * g]
    y = F.conv2d(xin, weight, bias, stride, weight.shape[-1] // 2)
    if residual is not None:
        y = y + residual
    if relu:
        y = y.relu()
    if out_groups is None:
        return y
    return torch.where(out_groups.repeat_interleave(g, dim=1)[:, :, None, None], y, out0)


def nhwc(*shape, gen):
    return to_channels_last(torch.randn(*shape, generator=gen))


def check(conv, x, *, out_groups, in_source, relu=False, residual=None, batch, gen):
    ho, wo = conv.output_size(*x.shape[2:])
    out0 = nhwc(batch, conv.out_channels, ho, wo, gen=gen)
    out = out0.clone()
    result = conv(x, out=out, out_groups=out_groups, in_source=in_source, relu=relu, residual=residual)
    assert result is out and out.is_contiguous(memory_format=torch.channels_last)
    want = reference(
        x, conv.weight, conv.bias, stride=conv.stride, out0=out0, out_groups=out_groups, in_source=in_source,
        relu=relu, residual=residual, group_size=conv.group_size,
    )  # fmt: skip
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    if out_groups is not None:  # groups not computed: bit-identical to what out held
        skipped = ~out_groups.repeat_interleave(conv.group_size, dim=1)
        assert torch.equal(out.permute(0, 2, 3, 1)[skipped[:, None, None, :].expand(-1, ho, wo, -1)],
                           out0.permute(0, 2, 3, 1)[skipped[:, None, None, :].expand(-1, ho, wo, -1)])  # fmt: skip


GEOMETRIES = [(1, 1), (1, 2), (3, 1), (3, 2)]


@pytest.mark.parametrize("kernel,stride", GEOMETRIES)
@pytest.mark.parametrize("group_size", [8, 16, 32])
@pytest.mark.parametrize("size", [7, 8])
def test_random_masks_other_rows_residual_relu(backend, kernel, stride, group_size, size):
    gen = torch.Generator().manual_seed(kernel * 100 + stride * 10 + group_size + size)
    c_in, c_out, rows, batch = 64, 96, 4, 3
    conv = GroupSparseConv(
        torch.randn(c_out, c_in, kernel, kernel, generator=gen), torch.randn(c_out, generator=gen),
        stride=stride, padding=kernel // 2, group_size=group_size,
    )  # fmt: skip
    assert conv.backend == backend
    x = nhwc(rows, c_in, size, size, gen=gen)
    ho, wo = conv.output_size(size, size)
    out_groups = torch.rand(batch, c_out // group_size, generator=gen) < 0.5
    in_source = torch.randint(-1, rows, (batch, c_in // group_size), generator=gen)  # any row, -1 = skip
    residual = nhwc(batch, c_out, ho, wo, gen=gen)
    check(conv, x, out_groups=out_groups, in_source=in_source, relu=True, residual=residual, batch=batch, gen=gen)
    check(conv, x, out_groups=out_groups, in_source=in_source, batch=batch, gen=gen)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("group_size", [16, 32, 64])
@pytest.mark.parametrize("size", [1, 2, 7, 8, 15])
def test_every_input_group_read_in_place(backend, stride, group_size, size):
    """sparse_input=False (a block's conv1: chosen output groups, every input group of the sample's own row): on
    the register tile a 3×3 reads its input in place, tap by tap, with tap-major weights; the padding, maps smaller
    than the kernel, more rows in x than samples, the residual written over and the pool are checked."""
    gen = torch.Generator().manual_seed(stride * 1000 + group_size * 10 + size)
    c_in, c_out, batch = 128, 128, 3
    conv = GroupSparseConv(torch.randn(c_out, c_in, 3, 3, generator=gen), torch.randn(c_out, generator=gen),
                           stride=stride, padding=1, group_size=group_size, sparse_input=False)  # fmt: skip
    x = nhwc(batch + 1, c_in, size, size, gen=gen)
    ho, wo = conv.output_size(size, size)
    out_groups = torch.rand(batch, c_out // group_size, generator=gen) < 0.6
    residual = nhwc(batch, c_out, ho, wo, gen=gen)
    check(conv, x, out_groups=out_groups, in_source=None, relu=True, residual=residual, batch=batch, gen=gen)
    check(conv, x, out_groups=None, in_source=None, batch=batch, gen=gen)
    want = reference(x, conv.weight, conv.bias, stride=stride, out0=residual, out_groups=None, in_source=None,
                     relu=True, residual=residual, group_size=group_size)  # fmt: skip
    in_place, mean = residual.clone(), torch.full((batch, c_out), float("nan"))
    conv(x, out=in_place, out_groups=None, in_source=None, relu=True, residual=in_place, mean=mean)
    torch.testing.assert_close(in_place, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    torch.testing.assert_close(mean, want.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="in_source must be None"):
        conv(x, out=in_place, out_groups=None, in_source=torch.zeros(batch, c_in // group_size, dtype=torch.long))


@pytest.mark.skipif(not HAS_COMPILER, reason="needs a C++ compiler")
def test_which_reduction_a_3x3_runs_on():
    """With AVX-512 a 3×3 over groups of 32 or 64 channels reduces on the extension's own 7 × 32 micro-tile (the
    tests above then check it); otherwise, and for every 1×1, on oneDNN's brgemm."""
    ops = extension.extension_ops()
    avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    assert [ops.group_conv_on_tiles(k, g) for k, g in ((3, 32), (3, 64), (3, 16), (3, 8), (1, 32))] == [
        avx512, avx512, False, False, False]  # fmt: skip


@pytest.mark.parametrize("kernel,stride", GEOMETRIES)
@pytest.mark.parametrize("group_size", [16, 32, 64])
def test_long_reductions_and_many_samples(backend, kernel, stride, group_size):
    """320 input channels (longer than a 3×3 reduction chunk: several chunks per output group; sample 0 reads all
    of them from its own row, one run) and 45 samples of 5×5 maps."""
    gen = torch.Generator().manual_seed(kernel * 10 + stride + group_size)
    c_in, c_out, batch = 320, 64, 45
    conv = GroupSparseConv(
        torch.randn(c_out, c_in, kernel, kernel, generator=gen), torch.randn(c_out, generator=gen),
        stride=stride, padding=kernel // 2, group_size=group_size,
    )  # fmt: skip
    x = nhwc(batch, c_in, 5, 5, gen=gen)
    ho, wo = conv.output_size(5, 5)
    in_source = torch.randint(-1, batch, (batch, c_in // group_size), generator=gen)
    in_source[0] = 0
    out_groups = torch.rand(batch, c_out // group_size, generator=gen) < 0.7
    residual = nhwc(batch, c_out, ho, wo, gen=gen)
    check(conv, x, out_groups=out_groups, in_source=in_source, relu=True, residual=residual, batch=batch, gen=gen)


@pytest.mark.parametrize("kernel,stride", GEOMETRIES)
def test_mean_of_the_output(backend, kernel, stride):
    """With every output group computed, the call also fills the output's global average pool (summed in the
    epilogue, over blocks of rows: a 20×20 map is two blocks), also when the output is written over the residual;
    with chosen output groups it refuses to."""
    gen = torch.Generator().manual_seed(kernel * 3 + stride)
    conv = GroupSparseConv(torch.randn(64, 32, kernel, kernel, generator=gen), torch.randn(64, generator=gen),
                           stride=stride, padding=kernel // 2, group_size=16)  # fmt: skip
    x = nhwc(4, 32, 20, 20, gen=gen)
    ho, wo = conv.output_size(20, 20)
    in_source = torch.randint(-1, 4, (3, 2), generator=gen)
    residual = nhwc(3, 64, ho, wo, gen=gen)
    out, mean = to_channels_last(torch.empty(3, 64, ho, wo)), torch.full((3, 64), float("nan"))
    conv(x, out=out, out_groups=None, in_source=in_source, relu=True, residual=residual, mean=mean)
    want = reference(x, conv.weight, conv.bias, stride=stride, out0=out, out_groups=None, in_source=in_source,
                     relu=True, residual=residual, group_size=16)  # fmt: skip
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    torch.testing.assert_close(mean, want.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    in_place, mean2 = residual.clone(), torch.full((3, 64), float("nan"))  # out is the residual (the executor's)
    conv(x, out=in_place, out_groups=None, in_source=in_source, relu=True, residual=in_place, mean=mean2)
    torch.testing.assert_close(in_place, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    torch.testing.assert_close(mean2, mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mean"):
        conv(x, out=out, out_groups=torch.ones(3, 4, dtype=torch.bool), in_source=in_source, mean=mean)


@pytest.mark.parametrize("kernel,stride", GEOMETRIES)
def test_two_threads_compute_the_same(backend, kernel, stride):
    """The extension is built with OpenMP: its work items really run on two threads, and must agree with one."""
    gen = torch.Generator().manual_seed(kernel + stride)
    conv = GroupSparseConv(torch.randn(64, 32, kernel, kernel, generator=gen), torch.randn(64, generator=gen),
                           stride=stride, padding=kernel // 2, group_size=8)  # fmt: skip
    x = nhwc(3, 32, 9, 9, gen=gen)
    out_groups = torch.rand(3, 8, generator=gen) < 0.5
    in_source = torch.randint(-1, 3, (3, 4), generator=gen)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = to_channels_last(torch.zeros(3, 64, *conv.output_size(9, 9)))
            outs.append(conv(x, out=out, out_groups=out_groups, in_source=in_source, relu=True))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    check(conv, x, out_groups=out_groups, in_source=in_source, relu=True, batch=3, gen=gen)


@pytest.mark.parametrize("kernel,stride", GEOMETRIES)
def test_all_and_no_groups(backend, kernel, stride):
    gen = torch.Generator().manual_seed(kernel + stride)
    c, g, batch = 32, 8, 2
    conv = GroupSparseConv(torch.randn(c, c, kernel, kernel, generator=gen), torch.randn(c, generator=gen),
                           stride=stride, padding=kernel // 2, group_size=g)  # fmt: skip
    x = nhwc(batch, c, 6, 5, gen=gen)  # non-square
    every, none = torch.ones(batch, c // g, dtype=torch.bool), torch.zeros(batch, c // g, dtype=torch.bool)
    keep, skip = torch.arange(batch)[:, None].repeat(1, c // g), torch.full((batch, c // g), -1)
    check(conv, x, out_groups=None, in_source=None, relu=True, batch=batch, gen=gen)  # everything kept
    check(conv, x, out_groups=every, in_source=keep, batch=batch, gen=gen)  # the same, spelled out
    check(conv, x, out_groups=none, in_source=keep, batch=batch, gen=gen)  # nothing computed: out untouched
    check(conv, x, out_groups=every, in_source=skip, relu=True, batch=batch, gen=gen)  # all skipped: bias only
    # REUSE as the executor uses it: sample t reads its odd groups from row t - 1 (the first sample keeps)
    reuse = keep - (torch.arange(c // g) % 2)[None, :] * (torch.arange(batch)[:, None] > 0)
    check(conv, x, out_groups=every, in_source=reuse, batch=batch, gen=gen)


def test_tiny_maps(backend):
    """1×1 and 2×2 maps: every 3×3 tap but the centre reads padding."""
    gen = torch.Generator().manual_seed(3)
    for size, stride in [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2)]:
        conv = GroupSparseConv(torch.randn(16, 16, 3, 3, generator=gen), torch.randn(16, generator=gen),
                               stride=stride, padding=1, group_size=8)  # fmt: skip
        src = torch.tensor([[0, -1], [0, 1]])
        check(conv, nhwc(2, 16, size, size, gen=gen), out_groups=torch.tensor([[True, False], [True, True]]),
              in_source=src, relu=True, batch=2, gen=gen)  # fmt: skip


def test_everything_kept_equals_the_dense_engine(backend):
    """The everything-kept call gives what FoldedConv.dense (oneDNN, BatchNorm folded) gives."""
    gen = torch.Generator().manual_seed(5)
    conv2d, bn = nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64).eval()
    with torch.no_grad():
        bn.running_mean.normal_(generator=gen)
        bn.running_var.uniform_(0.5, 2, generator=gen)
    folded = FoldedConv(conv2d, bn)
    conv = GroupSparseConv(folded.weight, folded.bias, stride=2, padding=1, group_size=16)
    x = nhwc(2, 32, 9, 9, gen=gen)
    residual = nhwc(2, 64, 5, 5, gen=gen)
    want = folded.dense(x, relu=True, residual=residual)
    out = conv(x, out=to_channels_last(torch.empty(2, 64, 5, 5)), out_groups=None, in_source=None, relu=True,
               residual=residual)  # fmt: skip
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_bad_arguments(backend):
    w, b = torch.randn(32, 16, 3, 3), torch.randn(32)
    with pytest.raises(ValueError, match="group_size"):
        GroupSparseConv(w, b, stride=1, padding=1, group_size=12)
    with pytest.raises(ValueError, match="padding"):
        GroupSparseConv(w, b, stride=1, padding=0, group_size=8)
    with pytest.raises(ValueError, match="stride"):
        GroupSparseConv(w, b, stride=3, padding=1, group_size=8)
    with pytest.raises(ValueError, match="kernel"):
        GroupSparseConv(torch.randn(32, 16, 5, 5), b, stride=1, padding=2, group_size=8)
    conv = GroupSparseConv(w, b, stride=1, padding=1, group_size=8)
    x, out = to_channels_last(torch.randn(2, 16, 4, 4)), to_channels_last(torch.zeros(2, 32, 4, 4))
    with pytest.raises(RuntimeError, match="in_source"):
        conv(x, out=out, out_groups=None, in_source=torch.tensor([[0, 2], [0, 1]]))  # row 2 of a 2-row x


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler")
def test_extension_checks_its_inputs(monkeypatch):
    monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
    conv = GroupSparseConv(torch.randn(32, 16, 1, 1), torch.randn(32), stride=1, padding=0, group_size=8)
    x, out = to_channels_last(torch.randn(2, 16, 4, 4)), to_channels_last(torch.zeros(2, 32, 4, 4))
    with pytest.raises(RuntimeError, match="channels_last"):
        conv(x.contiguous(), out=out, out_groups=None, in_source=None)
    with pytest.raises(RuntimeError, match="spatial size"):
        conv(x, out=to_channels_last(torch.zeros(2, 32, 3, 3)), out_groups=None, in_source=None)
    with pytest.raises(RuntimeError, match="out_groups"):
        conv(x, out=out, out_groups=torch.ones(2, 3, dtype=torch.bool), in_source=None)


def test_build_failure_falls_back_with_one_warning(monkeypatch):
    """Without a working compiler the PyTorch path runs, with exactly one warning for the process."""
    import torch.utils.cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    extension._build.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            convs = [GroupSparseConv(torch.randn(16, 16, 1, 1), torch.randn(16), stride=1, padding=0, group_size=8)
                     for _ in range(3)]  # fmt: skip
        assert [c.backend for c in convs] == ["torch"] * 3
        assert len(caught) == 1 and "could not be built" in str(caught[0].message)
        gen = torch.Generator().manual_seed(0)
        check(convs[0], nhwc(2, 16, 3, 3, gen=gen), out_groups=torch.tensor([[True, False], [False, True]]),
              in_source=torch.tensor([[1, -1], [0, 1]]), batch=2, gen=gen)  # fmt: skip
    finally:
        extension._build.cache_clear()  # later tests load the real extension again
