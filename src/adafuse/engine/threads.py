"""How many torch CPU threads a process should use next to its loader workers."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity, which containers and ``taskset`` restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(*, workers: int, processes: int = 1) -> int:
    """Torch threads that leave a CPU to each loader worker: ``CPUs / processes - workers``, at least 1.

    Torch's own default (one thread per core) makes compute threads and loader workers fight for the cores; on
    a busy 2-core machine that made a demo-config training 13x slower (docs/training.md)."""
    return max(1, available_cpus() // max(1, processes) - workers)
