"""The paper's claims at small scale, and whether the training recipe holds: every method on both synthetic
families (``temporal`` and ``static``: an object on a background; ``camera``: camera motion over a photograph-like
scene).

    python benchmarks/study.py --out runs/study [--seeds 0 1 2] [--sweep-seeds 0] [--epochs 15] [--threads 2] [--quick]
                               [--kinds temporal camera] [--methods tsn adafuse_tsn] [--no-sweeps]

Trains ``configs/demo.yaml`` (resnet10_mini, 64 px, T = 8, the cost budget) with every method of the paper on the
three benchmarks, for several seeds; on both temporal benchmarks AdaFuse-TSN and AdaFuse-TSM+Last also at the
other budgets (``loss.cost_target`` 0.5 and 0.75 besides the demo's 0.6) and with the paper's plain λ·cost (the
previous demo recipe: λ = 0.1 switched on at epoch 5); on ``temporal`` AdaFuse-TSN at more plain λ and policy
hidden sizes. Each run is evaluated deterministically and its result kept in ``OUT/results/<run>.json``:
re-running the script skips finished runs (resumable), so an interrupted study continues where it stopped.
Prints one JSON object (every result, and the acceptance check of the default recipe per benchmark and seed) and
a markdown table of means over seeds; writes ``OUT/study.json``, ``OUT/study.md`` and Figure 2 (the budget sweep
as a curve; on ``temporal`` also ``lambda_temporal.png``, the plain-λ sweep), 3 and 4 analogues. Results are
bit-identical on re-runs with the same ``--threads`` (CPU kernels split reductions by thread count, so another
count gives other, equally valid, numbers).
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

KINDS = ("temporal", "static", "camera")
TEMPORAL_KINDS = ("temporal", "camera")  # the two families' order-dependent benchmarks
METHODS = ("tsn", "tsm", "lstm", "cgnet", "threshold", "random", "ada_skip", "ada_reuse", "adafuse_tsn",
           "adafuse_tsm", "adafuse_tsm_last")
BUDGET_METHODS = ("adafuse_tsn", "adafuse_tsm_last")
TARGETS = (0.5, 0.75)  # besides the demo's 0.6
# The paper's plain λ·cost, as the demo had it before the budget: on from epoch 5, no ramp.
PLAIN = ("loss.cost_target=null", "loss.efficiency_ramp_steps=0", "loss.efficiency_after_epoch=5",
         "loss.efficiency_weight=0.1")  # λ too: the demo's λ = 40 belongs to its budget
LAMBDAS = (0.05, 0.2, 0.4)  # plain, besides 0.1
HIDDEN = (16, 256)  # besides the demo's 64
# Acceptance of the default recipe (issue 14): AdaFuse-TSN vs TSN, per benchmark and seed.
MIN_GAIN, MAX_GFLOPS_RATIO, MIN_REUSE = 15.0, 0.75, 0.10


def plan(seeds: list[int], sweep_seeds: list[int] | None = None) -> list[dict]:
    """Every run of the study: dataset kind, method, seed, and config overrides; the plain-λ and hidden-size sweeps
    at ``sweep_seeds`` (default: ``seeds``)."""
    sweep_seeds = seeds if sweep_seeds is None else sweep_seeds
    runs = [{"kind": k, "method": m, "seed": s, "overrides": []} for k in KINDS for m in METHODS for s in seeds]
    runs += [{"kind": k, "method": m, "seed": s, "overrides": overrides} for k in TEMPORAL_KINDS
             for m in BUDGET_METHODS
             for overrides in [*([f"loss.cost_target={t}"] for t in TARGETS), list(PLAIN)] for s in seeds]
    runs += [{"kind": "temporal", "method": "adafuse_tsn", "seed": s,
              "overrides": [*PLAIN, f"loss.efficiency_weight={lam}"]} for lam in LAMBDAS for s in sweep_seeds]
    runs += [{"kind": "temporal", "method": "adafuse_tsn", "seed": s, "overrides": [f"model.policy_hidden={h}"]}
             for h in HIDDEN for s in sweep_seeds]
    for run in runs:
        run["name"] = f"{run['kind']}_{run['method']}{_suffix(run['overrides'])}_s{run['seed']}"
    return runs


def _suffix(overrides: list[str]) -> str:
    if overrides[: len(PLAIN)] == list(PLAIN):
        return "_plain" + _suffix(overrides[len(PLAIN):])
    return "".join(f"_{o.split('.')[-1].replace('=', '')}" for o in overrides)


def variant(overrides: list[str]) -> str:
    """A short name of a run's overrides for tables: ``-`` (the demo recipe), ``plain λ=0.1``, ``budget 0.5``..."""
    names = []
    rest = list(overrides)
    if rest[: len(PLAIN)] == list(PLAIN):
        rest = rest[len(PLAIN):]
        lam = next((o.split("=")[1] for o in rest if o.startswith("loss.efficiency_weight=")), "0.1")
        rest = [o for o in rest if not o.startswith("loss.efficiency_weight=")]
        names.append(f"plain λ={lam}")
    for o in rest:
        key, value = o.split("=")
        names.append({"loss.cost_target": "budget", "model.policy_hidden": "hidden"}.get(key, key) + f" {value}")
    return ", ".join(names) or "-"


