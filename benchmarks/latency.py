"""Per-frame latency of dense TSN, masked AdaFuse and sparse AdaFuse at batch 1 (the table of docs/speed.md).

    .venv/bin/python benchmarks/latency.py --out runs/latency          # ResNet-18/50, 1 and 2 threads, ~3 min
    .venv/bin/python benchmarks/latency.py --checkpoint CKPT --policy trained

Writes ``latency.json`` (every measurement) and ``latency.md`` (the markdown table, with the machine and the
command) to ``--out``, and prints the table. Same measurement as ``adafuse bench latency``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _machine import describe_machine
from adafuse.bench.latency import markdown_table, measure_latency


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--policy", nargs="+", default=["0.5,0.25,0.25", "keep", "paper"])
    p.add_argument("--checkpoint", help="a trained AdaFuse checkpoint (use with --policy trained)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--policy-hidden", type=int, default=64)
    p.add_argument("--policy-group-size", "--policy-groups", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/latency"))
    args = p.parse_args()

    rows = []
    for backbone in [None] if args.checkpoint else args.backbone:
        for threads in args.threads:
            for policy in args.policy:
                rows.append(
                    measure_latency(
                        backbone=backbone or "", threads=threads, policy=policy, checkpoint=args.checkpoint,
                        frames=args.frames, warmup=args.warmup, input_size=args.input_size,
                        policy_hidden=args.policy_hidden, policy_group_size=args.policy_group_size,
                    )
                )  # fmt: skip
                print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
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
