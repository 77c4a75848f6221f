"""Shared fixtures: tiny models and clips (CPU, seconds)."""

import os
import shutil

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton kernels run in Triton's CPU interpreter; set before any test module can import Triton's runtime,
    # which reads it once (tests/test_gpu_executor.py).
    os.environ["TRITON_INTERPRET"] = "1"

from adafuse.layers import KEEP, REUSE, SKIP, AdaptiveFusion

HAS_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.fixture(params=["extension", "torch"])
def backend(request, monkeypatch):
    """Runs a test on the compiled CPU kernels (built on first use; must build where there is a compiler) and on
    the PyTorch / oneDNN paths that run without them."""
    from adafuse.inference import extension

    if request.param == "torch":
        monkeypatch.setenv("ADAFUSE_KERNELS", "torch")
    else:
        monkeypatch.delenv("ADAFUSE_KERNELS", raising=False)
        if not HAS_COMPILER:
            pytest.skip("no C++ compiler: the extension cannot be built here")
        assert extension.extension_ops() is not None, "the extension failed to build"
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_clip(n: int = 2, t: int = 3, size: int = 32) -> torch.Tensor:
    """A random clip batch (N, T, 3, H, W)."""
    return torch.randn(n, t, 3, size, size)


def force_policy(model: torch.nn.Module, action: int) -> None:
    """Make every AdaptiveFusion of ``model`` choose ``action`` for all channels (via its last bias)."""
    for m in model.modules():
        if isinstance(m, AdaptiveFusion):
            fc1 = m.policy.fc1
            with torch.no_grad():
                fc1.weight.zero_()
                bias = torch.full((m.decisions, len(m.actions)), -10.0)
                bias[:, m.actions.index(action)] = 10.0
                fc1.bias.copy_(bias.flatten())


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP's spinning makes two threads 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_all_keep_equals_reference(dense: torch.nn.Module, ada: torch.nn.Module, *, size: int) -> None:
    """An AdaFuse model loaded with ``dense``'s weights equals it exactly with all-keep policies, costs the
    dense MACs then, and less with all-skip policies (2 videos × 3 frames × ``size`` px, 5 classes)."""
    from adafuse.flops import adaptive_macs, profile

    dense.eval()
    ada.eval()
    assert ada.load_state_dict(dense.state_dict(), strict=False).missing_keys
    table = profile(ada, input_size=size)
    x = tiny_clip(size=size)
    out = dense(x)
    assert out.shape == (2, 5)
    force_policy(ada, KEEP)
    logits, policies = ada.forward_with_policies(x)
    assert torch.equal(logits, out)
    assert adaptive_macs(policies, table, batch_size=2).tolist() == [table.dense_macs] * 2
    force_policy(ada, SKIP)
    policies = ada.forward_with_policies(x)[1]
    assert (adaptive_macs(policies, table, batch_size=2) < table.dense_macs).all()


__all__ = ["KEEP", "REUSE", "SKIP", "assert_all_keep_equals_reference", "force_policy", "one_thread", "tiny_clip"]