def run_one(run: dict, *, out: Path, epochs: int | None, quiet: bool) -> dict:
    """Train and evaluate one run; returns its result (also written to ``out/results``)."""
    from adafuse.engine.config import load_config, resolve_config
    from adafuse.engine.evaluate import evaluate_checkpoint

    data = out / "data" / run["kind"] / "dataset.yaml"
    run_dir = out / "runs" / run["name"]
    overrides = [f"model.method={run['method']}", f"data.dataset={data}", f"trainer.out={run_dir}",
                 f"trainer.seed={run['seed']}", "trainer.progress=false", "trainer.tensorboard=false",
                 *run["overrides"]]
    if epochs:
        overrides.append(f"optim.epochs={epochs}")
    config = load_config(resolve_config("demo"), overrides)
    start = time.perf_counter()
    trained = fit_run(config, run_dir)
    result = evaluate_checkpoint(trained["last"], batch_size=32, progress=not quiet)
    result.update({k: run[k] for k in ("name", "kind", "method", "seed", "overrides")})
    result["lambda"] = config["loss"]["efficiency_weight"]
    result["cost_target"] = config["loss"]["cost_target"]
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
        row = {"kind": kind, "method": method, "variant": variant(list(overrides)), "seeds": len(rs),
               "top1": statistics.mean(top1), "top1_sd": statistics.pstdev(top1),
               "top5": statistics.mean(r["top5"] for r in rs), "gflops": statistics.mean(r["gflops"] for r in rs),
               "params": rs[0]["params"], "lambda": rs[0]["lambda"], "cost_target": rs[0].get("cost_target")}
        if "policy" in rs[0]:
            for a in ("keep", "reuse", "skip", "reuse_per_keep"):
                row[a] = statistics.mean(r["policy"][a] for r in rs)
        rows.append(row)
    return rows


def acceptance(results: list[dict]) -> list[dict]:
    """Per temporal benchmark and seed: AdaFuse-TSN (demo recipe) against TSN — gain in top-1 points, GFLOPs
    ratio, reuse share — and whether it meets the bar (≥ 15 points, ≤ 0.75 of TSN's GFLOPs, reuse ≥ 10 %)."""
    by = {(r["kind"], r["method"], r["seed"]): r for r in results if not r["overrides"]}
    checks = []
    for (kind, method, seed), ada in sorted(by.items()):
        tsn = by.get((kind, "tsn", seed))
        if method != "adafuse_tsn" or kind not in TEMPORAL_KINDS or tsn is None:
            continue
        gain, ratio, reuse = ada["top1"] - tsn["top1"], ada["gflops"] / tsn["gflops"], ada["policy"]["reuse"]
        checks.append({"kind": kind, "seed": seed, "tsn": tsn["top1"], "adafuse_tsn": ada["top1"], "gain": gain,
                       "gflops_ratio": ratio, "reuse": reuse, "collapsed_blocks": ada["policy"]["collapsed_blocks"],
                       "pass": gain >= MIN_GAIN and ratio <= MAX_GFLOPS_RATIO and reuse >= MIN_REUSE})
    return checks


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


def acceptance_markdown(checks: list[dict]) -> str:
    """The acceptance check as a markdown table."""
    lines = ["| data | seed | TSN top-1 | AdaFuse-TSN top-1 | gain | GFLOPs / TSN | reuse | collapsed blocks | pass |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {c['kind']} | {c['seed']} | {c['tsn']:.1f} | {c['adafuse_tsn']:.1f} | {c['gain']:+.1f} | "
              f"{c['gflops_ratio']:.2f} | {100 * c['reuse']:.0f}% | {len(c['collapsed_blocks'])} | "
              f"{'yes' if c['pass'] else 'no'} |" for c in checks]
    return "\n".join(lines)


