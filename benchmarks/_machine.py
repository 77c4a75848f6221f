"""What a benchmark ran on, in one line: processor, cores, GPU (when used), torch and Python versions; and how a
benchmark writes its report."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch


def _cpuinfo() -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (Linux; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in info.read_text().splitlines() if info.is_file() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The processor's model name, family and model (Linux), else the architecture: VMs often report only a brand
    ("AMD EPYC"), and the machine kind behind it changes between sessions."""
    info = _cpuinfo()
    name = info.get("model name")
    if name is None:
        return platform.processor() or platform.machine()
    family, model = info.get("cpu family"), info.get("model")
    return f"{name} (family {family} model {model})" if family and model else name


def cpu_caches() -> str:
    """Per-core L2 and shared L3 sizes of CPU 0 (Linux sysfs), e.g. ``"L2 1024K, L3 32768K"``; empty if unknown."""
    sizes = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, size = (index / "level").read_text().strip(), (index / "size").read_text().strip()
        except OSError:
            continue
        if level in ("2", "3"):
            sizes.append(f"L{level} {size}")
    return ", ".join(sizes)


def describe_machine(*, gpu: bool = False) -> str:
    """E.g. ``"AMD EPYC (family 26 model 2), 2 CPUs, AVX512, L2 1024K, L3 32768K, torch 2.x, Python 3.11.9, Linux-..."``
    (+ the GPU's name): the processor, its vector unit as torch dispatches to it, the caches."""
    parts = [cpu_name(), f"{os.cpu_count()} CPUs", torch.backends.cpu.get_cpu_capability()]
    caches = cpu_caches()
    if caches:
        parts.append(caches)
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
