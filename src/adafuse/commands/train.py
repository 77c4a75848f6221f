"""``adafuse train``: train a model from a YAML config (a file or a packaged preset) with overrides."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train a model from a config",
        description="Train from a YAML config (a file, or the name of a packaged config in configs/). "
        "Overrides: section.key=value, anywhere on the line, e.g. optim.lr=0.01 data.dataset=/data/sthv1.yaml "
        "trainer.devices=4 trainer.strategy=ddp. Every key, its default and meaning: --help-config. Continue a "
        "stopped run with --resume trainer.out=RUN (its own config.yaml is used; overrides may change only how "
        "it runs).",
    )
    p.add_argument("--config", help="YAML file or packaged config name (not needed with --resume)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    p.add_argument("--resume", action="store_true", help="continue the run in trainer.out from its last.ckpt")
    p.add_argument("--help-config", action="store_true", help="list every config key (default, values, meaning)")
    p.add_argument("--json", action="store_true", help="print the final validation result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print the result."""
    from adafuse.engine.config import load_config, reference_table, resolve_config, resume_config
    from adafuse.errors import UserError

    if args.help_config:
        print(reference_table(), end="")
        return 0
    if args.config is None and not args.resume:
        raise UserError("--config is required (a YAML file or a packaged config name), unless --resume")
    path = resolve_config(args.config) if args.config else None
    config = resume_config(path, args.overrides) if args.resume else load_config(path, args.overrides)

    from adafuse.engine.train import fit

    result = fit(config, resume=args.resume)
    summary = {k: v for k, v in result.items() if k != "module"}
    val = result["validation"] or {}
    if args.json:
        print(json.dumps(summary))
    elif result["already_finished"]:
        top1 = f"top-1 {val['top1']:.2f}% at its last validation; " if val else ""
        print(f"run {result['out']} was already finished: nothing to resume; {top1}checkpoint {result['last']}")
    else:
        checkpoints = ", ".join(p for p in (result["last"], result["best"]) if p)
        best = result["best_top1"]
        best = f" (best.ckpt {best:.2f}%, the best epoch on this same validation split)" if best is not None else ""
        top1 = f"last validation top-1 {val['top1']:.2f}%, GFLOPs {val['gflops']:.3f}" if val else "no validation"
        print(f"run {result['out']}: {top1}{best}; checkpoints {checkpoints}")
    return 130 if result["interrupted"] else 0