def _tradeoff(viz, rows: list[dict], path: Path, *, title: str, curve: list, curve_label: str) -> None:
    viz.plot_tradeoff([r | {"backbone": "resnet10_mini"} | ({"policy": r} if r["method"].startswith("ada") else {})
                       for r in rows], path, labels=[r["method"] for r in rows], title=title, curve=curve,
                      curve_label=curve_label)


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the study."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweep-seeds", type=int, nargs="+", help="seeds of the plain-λ and hidden-size sweeps "
                        "on temporal (default: --seeds)")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="override the demo's 15 epochs")
    parser.add_argument("--num-videos", type=int, default=480)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="benchmarks (default all)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods (default all)")
    parser.add_argument("--no-sweeps", action="store_true", help="only the demo recipe (e.g. its acceptance check)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 epoch, 48 videos, one seed, 3 methods, no sweeps")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from adafuse import viz
    from adafuse.data.synthetic import generate_synthetic

    if args.quick:
        args.seeds, args.epochs, args.num_videos = args.seeds[:1], 1, 48
    runs = [r for r in plan(args.seeds, args.sweep_seeds) if r["kind"] in args.kinds and r["method"] in args.methods
            and not (args.no_sweeps and r["overrides"])]
    if args.quick:
        runs = [r for r in runs if r["method"] in ("tsn", "random", "adafuse_tsn") and not r["overrides"]]
    start = time.perf_counter()
    for kind in args.kinds:
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
    for kind in args.kinds:  # Figure 2: every method; AdaFuse-TSN's budget sweep as a curve
        plain = [r for r in rows if r["kind"] == kind and r["variant"] == "-"]
        if not plain:
            continue
        sweep = [r for r in rows if r["kind"] == kind and r["method"] == "adafuse_tsn"
                 and (r["variant"] == "-" or r["variant"].startswith("budget"))]
        curve = [(r["gflops"], r["top1"], f"budget {r['cost_target']:g}") for r in sweep] if len(sweep) > 1 else []
        _tradeoff(viz, plain, args.out / f"tradeoff_{kind}.png", title=f"Synthetic {kind}", curve=curve,
                  curve_label="adafuse_tsn, budget sweep")
    lambdas = [r for r in rows if r["kind"] == "temporal" and r["method"] == "adafuse_tsn"
               and r["variant"].startswith("plain")]
    if len(lambdas) > 1:
        _tradeoff(viz, [r for r in rows if r["kind"] == "temporal" and r["variant"] == "-"],
                  args.out / "lambda_temporal.png", title="Synthetic temporal, plain λ·cost",
                  curve=[(r["gflops"], r["top1"], f"λ={r['lambda']:g}") for r in lambdas],
                  curve_label="adafuse_tsn, plain λ sweep")
    pies = [r for r in rows if r["method"] == "adafuse_tsn" and r["variant"] == "-"]
    if len(pies) > 1:
        viz.plot_policy_pies([{"policy": r} for r in pies], args.out / "policy_pies.png",
                             labels=[r["kind"] for r in pies])
    for r in results:  # Figure 4: AdaFuse-TSN's policy per block, first seed of each benchmark
        if r["method"] == "adafuse_tsn" and not r["overrides"] and r["seed"] == min(args.seeds):
            viz.plot_policy_blocks(r, args.out / f"policy_blocks_{r['kind']}.png",
                                   title=f"AdaFuse-TSN policy per block, synthetic {r['kind']}, seed {r['seed']}")
    machine = f"{describe_machine()}; {args.threads} torch threads"
    summary = {"rows": rows, "acceptance": acceptance(results), "results": results,
               "seconds": time.perf_counter() - start, "run_seconds": sum(r.get("seconds", 0.0) for r in results),
               "machine": machine}
    (args.out / "study.json").write_text(json.dumps(summary, indent=1))
    (args.out / "study.md").write_text(markdown(rows) + "\n\n" + acceptance_markdown(summary["acceptance"]) + "\n")
    print(json.dumps({k: summary[k] for k in ("rows", "acceptance", "seconds", "run_seconds", "machine")}))
    print(markdown(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
