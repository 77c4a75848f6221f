"""FoldedConv's thin-input path (the compiled row kernel: a ResNet stem) against F.conv2d, and the op itself on
the geometries FoldedConv does not send it (long kernel rows, several reduction slices)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adafuse.inference import extension
from adafuse.inference.kernels import FoldedConv, to_channels_last
from conftest import HAS_COMPILER


def conv_bn(c_in, c_out, kernel, stride, padding, seed):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(c_out)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), bn.eval()


# (C_in, C_out, kernel, stride, padding, H, W, batch): the ResNet stem at two odd sizes (partial micro-tiles, two
# blocks per sample), a 3×3 stride 1 over RGB, a rectangular kernel, 16 output channels (one panel).
GEOMETRIES = [
    (3, 64, 7, 2, 3, 23, 29, 2),
    (3, 32, 7, 2, 3, 40, 40, 1),
    (3, 16, 3, 1, 1, 9, 7, 3),
    (4, 48, (3, 5), 1, (1, 2), 8, 10, 2),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_thin_convolutions_equal_conv2d(backend, geometry):
    c_in, c_out, kernel, stride, padding, h, w, batch = geometry
    conv2d, bn = conv_bn(c_in, c_out, kernel, stride, padding, seed=c_out)
    folded = FoldedConv(conv2d, bn)
    assert (folded._kernel == "conv_rows") == (backend == "extension")
    x = to_channels_last(torch.randn(batch, c_in, h, w))
    with torch.no_grad():
        y = bn(conv2d(x))
    residual = to_channels_last(torch.randn_like(y))
    for relu in (False, True):
        out = folded.dense(x, relu=relu)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, y.relu() if relu else y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded.dense(x, relu=True, residual=residual), (y + residual).relu(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    out, mean = folded.dense_and_mean(x, relu=True)
    torch.testing.assert_close(mean, y.relu().mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(23, 29), (40, 40), (70, 9), (2, 2)])
@pytest.mark.parametrize("batch", [1, 3])
def test_stem_with_the_max_pool_equals_conv2d_relu_max_pool(backend, size, batch):
    """The pool fused into the row kernel: bands of 8 pooled rows (70 px: 18 pooled rows, three bands, the last
    short), odd and tiny maps; the input in NCHW memory, as frames come."""
    conv2d, bn = conv_bn(3, 64, 7, 2, 3, seed=batch)
    folded = FoldedConv(conv2d, bn)
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        want = F.max_pool2d(bn(conv2d(x)).relu(), 3, 2, 1)
    out = folded.dense_max_pool(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def pack(weight):
    """(C_out, C_in, kh, kw) -> the op's (C_out / 16, kh · kw · C_in, 16) panels."""
    n, c, kh, kw = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(n // 16, 16, kh * kw * c).transpose(1, 2).contiguous()


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler")
@pytest.mark.parametrize("c_in,kernel,stride", [(40, 7, 1), (100, 3, 2), (3, 15, 1)])
def test_slices_of_long_and_many_rows(monkeypatch, c_in, kernel, stride):
    """Kernel rows of 280 and 300 values (windows of 256 within a row) and 15 rows of 45 values (two slices of
    rows); one and two threads."""
    monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
    ops = extension.extension_ops()
    gen = torch.Generator().manual_seed(c_in)
    weight, bias = torch.randn(32, c_in, kernel, kernel, generator=gen), torch.randn(32, generator=gen)
    x = torch.randn(2, c_in, 17, 16, generator=gen)
    want = F.conv2d(x, weight, bias, stride, kernel // 2)
    residual = to_channels_last(torch.randn_like(want))
    threads = torch.get_num_threads()
    try:
        for n, layout in ((1, torch.contiguous_format), (2, torch.channels_last)):  # any input layout
            torch.set_num_threads(n)
            out = to_channels_last(torch.empty_like(want))
            ops.conv_rows(x.contiguous(memory_format=layout), pack(weight), bias, out, residual, kernel, kernel,
                          stride, kernel // 2, kernel // 2, True, False, 64)  # fmt: skip
            torch.testing.assert_close(out, (want + residual).relu(), rtol=1e-4, atol=1e-4 * want.abs().max().item())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler")
def test_row_kernel_checks_its_inputs(monkeypatch):
    monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
    ops = extension.extension_ops()
    w, b = pack(torch.randn(16, 3, 3, 3)), torch.randn(16)
    x = torch.randn(1, 3, 6, 6)
    with pytest.raises(RuntimeError, match="channels_last"):
        ops.conv_rows(x, w, b, torch.empty(1, 16, 6, 6), None, 3, 3, 1, 1, 1, True, False, 64)
    with pytest.raises(RuntimeError, match="wrong size"):
        ops.conv_rows(x, w, b, to_channels_last(torch.empty(1, 16, 5, 6)), None, 3, 3, 1, 1, 1, True, False, 64)
    with pytest.raises(RuntimeError, match="residual cannot"):
        out = to_channels_last(torch.empty(1, 16, 3, 3))
        ops.conv_rows(x, w, b, out, out, 3, 3, 1, 1, 1, True, True, 64)
    with pytest.raises(RuntimeError, match="packed weight"):
        ops.conv_rows(x, w[:, :20], b, to_channels_last(torch.empty(1, 16, 6, 6)), None, 3, 3, 1, 1, 1, True, False,
                      64)  # fmt: skip
