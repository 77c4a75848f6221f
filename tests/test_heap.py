"""retain_freed_memory: after it, freeing and re-allocating a large buffer faults in no new pages."""

import platform
import subprocess
import sys

import pytest

from adafuse.inference import heap

_SCRIPT = """
import importlib.util, resource, sys
if sys.argv[1] == "retain":  # the module alone, without the package (and torch) around it
    spec = importlib.util.spec_from_file_location("heap", sys.argv[2])
    heap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heap)
    assert heap.retain_freed_memory()
faults = []
for _ in range(4):  # 48 MB: above glibc's largest mmap threshold, so each one is a fresh mapping by default
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = bytearray(48 * 2**20)  # zero-filled: every page touched (NumPy would ask for huge pages)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _faults_after_first(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, heap.__file__], check=True, capture_output=True, text=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retained_memory_is_not_faulted_in_again():
    pages = 3 * 48 * 2**20 // 4096  # three re-allocations of 48 MB in 4 KiB pages
    assert _faults_after_first("plain") > pages // 2  # the default: every allocation maps and faults in new pages
    assert _faults_after_first("retain") < pages // 20
