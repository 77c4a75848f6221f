"""What coarse policies cost in accuracy: AdaFuse-TSN with one decision per group of channels, on the synthetic
temporal benchmark (the hardware-shaped policies the group-sparse kernels run fast).

    python benchmarks/group_study.py --out runs/group_study [--groups 1 2 4 8 16] [--seeds 0 1 2] [--threads 2]

Trains the demo config (``configs/demo.yaml``: resnet10_mini, 64 px, T = 8, AdaFuse-TSN) once per group size and
seed with ``model.policy_group_size=g`` and nothing else changed, evaluates each run deterministically and keeps
its result in ``OUT/results/<run>.json`` (re-running skips finished runs). resnet10_mini is a quarter-width
ResNet (16/32/64/128 channels), so its group of ``g`` channels makes as many decisions per block as a group of
``4g`` in ResNet-18/50 (64/128/256/512 channels in the blocks' first convs): groups 2/4/8 here are groups
8/16/32 there, in decisions per block; group 16 leaves the first stage a single decision. Prints one JSON object
and a markdown table (mean ± sd over seeds); writes ``OUT/group_study.json`` and ``OUT/group_study.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _machine import describe_machine
from _study import fit_run

WIDTHS = (16, 32, 64, 128)  # resnet10_mini's stage widths: decisions per block = width / group


def run_one(*, group: int, seed: int, out: Path, epochs: int | None) -> dict:
    """Train and evaluate AdaFuse-TSN with policies over groups of ``group`` channels; returns its result."""
    from adafuse.engine.config import load_config, resolve_config
    from adafuse.engine.evaluate import evaluate_checkpoint

    name = f"g{group}_s{seed}"
    run_dir = out / "runs" / name
    overrides = [
        "model.method=adafuse_tsn", f"model.policy_group_size={group}", f"data.dataset={out / 'data' / 'dataset.yaml'}",
        f"trainer.out={run_dir}", f"trainer.seed={seed}", "trainer.progress=false", "trainer.tensorboard=false",
        *([f"optim.epochs={epochs}"] if epochs else []),
    ]  # fmt: skip
    start = time.perf_counter()
    trained = fit_run(load_config(resolve_config("demo"), overrides), run_dir)
    result = evaluate_checkpoint(trained["last"], batch_size=32, progress=False)
    return {**result, "name": name, "group": group, "seed": seed, "seconds": time.perf_counter() - start}


def summarize(results: list[dict]) -> list[dict]:
    """Mean and spread over seeds per group size."""
    rows = []
    for group in sorted({r["group"] for r in results}):
        rs = [r for r in results if r["group"] == group]
        top1 = [r["top1"] for r in rs]
        rows.append({
            "group": group, "resnet_group": 4 * group, "decisions": [w // group for w in WIDTHS], "seeds": len(rs),
            "top1": statistics.mean(top1), "top1_sd": statistics.pstdev(top1),
            "top1_seeds": top1, "gflops": statistics.mean(r["gflops"] for r in rs),
            "gflops_dense": rs[0]["gflops_dense"],
            **{a: statistics.mean(r["policy"][a] for r in rs) for a in ("keep", "reuse", "skip")},
        })  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = [
        "| group (resnet10_mini) | same decisions per block as ResNet-18/50 groups of | decisions per block "
        "(stages 1-4) | seeds | top-1 % | per seed | GFLOPs / dense | keep | reuse | skip |",
        "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {r['resnet_group']} | {'/'.join(map(str, r['decisions']))} | {r['seeds']} "
            f"| {r['top1']:.1f} ± {r['top1_sd']:.1f} | {', '.join(f'{v:.1f}' for v in r['top1_seeds'])} "
            f"| {r['gflops'] / r['gflops_dense']:.3f} | {r['keep']:.2f} | {r['reuse']:.2f} | {r['skip']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the study."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/group_study"))
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override the demo's epochs")
    parser.add_argument("--num-videos", type=int, default=480)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    args = parser.parse_args(argv)
    bad = [g for g in args.groups if g < 1 or WIDTHS[0] % g]
    if bad:
        parser.error(f"group sizes must divide resnet10_mini's {WIDTHS[0]} first-stage channels: {bad}")
    import torch

    torch.set_num_threads(args.threads)
    from adafuse.data.synthetic import generate_synthetic

    start = time.perf_counter()
    if not (args.out / "data" / "dataset.yaml").is_file():
        generate_synthetic(kind="temporal", out=args.out / "data", num_videos=args.num_videos, seed=0, workers=2)
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    results = []
    for group in args.groups:
        for seed in args.seeds:
            path = args.out / "results" / f"g{group}_s{seed}.json"
            if not path.is_file():  # finished runs are kept: the study resumes
                result = run_one(group=group, seed=seed, out=args.out, epochs=args.epochs)
                path.write_text(json.dumps(result, indent=1))
                print(f"g{group} s{seed}: top-1 {result['top1']:.1f}, {result['seconds']:.0f} s", file=sys.stderr)
            results.append(json.loads(path.read_text()))
    rows = summarize(results)
    machine = f"{describe_machine()}; {args.threads} torch threads"
    summary = {"rows": rows, "results": results, "seconds": time.perf_counter() - start,
               "run_seconds": sum(r["seconds"] for r in results), "machine": machine,
               "command": " ".join(["python benchmarks/group_study.py", *(argv or sys.argv[1:])])}  # fmt: skip
    (args.out / "group_study.json").write_text(json.dumps(summary, indent=1))
    (args.out / "group_study.md").write_text(markdown(rows) + "\n")
    print(json.dumps({k: summary[k] for k in ("rows", "seconds", "run_seconds", "machine")}))
    print(markdown(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
