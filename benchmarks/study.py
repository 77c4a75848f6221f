"""The paper's claims at small scale: every method on the synthetic temporal and static benchmarks.

    python benchmarks/study.py --out runs/study [--seeds 0 1 2] [--epochs 15] [--threads 2] [--quick]

Trains ``configs/demo.yaml`` (resnet10_mini, 64 px, T = 8) with every method of the paper, on both synthetic
benchmarks, for several seeds; plus AdaFuse-TSN at several λ and policy hidden sizes (temporal benchmark). Each
run is evaluated deterministically and its result kept in ``OUT/results/<run>.json``: re-running the script skips
finished runs (resumable), so an interrupted study continues where it stopped. Prints one JSON object (every
result) and a markdown table of means over seeds; writes ``OUT/study.json``, ``OUT/study.md`` and Figure 2
(with the λ sweep as a curve), 3 and 4 analogues. Results are bit-identical on re-runs with the same
``--threads`` (CPU kernels split reductions by thread count, so another count gives other, equally valid, numbers).
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

METHODS = ("tsn", "tsm", "lstm", "cgnet", "threshold", "random", "ada_skip", "ada_reuse", "adafuse_tsn",
           "adafuse_tsm", "adafuse_tsm_last")
LAMBDAS = (0.05, 0.2, 0.4)  # besides the demo's 0.1
HIDDEN = (16, 256)  # besides the demo's 64


def plan(seeds: list[int]) -> list[dict]:
    """Every run of the study: dataset kind, method, seed, and config overrides."""
    runs = [{"kind": k, "method": m, "seed": s, "overrides": []} for k in ("temporal", "static") for m in METHODS
            for s in seeds]
    runs += [{"kind": "temporal", "method": "adafuse_tsn", "seed": s, "overrides": [f"loss.efficiency_weight={lam}"]}
             for lam in LAMBDAS for s in seeds]
    runs += [{"kind": "temporal", "method": "adafuse_tsn", "seed": s, "overrides": [f"model.policy_hidden={h}"]}
             for h in HIDDEN for s in seeds]
    for run in runs:
        suffix = "".join(f"_{o.split('.')[-1].replace('=', '')}" for o in run["overrides"])
        run["name"] = f"{run['kind']}_{run['method']}{suffix}_s{run['seed']}"
    return runs


def run_one(run: dict, *, out: Path, epochs: int | None, quiet: bool) -> dict:
    """Train and evaluate one run; returns its result (also written to ``out/results``)."""
    from adafuse.engine.config import load_config, resolve_config
    from adafuse.engine.evaluate import evaluate_checkpoint
    from adafuse.engine.train import fit

    data = out / "data" / run["kind"] / "dataset.yaml"
    run_dir = out / "runs" / run["name"]
    overrides = [f"model.method={run['method']}", f"data.dataset={data}", f"trainer.out={run_dir}",
                 f"trainer.seed={run['seed']}", "trainer.progress=false", "trainer.tensorboard=false",
                 *run["overrides"]]
    if epochs:
        overrides.append(f"optim.epochs={epochs}")
    config = load_config(resolve_config("demo"), overrides)
    start = time.perf_counter()
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    trained = fit(config, resume=resume)
    result = evaluate_checkpoint(trained["last"], batch_size=32, progress=not quiet)
    result.update({k: run[k] for k in ("name", "kind", "method", "seed", "overrides")})
    result["lambda"] = config["loss"]["efficiency_weight"]
    result["policy_hidden"] = config["model"]["policy_hidden"]
    result["seconds"] = time.perf_counter() - start  # training and evaluation (of this invocation, if resumed)
    return result


def summarize(results: list[dict]) -> list[dict]:
    """Mean and spread over seeds of each (kind, method, overrides)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["kind"], r["method"], tuple(r["overrides"])), []).append(r)
    rows = []
    for (kind, method, overrides), rs in groups.items():
        top1 = [r["top1"] for r in rs]
        row = {"kind": kind, "method": method, "variant": " ".join(overrides) or "-", "seeds": len(rs),
               "top1": statistics.mean(top1), "top1_sd": statistics.pstdev(top1),
               "top5": statistics.mean(r["top5"] for r in rs), "gflops": statistics.mean(r["gflops"] for r in rs),
               "params": rs[0]["params"], "lambda": rs[0]["lambda"]}
        if "policy" in rs[0]:
            for a in ("keep", "reuse", "skip", "reuse_per_keep"):
                row[a] = statistics.mean(r["policy"][a] for r in rs)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = ["| data | method | variant | seeds | top-1 % | top-5 % | GFLOPs | params | keep | reuse | skip "
             "| reuse/keep |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        policy = " | ".join(f"{r[a]:.2f}" if a in r else "-" for a in ("keep", "reuse", "skip", "reuse_per_keep"))
        lines.append(f"| {r['kind']} | {r['method']} | {r['variant']} | {r['seeds']} | {r['top1']:.1f} ± "
                     f"{r['top1_sd']:.1f} | {r['top5']:.1f} | {r['gflops']:.4f} | {r['params']:,} | {policy} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the study."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override the demo's 15 epochs")
    parser.add_argument("--num-videos", type=int, default=480)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 48 videos, one seed, 3 methods")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from adafuse import viz
    from adafuse.data.synthetic import generate_synthetic

    if args.quick:
        args.seeds, args.epochs, args.num_videos = args.seeds[:1], 1, 48
    runs = plan(args.seeds)
    if args.quick:
        runs = [r for r in runs if r["method"] in ("tsn", "random", "adafuse_tsn") and not r["overrides"]]
    start = time.perf_counter()
    for kind in ("temporal", "static"):
        if not (args.out / "data" / kind / "dataset.yaml").is_file():
            generate_synthetic(kind=kind, out=args.out / "data" / kind, num_videos=args.num_videos, seed=0, workers=2)
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    results = []
    for run in tqdm(runs, desc="study", unit="run", file=sys.stderr):
        path = args.out / "results" / f"{run['name']}.json"
        if not path.is_file():  # finished runs are kept: the study resumes
            path.write_text(json.dumps(run_one(run, out=args.out, epochs=args.epochs, quiet=True), indent=1))
        results.append(json.loads(path.read_text()))
    rows = summarize(results)
    for kind in ("temporal", "static"):  # Figure 2: every method; on the temporal set, AdaFuse-TSN's λ sweep
        plain = [r for r in rows if r["kind"] == kind and r["variant"] == "-"]
        sweep = [r for r in rows if r["kind"] == kind and r["method"] == "adafuse_tsn"
                 and (r["variant"] == "-" or "efficiency_weight" in r["variant"])]
        curve = [(r["gflops"], r["top1"], f"λ={r['lambda']:g}") for r in sweep] if len(sweep) > 1 else []
        viz.plot_tradeoff([r | {"backbone": "resnet10_mini"} | ({"policy": r} if r["method"].startswith("ada") else {})
                           for r in plain], args.out / f"tradeoff_{kind}.png", labels=[r["method"] for r in plain],
                          title=f"Synthetic {kind}", curve=curve, curve_label="adafuse_tsn, λ sweep")
    pies = [r for r in rows if r["method"] == "adafuse_tsn" and r["variant"] == "-"]
    if len(pies) == 2:
        viz.plot_policy_pies([{"policy": r} for r in pies], args.out / "policy_pies.png",
                             labels=[r["kind"] for r in pies])
    for r in results:  # Figure 4: AdaFuse-TSN's policy per block, first seed of each benchmark
        if r["method"] == "adafuse_tsn" and not r["overrides"] and r["seed"] == min(args.seeds):
            viz.plot_policy_blocks(r, args.out / f"policy_blocks_{r['kind']}.png",
                                   title=f"AdaFuse-TSN policy per block, synthetic {r['kind']}, seed {r['seed']}")
    machine = f"{describe_machine()}; {args.threads} torch threads"
    summary = {"rows": rows, "results": results, "seconds": time.perf_counter() - start,
               "run_seconds": sum(r.get("seconds", 0.0) for r in results), "machine": machine}
    (args.out / "study.json").write_text(json.dumps(summary, indent=1))
    (args.out / "study.md").write_text(markdown(rows) + "\n")
    print(json.dumps({k: summary[k] for k in ("rows", "seconds", "run_seconds", "machine")}))
    print(markdown(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
