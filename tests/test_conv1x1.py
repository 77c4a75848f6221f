"""FoldedConv's dense 1×1 path (the compiled micro-kernel) against F.conv2d: shapes with every kind of tail,
strides, ReLU / residual / in place, the fused pool, threads; and the oneDNN path that runs without the extension."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adafuse.inference import extension
from adafuse.inference.kernels import FoldedConv, global_avg_pool, to_channels_last
from conftest import HAS_COMPILER


def folded(c_in: int, c_out: int, stride: int, seed: int) -> FoldedConv:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=True)
    bn = nn.BatchNorm2d(c_out)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    return FoldedConv(conv, bn.eval())


# (C_in, C_out, H, W, batch): K under, at and over the 256-channel reduction slice (272, 520: a short last slice);
# odd maps (partial micro-tiles: 600 pixels, two blocks per sample); maps under 256 pixels, whose samples share a
# work item (3 samples of 35 pixels and 7 of 12: one group each; 5 of 100: groups of 3 and 2, the last short);
# C_out of 16 (one panel) to 80.
SHAPES = [(8, 16, 5, 7, 3), (48, 80, 6, 6, 1), (272, 32, 3, 5, 2), (520, 48, 4, 4, 2), (16, 32, 20, 30, 2),
          (24, 64, 3, 4, 7), (40, 32, 10, 10, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_dense_1x1_equals_conv2d(backend, shape, stride):
    c_in, c_out, h, w, batch = shape
    conv = folded(c_in, c_out, stride, seed=c_in + stride)
    assert (conv._ops is not None) == (backend == "extension")
    x = to_channels_last(torch.randn(batch, c_in, h, w))
    y = F.conv2d(x, conv.weight, conv.bias, stride)
    residual = to_channels_last(torch.randn_like(y))
    for relu in (False, True):
        out = conv.dense(x, relu=relu)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, y.relu() if relu else y, rtol=1e-5, atol=1e-5)
    expected = (y + residual).relu()
    kept = residual.clone()
    torch.testing.assert_close(conv.dense(x, relu=True, residual=residual), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(residual, kept), "without in_place the residual is left as it was"
    out, mean = conv.dense_and_mean(x, relu=True, residual=residual, in_place=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, expected.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)
    if backend == "extension":  # the kernel wrote into the residual's buffer
        assert out.data_ptr() == residual.data_ptr()


def test_dense_1x1_is_the_same_on_two_threads(backend):
    conv = folded(64, 96, 1, seed=3)
    x = to_channels_last(torch.randn(4, 64, 9, 11))
    residual = to_channels_last(torch.randn(4, 96, 9, 11))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv.dense_and_mean(x, relu=True, residual=residual)
        torch.set_num_threads(2)
        two = conv.dense_and_mean(x, relu=True, residual=residual)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)


def test_other_convolutions_run_on_onednn():
    """C_out off the 16-channel panel, or a 3×3 over more than 64 values per kernel row: oneDNN, with the pool
    computed after it."""
    for conv in (folded(16, 24, 1, seed=0), FoldedConv(nn.Conv2d(24, 32, 3, padding=1), None)):
        assert conv._ops is None
        x = to_channels_last(torch.randn(2, conv.in_channels, 5, 5))
        y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
        out, mean = conv.dense_and_mean(x, relu=True)
        torch.testing.assert_close(out, y.relu(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mean, global_avg_pool(y.relu()), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler")
def test_kernel_checks_its_inputs(monkeypatch):
    monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
    conv = folded(16, 32, 1, seed=0)
    ops = extension.extension_ops()
    x = to_channels_last(torch.randn(2, 16, 4, 4))
    out = to_channels_last(torch.empty(2, 32, 4, 4))
    with pytest.raises(RuntimeError, match="channels_last"):
        ops.conv1x1(x.contiguous(), conv._panels, conv.bias, out, None, None, 1, True, 256)
    with pytest.raises(RuntimeError, match="wrong size"):
        ops.conv1x1(x, conv._panels, conv.bias, to_channels_last(torch.empty(2, 32, 3, 3)), None, None, 1, True, 256)
    with pytest.raises(RuntimeError, match="mean"):
        ops.conv1x1(x, conv._panels, conv.bias, out, None, torch.empty(2, 16), 1, True, 256)
