"""``adafuse synth``: write the built-in synthetic benchmark in the standard frame-folder format."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    p = sub.add_parser(
        "synth",
        help="write a synthetic video dataset (frame folders, lists, classes, dataset.yaml)",
        description="Write a deterministic synthetic dataset. 'temporal': 8 classes in 4 time-reversed pairs "
        "(moving left/right, growing/shrinking, appearing/disappearing, rotating clockwise/counterclockwise), so "
        "an order-blind model is at chance within each pair. 'static': 8 shape classes with label-free random "
        "motion. Output: OUT/frames/<id>/00001.jpg..., train.txt, val.txt, classes.txt, dataset.yaml.",
    )
    p.add_argument("--kind", required=True, choices=("temporal", "static"), help="what the labels depend on")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-videos", type=int, default=480, help="videos in all, 3/4 train and 1/4 val (default 480)")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical output (default 0)")
    p.add_argument("--size", type=int, default=80, help="frame side in pixels (default 80)")
    p.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic dataset in OUT")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate and report."""
    from adafuse.data.synthetic import generate_synthetic
    from adafuse.outputs import check_writable

    check_writable(args.out)
    summary = generate_synthetic(
        kind=args.kind,
        out=args.out,
        num_videos=args.num_videos,
        seed=args.seed,
        size=args.size,
        frames=args.frames,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"wrote {summary['num_videos']} {args.kind} videos ({summary['num_train']} train, "
            f"{summary['num_val']} val, {summary['num_classes']} classes, {args.frames} frames of "
            f"{args.size}x{args.size}) in "
            f"{summary['seconds']:.1f} s\ndataset: {summary['dataset']}"
        )
    return 0
