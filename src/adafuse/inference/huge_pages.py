"""Packed weights in 2 MiB pages, so that streaming them from memory is not cut into 4 KiB pieces.

At batch 1 (streaming) every weight of a ResNet is read from memory once per frame, for one frame's pixels: a
ResNet-18's 45 MB and a ResNet-50's 100 MB do not stay in the caches between frames. In 4 KiB pages the hardware
prefetchers stop at every page boundary (64 cache lines) and each page costs a TLB entry; Linux backs a mapping
with 2 MiB pages when asked (``madvise(MADV_HUGEPAGE)``, transparent huge pages in ``madvise`` or ``always``
mode), which PyTorch's own allocator does only under ``THP_MEM_ALLOC_ENABLE=1`` set before it starts. The executor
copies its packed weights of 2 MiB or more into such mappings: 0.98-0.99 of the time of a streaming frame, paired
in one process (docs/speed.md).
"""

from __future__ import annotations

import mmap

import torch

HUGE_PAGE = 2 << 20  # bytes


def in_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of CPU tensor ``t`` (same shape and dtype) in a private mapping advised to be backed by
    2 MiB pages, starting on a 2 MiB boundary; ``t`` itself when it is smaller than 2 MiB or the system has no
    such advice (not Linux, or transparent huge pages off). The copy keeps its mapping alive."""
    nbytes = t.numel() * t.element_size()
    if nbytes < HUGE_PAGE or t.device.type != "cpu" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return t
    # one page of slack, so that a 2 MiB boundary lies inside; the slack is never touched, so never resident
    mapping = mmap.mmap(-1, -(-nbytes // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE,
                        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # fmt: skip
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # EINVAL: a kernel without transparent huge pages
        return t
    raw = torch.frombuffer(mapping, dtype=torch.uint8)  # holds a reference to the mapping
    start = -raw.data_ptr() % HUGE_PAGE
    out = raw[start : start + nbytes].view(t.dtype).view(t.shape)
    return out.copy_(t)
