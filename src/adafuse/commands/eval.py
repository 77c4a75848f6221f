"""``adafuse eval``: deterministic evaluation of a checkpoint (accuracy, GFLOPs, params, policy statistics)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint",
        description="Evaluate a checkpoint on a dataset split: top-1/top-5, adaptive and dense GFLOPs (GMACs) per "
        "video, parameters and keep/reuse/skip statistics. Deterministic (arg-max policies) unless --sample-policy.",
    )
    p.add_argument("--checkpoint", required=True, help="a .ckpt from adafuse train")
    p.add_argument("--data", help="dataset.yaml (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--num-segments", type=int, help="frames per clip T (default: the checkpoint's)")
    p.add_argument("--input-size", type=int, help="crop size (default: the checkpoint's)")
    p.add_argument("--num-clips", type=int, default=1, help="clips per video (views are averaged)")
    p.add_argument("--num-crops", type=int, default=1, choices=(1, 3), help="1 centre crop or 3 crops")
    p.add_argument("--min-frames", type=int, default=1, help="drop videos listed with fewer frames (official: 3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--sample-policy", action="store_true", help="sample policies with Gumbel noise (official, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample-policy")
    p.add_argument("--report", type=Path, help="also write a markdown report here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    from adafuse.engine.evaluate import evaluate_checkpoint
    from adafuse.engine.report import markdown_report
    from adafuse.errors import UserError

    for name in ("num_segments", "input_size", "num_clips", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    result = evaluate_checkpoint(
        args.checkpoint, data=args.data, split=args.split, num_segments=args.num_segments,
        input_size=args.input_size, num_clips=args.num_clips, num_crops=args.num_crops, batch_size=args.batch_size,
        workers=args.workers, device=args.device, sample_policy=args.sample_policy, seed=args.seed,
        progress=not args.json, min_frames=args.min_frames,
    )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown_report(result), encoding="utf-8")
    print(json.dumps(result) if args.json else markdown_report(result))
    return 0
