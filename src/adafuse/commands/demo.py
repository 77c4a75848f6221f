"""``adafuse demo``: the built-in end-to-end demonstration on CPU in minutes.

Generates the synthetic temporal benchmark (classes in time-reversed pairs), trains TSN and AdaFuse-TSN with
the same small backbone (configs/demo.yaml), evaluates both deterministically, prints a comparison table and
writes the paper's figures for them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

METHODS = ("tsn", "adafuse_tsn")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser(
        "demo",
        help="synthetic benchmark: train and compare TSN and AdaFuse on CPU",
        description="Generate the synthetic temporal benchmark, train TSN and AdaFuse-TSN (configs/demo.yaml), "
        "evaluate both, print a table and write plots. Everything goes under --out (its previous demo is replaced).",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int, help="override the demo's epochs")
    p.add_argument("--num-videos", type=int, default=480, help="synthetic videos (default 480)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the CPUs left after the loader workers)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate, train, evaluate, compare."""
    import torch

    from adafuse import viz
    from adafuse.data.synthetic import generate_synthetic
    from adafuse.engine.config import load_config, resolve_config
    from adafuse.engine.evaluate import evaluate_checkpoint
    from adafuse.engine.threads import default_threads
    from adafuse.engine.train import fit
    from adafuse.errors import UserError
    from adafuse.outputs import check_writable

    for name in ("epochs", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    start = time.perf_counter()
    out: Path = check_writable(args.out)
    base = load_config(resolve_config("demo"))
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    say = (lambda *a: None) if args.json else print
    say(f"[1/3] synthetic temporal benchmark -> {data}")
    synth = generate_synthetic(kind="temporal", out=data, num_videos=args.num_videos, seed=args.seed, workers=2)
    batch = base["data"]["batch_size"]
    if synth["num_train"] < batch:
        raise UserError(f"--num-videos {args.num_videos} gives {synth['num_train']} training videos, fewer than one "
                        f"batch of {batch}; use --num-videos {2 * batch} or more")
    results = []
    for i, method in enumerate(METHODS):
        say(f"[2/3] training {method} ({i + 1}/{len(METHODS)})")
        run_dir = out / method
        if run_dir.exists():
            shutil.rmtree(run_dir)
        overrides = [f"model.method={method}", f"data.dataset={data / 'dataset.yaml'}", f"trainer.out={run_dir}",
                     f"trainer.seed={args.seed}", f"trainer.progress={'false' if args.json else 'true'}"]
        if args.epochs:
            overrides.append(f"optim.epochs={args.epochs}")
        if args.threads:
            overrides.append(f"trainer.threads={args.threads}")
        config = load_config(resolve_config("demo"), overrides)
        trained = fit(config)
        threads, workers = torch.get_num_threads(), config["data"]["workers"]
        used_threads = args.threads or default_threads(workers=workers)
        torch.set_num_threads(used_threads)
        try:
            result = evaluate_checkpoint(trained["last"], batch_size=16, workers=workers, progress=not args.json)
        finally:
            torch.set_num_threads(threads)
        # best.ckpt is picked on this same validation split: shown beside last, never instead of it
        result["best_top1"] = trained["best_top1"]
        (out / f"{method}.json").write_text(json.dumps(result, indent=1))
        results.append(result)
    say("[3/3] plots")
    plots = [viz.plot_tradeoff(results, out / "tradeoff.png", title="Synthetic temporal benchmark")]
    plots.append(viz.plot_policy_blocks(results[1], out / "policy_blocks.png", title="AdaFuse policy per block"))
    seconds = time.perf_counter() - start
    summary = {
        "results": [{k: r[k] for k in ("method", "top1", "top5", "gflops", "gflops_dense", "params", "best_top1")} | (
            {"policy": r["policy"]} if "policy" in r else {}) for r in results],
        "seconds": seconds,
        "machine": f"{platform.machine()}, {used_threads} threads, torch {torch.__version__}",
        "out": str(out),
        "plots": [str(p) for p in plots],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"\nSynthetic temporal benchmark, {results[0]['videos']} validation videos, {results[0]['backbone']} at "
          f"{results[0]['input_size']} px, T={results[0]['num_segments']} (chance 12.5%)")
    print(f"| {'method':<12} | {'top-1 %':>7} | {'best %':>6} | {'top-5 %':>7} | {'GFLOPs':>7} | {'params':>11} "
          f"| keep/reuse/skip |")
    print(f"|{'-' * 14}|{'-' * 9}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 13}|{'-' * 17}|")
    for r in results:
        policy = "/".join(f"{100 * r['policy'][a]:.0f}" for a in ("keep", "reuse", "skip")) if "policy" in r else "-"
        best = f"{r['best_top1']:6.1f}" if r["best_top1"] is not None else f"{'-':>6}"
        print(f"| {r['method']:<12} | {r['top1']:7.1f} | {best} | {r['top5']:7.1f} | {r['gflops']:7.3f} "
              f"| {r['params']:11,} | {policy:>15} |")
    print("\ntop-1: last.ckpt (the end of training); best: best.ckpt, the epoch with the best top-1 on this same "
          "validation split (optimistic)")
    print(f"{seconds:.0f} s on {summary['machine']}; plots and results in {out}")
    return 0
