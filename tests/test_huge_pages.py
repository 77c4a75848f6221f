"""in_huge_pages: an equal copy on a 2 MiB boundary, backed by huge pages where the system gives them."""

import gc
import mmap
import re
from pathlib import Path

import pytest
import torch

from adafuse.inference.huge_pages import HUGE_PAGE, in_huge_pages

_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _huge_kib_at(address: int) -> int:
    """AnonHugePages of the mapping of this process that holds ``address`` (from /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        span = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            inside = int(span.group(1), 16) <= address < int(span.group(2), 16)
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_small_tensors_stay_where_they_are():
    t = torch.randn(1000)
    assert in_huge_pages(t) is t


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="Linux's madvise only")
def test_a_copy_in_huge_pages_outlives_its_source():
    t = torch.randn(3, 700_000)  # 8.4 MB: four 2 MiB pages and a piece
    copy = in_huge_pages(t)
    assert copy is not t and copy.shape == t.shape and copy.dtype == t.dtype and copy.is_contiguous()
    assert copy.data_ptr() % HUGE_PAGE == 0
    want = t.clone()
    del t
    gc.collect()
    assert torch.equal(copy, want)
    mode = _THP.read_text() if _THP.exists() else "[never]"
    if "[never]" not in mode:  # whole 2 MiB pages of the copy are huge pages (the kernel may lack free ones: >= 1)
        assert _huge_kib_at(copy.data_ptr()) >= HUGE_PAGE // 1024
