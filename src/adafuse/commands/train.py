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
        "Overrides: section.key=value, e.g. optim.lr=0.01 data.dataset=/data/sthv1.yaml trainer.devices=4 "
        "trainer.strategy=ddp.",
    )
    p.add_argument("--config", required=True, help="YAML file or packaged config name")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    p.add_argument("--resume", action="store_true", help="continue the run in trainer.out from last.ckpt")
    p.add_argument("--json", action="store_true", help="print the final validation result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print the result."""
    from adafuse.engine.config import load_config, resolve_config
    from adafuse.engine.train import fit

    config = load_config(resolve_config(args.config), args.overrides)
    result = fit(config, resume=args.resume)
    summary = {k: v for k, v in result.items() if k != "module"}
    if args.json:
        print(json.dumps(summary))
    else:
        val = result["validation"] or {}
        print(f"run {result['out']}: top-1 {val.get('top1', float('nan')):.2f}%, GFLOPs {val.get('gflops', 0):.3f}; "
              f"checkpoints {result['last']}, {result['best']}")
    return 130 if result["interrupted"] else 0
