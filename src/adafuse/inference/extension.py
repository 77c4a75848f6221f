"""The executor's compiled CPU kernels: one small C++ extension, built with ninja on first use and cached.

Five ops, registered as ``torch.ops.adafuse_cpu``:

- ``group_conv`` (``csrc/group_conv.cpp``): the group-sparse convolutions of
  :class:`~adafuse.inference.group_conv.GroupSparseConv`;
- ``conv1x1`` (``csrc/conv1x1.cpp``): the dense 1×1 convolutions of
  :class:`~adafuse.inference.kernels.FoldedConv`, bias, residual and ReLU in registers;
- ``conv_rows`` (``csrc/conv_rows.cpp``): its thin-input convolutions (a ResNet stem) over a zero-padded input,
  optionally with the stem's max pool fused;
- ``mean_hw`` (``csrc/pool.cpp``): the global average pool of NHWC activations
  (:func:`~adafuse.inference.kernels.global_avg_pool`);
- ``policy`` (``csrc/policy.cpp``): a folded policy net, both layers and the arg-max in one call
  (:class:`~adafuse.inference.sparse.FoldedPolicy`).

``conv1x1``, ``conv_rows``, ``policy`` and the 3×3 group kernels of AVX-512 builds share one register-blocked
micro-kernel (``csrc/micro_tile.h``).

The build is cached in torch's extensions directory (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``); the first takes about half a minute, later processes load it. Without a compiler
(or with ``ADAFUSE_KERNELS=torch`` in the environment) the ops are absent and their callers run on PyTorch and
oneDNN with the same results: one warning says why the build failed.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import torch

ENV = "ADAFUSE_KERNELS"  # "torch": do not use the compiled kernels
_SOURCES = [Path(__file__).with_name("csrc") / name
            for name in ("group_conv.cpp", "conv1x1.cpp", "conv_rows.cpp", "pool.cpp", "policy.cpp")]  # fmt: skip


def extension_ops() -> object | None:
    """The compiled ops namespace (``torch.ops.adafuse_cpu``), built on first call; None when ``ADAFUSE_KERNELS``
    is ``torch`` or when it cannot be built (one warning per process)."""
    if os.environ.get(ENV) == "torch":
        return None
    return _build()


@functools.cache
def _build() -> object | None:
    path = os.environ.get("PATH", "")
    try:
        from torch.utils.cpp_extension import load

        try:  # the ninja package's binary, for a virtual environment that is used without being activated
            import ninja

            os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])
        except ImportError:
            pass

        # The micro-kernel of conv1x1 / conv_rows is AVX-512 or AVX2 + FMA intrinsics when the compiler is told the
        # machine has them (plain loops otherwise: AVX2 code runs at half the rate on a machine with full-width
        # AVX-512); the build is named after this machine's vector unit, so that machines sharing a cache directory
        # do not mix builds. at::parallel_for is an OpenMP pragma in ATen's headers: without
        # -fopenmp it compiles to one thread (torch's Linux wheels load libgomp.so.1, which the extension then shares).
        isa = torch.backends.cpu.get_cpu_capability()
        openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
        vector = {"AVX2": ["-mavx2", "-mfma"], "AVX512": ["-mavx2", "-mfma", "-mavx512f"]}.get(isa, [])
        flags = ["-O3", *openmp, *vector]
        load(
            name=f"adafuse_cpu_{isa.lower()}",
            sources=[str(s) for s in _SOURCES],
            extra_cflags=flags,
            extra_ldflags=openmp,
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, missing headers...: the PyTorch paths give the same results
        warnings.warn(
            f"adafuse: the compiled CPU kernels could not be built ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}); using the slower PyTorch paths",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    finally:
        os.environ["PATH"] = path
    return torch.ops.adafuse_cpu
