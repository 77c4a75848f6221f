"""What a benchmark ran on, in one line: processor, cores, GPU (when used), torch and Python versions; and how a
benchmark writes its report."""

from __future__ import annotations

import json
import os
import platform
import sys
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


def write_report(out: Path, name: str, report: dict, table: str, *, argv: list[str] | None, gpu: bool = False) -> None:
    """Add the machine and the command to ``report``, write ``OUT/NAME.json`` and ``OUT/NAME.md`` (the markdown
    ``table`` with both), print the JSON on stdout and the table on stderr."""
    report["machine"] = describe_machine(gpu=gpu)
    report["command"] = " ".join([f"python benchmarks/{name}.py", *(argv if argv is not None else sys.argv[1:])])
    text = f"{table}\n\nMachine: {report['machine']}\nCommand: `{report['command']}`\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(text)
    print(json.dumps(report))
    print(f"\n{text}", file=sys.stderr)
