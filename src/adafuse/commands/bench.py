"""``adafuse bench latency``: sparse AdaFuse against the dense engines a user would deploy, interleaved."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command and its ``latency`` benchmark."""
    from adafuse.bench.latency import DENSE_PATHS

    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks of the deployed models.")
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    kinds.required = True
    p = kinds.add_parser(
        "latency",
        help="sparse AdaFuse vs the fastest dense TSN (eager, our executor, ONNX Runtime, torch.compile)",
        description="Run dense TSN on every engine given (eager PyTorch, our folded executor, ONNX Runtime, "
        "torch.compile), the masked AdaFuse model and the sparse executor on the same work - a clip of "
        "--num-segments frames (clip mode) or one frame at batch 1 (--mode stream) - in one interleaved, shuffled "
        "run, and print median milliseconds per call, the MAC ratio (Eq. 5) and the time over the fastest dense "
        "engine. One run per backbone x threads x group size; one row per policy. --json prints one object: the "
        "first row's numbers at the top level, every row under 'results'.",
    )
    p.add_argument("--mode", choices=("clip", "stream"), default="clip", help="clip (default) or stream")
    p.add_argument("--backbone", nargs="+", default=["resnet18", "resnet50"], help="ResNet backbones")
    p.add_argument("--threads", nargs="+", type=int, default=[1], help="torch thread counts (default 1)")
    p.add_argument(
        "--policy",
        nargs="+",
        default=["paper", "0.5,0.25,0.25", "keep"],
        help="keep,reuse,skip shares forced in every block; 'keep' (all kept); 'paper' (per-stage shares of a "
        "trained ResNet-50); 'trained' (the checkpoint's own policy)",
    )
    p.add_argument("--policy-group-size", "--policy-groups", nargs="+", type=int, default=[32],
                   help="channels per policy decision of the random-weight models (default 32)")  # fmt: skip
    p.add_argument("--checkpoint", help="a trained AdaFuse checkpoint: time its weights (its backbone and group size)")
    p.add_argument("--baselines", nargs="+", default=list(DENSE_PATHS), choices=DENSE_PATHS, metavar="ENGINE",
                   help=f"dense TSN engines to run (default all: {' '.join(DENSE_PATHS)})")  # fmt: skip
    p.add_argument("--num-segments", type=int, default=8, help="frames per clip in clip mode (default 8)")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--policy-hidden", type=int, default=64, help="policy hidden size of the random-weight models")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default) or the calling thread's CPU time (one thread only; robust under load)")
    p.add_argument("--profile", action="store_true", help="also profile the sparse paths by category")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure every combination and print a table (or JSON)."""
    from adafuse.bench.latency import markdown_table, measure_latency, parse_policy
    from adafuse.errors import UserError

    for name in ("rounds", "input_size", "policy_hidden", "num_segments"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
    if args.warmup < 0 or min(args.threads) < 1 or min(args.policy_group_size) < 1 or args.input_size < 32:
        raise UserError("--warmup must be >= 0, --threads and --policy-group-size >= 1 and --input-size >= 32")
    for spec in args.policy:
        if spec != "trained":
            parse_policy(spec)  # fail on a typo before minutes of measuring
    backbones = [None] if args.checkpoint else args.backbone
    groups = [None] if args.checkpoint else args.policy_group_size
    rows = []
    for backbone in backbones:
        for threads in args.threads:
            for group in groups:
                new = measure_latency(
                    backbone=backbone or "", threads=threads, policies=args.policy, mode=args.mode,
                    num_segments=args.num_segments, rounds=args.rounds, warmup=args.warmup,
                    input_size=args.input_size, policy_hidden=args.policy_hidden, policy_group_size=group or 1,
                    baselines=args.baselines, clock=args.clock, checkpoint=args.checkpoint,
                    profile_paths=args.profile,
                )  # fmt: skip
                if not args.json:  # the header once, then each combination's rows as they come
                    print("\n".join(markdown_table(new).splitlines()[0 if not rows else 2 :]), flush=True)
                rows += new
    if args.json:
        print(json.dumps({**rows[0], "results": rows}))
    return 0
