"""The paper's comparison systems at small scale, on the synthetic temporal and static benchmarks.

    python benchmarks/systems_study.py --out runs/systems_study [--seeds 0 1 2] [--epochs 15] [--threads 2] [--quick]

Trains ``configs/demo.yaml`` (a quarter-width ResNet-10 at 64 px, T = 8, from scratch) as TSN, AdaFuse-TSN and the
comparison systems that fit a CPU budget: TRN (multi-scale relations over the frame features), I3D (the same
ResNet-10 inflated to 3D) and AR-Net (its MobileNetV2 + LSTM policy choosing per frame among three ResNet-10s at
64, 48 and 32 px, the policy's own prediction at 24 px, or skipping 1, 2 or 4 frames). NL-I3D is left out: a
one-block-per-stage ResNet-10 has no odd block for a non-local block; ECO needs BN-Inception (2 GMACs per frame at
224 px), too slow to train from scratch here. Each run is evaluated deterministically; results are kept in
``OUT/results/<run>.json`` and finished runs are skipped (resumable). Prints one JSON object and a markdown table of
means over seeds; writes ``OUT/systems.json`` and ``OUT/systems.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from _machine import describe_machine
from _study import fit_run

# (row name, overrides of the demo config)
SYSTEMS = {
    "tsn": ["model.method=tsn"],
    "adafuse_tsn": ["model.method=adafuse_tsn"],
    "trn": ["model.method=trn", "model.trn_features=64"],
    "i3d": ["model.method=i3d"],
    "arnet": ["model.method=arnet", "model.backbone=mobilenet_v2",
              "model.arnet_backbones=[resnet10_mini,resnet10_mini,resnet10_mini]"],
}


def run_one(kind: str, system: str, seed: int, *, out: Path, epochs: int | None) -> dict:
    """Train and evaluate one run; returns its result."""
    from adafuse.engine.config import load_config, resolve_config
    from adafuse.engine.evaluate import evaluate_checkpoint

    name = f"{kind}_{system}_s{seed}"
    run_dir = out / "runs" / name
    overrides = [*SYSTEMS[system], f"data.dataset={out / 'data' / kind / 'dataset.yaml'}", f"trainer.out={run_dir}",
                 f"trainer.seed={seed}", "trainer.progress=false", "trainer.tensorboard=false"]  # fmt: skip
    if epochs:
        overrides.append(f"optim.epochs={epochs}")
    config = load_config(resolve_config("demo"), overrides)
    start = time.perf_counter()
    trained = fit_run(config, run_dir)
    result = evaluate_checkpoint(trained["last"], batch_size=32, progress=False)
    result.update(name=name, kind=kind, system=system, seed=seed, seconds=time.perf_counter() - start)
    result.pop("confusion", None)
    result.pop("per_class", None)
    return result


def summarize(results: list[dict]) -> list[dict]:
    """Mean and spread over seeds of each (kind, system)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["kind"], r["system"]), []).append(r)
    return [{"kind": kind, "system": system, "seeds": len(rs), "top1": statistics.mean(r["top1"] for r in rs),
             "top1_sd": statistics.pstdev([r["top1"] for r in rs]), "gflops": statistics.mean(r["gflops"] for r in rs),
             "gflops_dense": rs[0]["gflops_dense"], "params": rs[0]["params"],
             "minutes": statistics.mean(r["seconds"] for r in rs) / 60}
            for (kind, system), rs in groups.items()]  # fmt: skip


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = ["| data | system | seeds | top-1 % | GFLOPs (adaptive) | GFLOPs (dense) | params | minutes/run |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['kind']} | {r['system']} | {r['seeds']} | {r['top1']:.1f} ± {r['top1_sd']:.1f} | "
                     f"{r['gflops']:.4f} | {r['gflops_dense']:.4f} | {r['params']:,} | {r['minutes']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the study."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/systems_study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override the demo's 15 epochs")
    parser.add_argument("--num-videos", type=int, default=480)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 48 videos, one seed")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from adafuse.data.synthetic import generate_synthetic

    if args.quick:
        args.seeds, args.epochs, args.num_videos = args.seeds[:1], 1, 48
    start = time.perf_counter()
    for kind in ("temporal", "static"):
        if not (args.out / "data" / kind / "dataset.yaml").is_file():
            generate_synthetic(kind=kind, out=args.out / "data" / kind, num_videos=args.num_videos, seed=0, workers=2)
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    runs = [(k, s, seed) for seed in args.seeds for k in ("temporal", "static") for s in args.systems]
    results = []
    for kind, system, seed in tqdm(runs, desc="systems", unit="run", file=sys.stderr):
        path = args.out / "results" / f"{kind}_{system}_s{seed}.json"
        if not path.is_file():
            path.write_text(json.dumps(run_one(kind, system, seed, out=args.out, epochs=args.epochs), indent=1))
        results.append(json.loads(path.read_text()))
    rows = summarize(results)
    table = markdown(rows)
    summary = {"machine": describe_machine(), "seconds": time.perf_counter() - start, "rows": rows,
               "command": " ".join(["python", "benchmarks/systems_study.py", *(argv or sys.argv[1:])])}  # fmt: skip
    (args.out / "systems.json").write_text(json.dumps(summary, indent=1))
    (args.out / "systems.md").write_text(table + "\n")
    print(json.dumps(summary))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
