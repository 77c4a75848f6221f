"""Group-sparse convolution kernels vs oneDNN: ResNet-50 layer shapes at 224 px (the table of docs/kernels.md).

    .venv/bin/python benchmarks/group_conv.py --out runs/group_conv            # everything: ~25 min on 2 cores
    .venv/bin/python benchmarks/group_conv.py --layers 3x3-256@14 --batch 1 --threads 1 --groups 32

For every layer, batch, thread count and group size, and each active share (output groups × input groups), the
time of :class:`~adafuse.inference.group_conv.GroupSparseConv` (random groups per sample, exactly the share) as a
ratio to the dense pre-packed oneDNN conv (``FoldedConv.dense``) on the same input, and to the ideal: oneDNN on
pre-sliced, pre-packed weights of the active size. The 100% × 100% row is the everything-kept call (no masks).
Min over interleaved, shuffled rounds, each call after an 8 MiB cache flush (wall clock, or with ``--clock cpu``
the calling thread's CPU time at 1 thread, which a loaded machine distorts less). Writes ``group_conv.json`` (every
measurement) and ``group_conv.md`` (the table, machine and command) to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _machine import describe_machine
from adafuse.inference.group_conv import GroupSparseConv
from adafuse.inference.kernels import FoldedConv, to_channels_last

# name -> (C_in, C_out, kernel, stride, input size): conv1 (1×1) and conv2 (3×3) of each stage's bottlenecks, and
# the stride-2 3×3 of each stage's first block (torchvision's ResNet-50 strides in the 3×3).
LAYERS = {
    "1x1-256>64@56": (256, 64, 1, 1, 56),
    "3x3-64@56": (64, 64, 3, 1, 56),
    "1x1-512>128@28": (512, 128, 1, 1, 28),
    "3x3-128@28": (128, 128, 3, 1, 28),
    "3x3s2-128@56": (128, 128, 3, 2, 56),
    "1x1-1024>256@14": (1024, 256, 1, 1, 14),
    "3x3-256@14": (256, 256, 3, 1, 14),
    "3x3s2-256@28": (256, 256, 3, 2, 28),
    "1x1-2048>512@7": (2048, 512, 1, 1, 7),
    "3x3-512@7": (512, 512, 3, 1, 7),
    "3x3s2-512@14": (512, 512, 3, 2, 14),
}
SHARES = ((1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (0.5, 0.5), (0.25, 0.25))


def folded(c_in: int, c_out: int, k: int, stride: int, gen: torch.Generator) -> FoldedConv:
    conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2 / (c_in * k * k)) ** 0.5)
    return FoldedConv(conv, None)


def active(share: float, groups: int) -> int:
    """Groups active at a share: the nearest whole number, at least one."""
    return max(1, int(share * groups + 0.5))


def exact_masks(batch: int, groups_out: int, groups_in: int, share: tuple[float, float], rng: np.random.Generator):
    """``out_groups (B, G_out)`` bool and ``in_source (B, G_in)`` (row b or -1), the same number of groups in every
    sample (:func:`active`), different groups per sample; None, None for everything kept."""
    if share == (1.0, 1.0):
        return None, None
    out_groups = np.zeros((batch, groups_out), dtype=bool)
    in_source = np.full((batch, groups_in), -1, dtype=np.int64)
    for b in range(batch):
        out_groups[b, rng.permutation(groups_out)[: active(share[0], groups_out)]] = True
        in_source[b, rng.permutation(groups_in)[: active(share[1], groups_in)]] = b
    return torch.from_numpy(out_groups), torch.from_numpy(in_source)


def min_times(runs: dict, *, rounds: int, flush_bytes: int, clock=time.perf_counter) -> dict[str, float]:
    """Seconds per call (min over interleaved, shuffled rounds, a cache flush before each call)."""
    flush = torch.empty(flush_bytes // 4)
    order = list(runs)
    for k in order:  # warm-up: weight packing, oneDNN primitives, micro-kernel generation
        runs[k]()
        runs[k]()
    times = {k: [] for k in order}
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for k in order:
            flush.fill_(r)
            start = clock()
            runs[k]()
            times[k].append(clock() - start)
    return {k: float(min(v)) for k, v in times.items()}


def measure_layer(
    name: str, *, batch: int, threads: int, groups: list[int], rounds: int, flush_bytes: int, clock
) -> list:
    c_in, c_out, k, stride, size = LAYERS[name]
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    dense = folded(c_in, c_out, k, stride, gen)
    x = to_channels_last(torch.randn(batch, c_in, size, size, generator=gen))
    out = to_channels_last(torch.zeros(dense.dense(x, relu=True).shape))
    runs = {"dense": lambda: dense.dense(x, relu=True)}
    sizes = {(active(o, c_out // g) * g, active(i, c_in // g) * g) for g in groups for o, i in SHARES}
    for n_out, n_in in sizes - {(c_out, c_in)}:  # the ideal: oneDNN on exactly the active channels
        ideal = folded(n_in, n_out, k, stride, gen)
        xi = to_channels_last(torch.randn(batch, n_in, size, size, generator=gen))
        runs[("ideal", n_out, n_in)] = lambda ideal=ideal, xi=xi: ideal.dense(xi, relu=True)
    for g in groups:
        conv = GroupSparseConv(dense.weight, dense.bias, stride=stride, padding=k // 2, group_size=g)
        for share in SHARES:
            og, src = exact_masks(batch, c_out // g, c_in // g, share, rng)
            runs[(g, share)] = lambda conv=conv, og=og, src=src: conv(
                x, out=out, out_groups=og, in_source=src, relu=True
            )
    with torch.inference_mode():
        t = min_times(runs, rounds=rounds, flush_bytes=flush_bytes, clock=clock)
    rows = []
    for g in groups:
        for share in SHARES:
            n_out, n_in = active(share[0], c_out // g) * g, active(share[1], c_in // g) * g
            ideal = t.get(("ideal", n_out, n_in), t["dense"])
            rows.append({
                "layer": name, "batch": batch, "threads": threads, "groups": g, "out_share": share[0],
                "in_share": share[1], "mac_share": n_out * n_in / (c_out * c_in), "kernel_ms": t[(g, share)] * 1e3,
                "dense_ms": t["dense"] * 1e3, "ideal_ms": ideal * 1e3, "kernel_vs_dense": t[(g, share)] / t["dense"],
                "kernel_vs_ideal": t[(g, share)] / ideal, "ideal_vs_dense": ideal / t["dense"],
            })  # fmt: skip
    return rows


def markdown_table(rows: list[dict]) -> str:
    """One line per (layer, batch, threads, groups); per share: kernel / dense (kernel / ideal), and the ideal's
    ratio to dense as [ideal / dense]."""
    head = "| layer | B | threads | groups | " + " | ".join(f"{o:.0%}×{i:.0%}" for o, i in SHARES) + " |"
    lines = [head, "|" + "---|" * (4 + len(SHARES))]
    keys = dict.fromkeys((r["layer"], r["batch"], r["threads"]) for r in rows)
    for layer, batch, threads in keys:
        cell = [r for r in rows if (r["layer"], r["batch"], r["threads"]) == (layer, batch, threads)]
        for g in dict.fromkeys(r["groups"] for r in cell):
            by = {(r["out_share"], r["in_share"]): r for r in cell if r["groups"] == g}
            vals = " | ".join(
                f"{by[s]['kernel_vs_dense']:.2f} ({by[s]['kernel_vs_ideal']:.2f}) [{by[s]['ideal_vs_dense']:.2f}]"
                for s in SHARES
            )
            lines.append(f"| {layer} | {batch} | {threads} | {g} | {vals} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--groups", nargs="+", type=int, default=[32, 16])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--flush-mb", type=int, default=8)
    p.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="cpu: the calling thread's CPU time at 1 thread (robust on a loaded machine; wall at 2 threads)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/group_conv"))
    args = p.parse_args()

    torch.set_flush_denormal(True)
    rows, start = [], time.time()
    for threads in args.threads:
        for batch in args.batch:
            for layer in args.layers:
                rows += measure_layer(
                    layer, batch=batch, threads=threads, groups=args.groups, rounds=args.rounds,
                    flush_bytes=args.flush_mb << 20,
                    clock=time.thread_time if args.clock == "cpu" and threads == 1 else time.perf_counter,
                )  # fmt: skip
                print(markdown_table([r for r in rows if r["layer"] == layer and r["batch"] == batch
                                      and r["threads"] == threads]).split("\n", 2)[2], flush=True)  # fmt: skip
    machine = f"{describe_machine()}; load average {os.getloadavg()[0]:.1f}; {time.time() - start:.0f} s"
    command = " ".join(["python benchmarks/group_conv.py", *sys.argv[1:]])
    table = markdown_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "group_conv.json").write_text(
        json.dumps({"machine": machine, "command": command, "results": rows}, indent=1)
    )
    (args.out / "group_conv.md").write_text(f"{table}\n\nMachine: {machine}\nCommand: `{command}`\n")
    print(f"\n{table}\n\nMachine: {machine}\nCommand: `{command}`")


if __name__ == "__main__":
    main()
