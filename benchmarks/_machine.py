"""What a benchmark ran on, in one line: processor, cores, GPU (when used), torch and Python versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's model name (Linux), else the architecture."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def describe_machine(*, gpu: bool = False) -> str:
    """E.g. ``"Intel(R) Xeon(R) Processor, 2 CPUs, torch 2.x, Python 3.11.9, Linux-..."`` (+ the GPU's name)."""
    parts = [cpu_name(), f"{os.cpu_count()} CPUs"]
    if gpu and torch.cuda.is_available():
        parts.insert(0, torch.cuda.get_device_name())
    return ", ".join([*parts, f"torch {torch.__version__}", f"Python {platform.python_version()}", platform.platform()])
