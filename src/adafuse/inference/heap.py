"""Keep freed heap memory in the process, so that an executor's activations are not page-faulted in on every call.

A clip of 8 frames through a ResNet-50 allocates and frees activation buffers of up to 26 MB per layer. glibc's
``malloc`` gives the top of its heap back to the operating system once more than its trim threshold lies free
there (and serves large requests from fresh mappings, ``mmap``), so the next call's buffers come back as new pages,
each zeroed by the kernel on first touch: 12–15 thousand page faults per ResNet-50 clip, ~7 % of its time in the
executor, in some processes and not others, depending on the heap's history (docs/speed.md).
:func:`retain_freed_memory` tells glibc to keep what it has: the resident size then stays at its peak, which is
what PyTorch's own launcher arranges with jemalloc or tcmalloc for inference servers. A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def retain_freed_memory() -> bool:
    """Ask glibc's ``malloc`` never to return freed memory to the system, nor to serve requests from ``mmap``
    (process-wide, once). Returns whether both settings took (False off glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # the largest trim threshold mallopt takes (an int); with no mmap'd chunks, every freed block stays in the heap
    trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))
    mmap = libc.mallopt(_M_MMAP_MAX, ctypes.c_int(0))
    return bool(trim and mmap)
