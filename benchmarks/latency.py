"""Sparse AdaFuse against the fastest dense TSN engine, clip mode and streaming (the tables of docs/speed.md).

    .venv/bin/python benchmarks/latency.py --out runs/latency                  # the targets' table, 1 thread
    .venv/bin/python benchmarks/latency.py --threads 2 --policy-group-size 16 1 --out runs/latency_more

One interleaved run per mode x backbone x threads x group size (``adafuse bench latency``: eager TSN, our executor,
ONNX Runtime, torch.compile, and the masked and sparse AdaFuse paths of every policy); one row per policy. Writes
``latency.json`` (every measurement, the machine, the command) and ``latency.md`` (the markdown table) to
``--out``, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _machine import describe_machine
from adafuse.bench.latency import DENSE_PATHS, markdown_table, measure_latency


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", nargs="+", default=["clip", "stream"], choices=("clip", "stream"))
    p.add_argument("--backbone", nargs="+", default=["resnet50", "resnet18"])
    p.add_argument("--threads", nargs="+", type=int, default=[1])
    p.add_argument("--policy", nargs="+", default=["paper", "0.5,0.25,0.25", "keep"])
    p.add_argument("--policy-group-size", nargs="+", type=int, default=[32])
    p.add_argument("--baselines", nargs="+", default=list(DENSE_PATHS), choices=DENSE_PATHS)
    p.add_argument("--num-segments", type=int, default=8)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--policy-hidden", type=int, default=64)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/latency"))
    args = p.parse_args()

    rows = []
    for mode in args.mode:
        for backbone in args.backbone:
            for threads in args.threads:
                for group in args.policy_group_size:
                    rows += measure_latency(
                        backbone=backbone, threads=threads, policies=args.policy, mode=mode,
                        num_segments=args.num_segments, rounds=args.rounds, warmup=args.warmup,
                        input_size=args.input_size, policy_hidden=args.policy_hidden, policy_group_size=group,
                        baselines=args.baselines, clock=args.clock, profile_paths=args.profile,
                    )  # fmt: skip
                    print("\n".join(markdown_table(rows[-len(args.policy) :]).splitlines()[2:]), flush=True)
    machine = describe_machine()
    command = " ".join(["python benchmarks/latency.py", *sys.argv[1:]])
    load = sum(r["load_average"] for r in rows) / len(rows)
    machine += f"; load average during the runs {load:.1f}"
    table = markdown_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(
        json.dumps({"machine": machine, "command": command, "results": rows}, indent=1)
    )
    (args.out / "latency.md").write_text(f"{table}\n\nMachine: {machine}\nCommand: `{command}`\n")
    print(f"\n{table}\n\nMachine: {machine}\nCommand: `{command}`")


if __name__ == "__main__":
    main()
