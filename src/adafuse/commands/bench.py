"""``adafuse bench latency``: per-frame latency of dense TSN, masked AdaFuse and sparse AdaFuse."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command and its ``latency`` benchmark."""
    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks of the deployed models.")
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    kinds.required = True
    p = kinds.add_parser(
        "latency",
        help="per-frame latency: dense TSN vs masked AdaFuse vs sparse AdaFuse",
        description="Stream frames at batch 1 through dense TSN, the masked AdaFuse model (the paper's execution) "
        "and the sparse executor, interleaved frame by frame, and print median milliseconds per frame with the "
        "MAC ratio (Eq. 5) and the time ratio, both sparse / dense TSN. One row per backbone × threads × policy. "
        "--json prints one object: the first row's numbers at the top level, every row under 'results'.",
    )
    p.add_argument("--backbone", nargs="+", default=["resnet18", "resnet50"], help="ResNet backbones")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch thread counts")
    p.add_argument(
        "--policy",
        nargs="+",
        default=["0.5,0.25,0.25", "keep"],
        help="keep,reuse,skip shares forced in every block; 'keep' (all kept); 'paper' (per-stage shares of a "
        "trained ResNet-50); 'trained' (the checkpoint's own policy)",
    )
    p.add_argument(
        "--checkpoint", help="a trained AdaFuse checkpoint: time its weights (its backbone replaces --backbone)"
    )
    p.add_argument("--frames", type=int, default=20, help="timed frames per path (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames first (default 5)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--policy-hidden", type=int, default=64, help="policy hidden size of the random-weight models")
    p.add_argument("--policy-group-size", "--policy-groups", type=int, default=1,
                   help="channels per policy decision (random-weight models)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure every combination and print a table (or JSON)."""
    from adafuse.bench.latency import markdown_table, measure_latency, parse_policy
    from adafuse.errors import UserError

    for name in ("frames", "input_size", "policy_hidden", "policy_group_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
    if args.warmup < 0 or min(args.threads) < 1 or args.input_size < 32:
        raise UserError("--warmup must be >= 0, --threads >= 1 and --input-size >= 32")
    for spec in args.policy:
        if spec != "trained":
            parse_policy(spec)  # fail on a typo before minutes of measuring
    backbones = [None] if args.checkpoint else args.backbone
    rows = []
    for backbone in backbones:
        for threads in args.threads:
            for policy in args.policy:
                rows.append(
                    measure_latency(
                        backbone=backbone or "",
                        threads=threads,
                        policy=policy,
                        checkpoint=args.checkpoint,
                        frames=args.frames,
                        warmup=args.warmup,
                        input_size=args.input_size,
                        policy_hidden=args.policy_hidden,
                        policy_group_size=args.policy_group_size,
                    )
                )
                if not args.json:
                    print(
                        markdown_table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else markdown_table(rows),
                        flush=True,
                    )
    if args.json:
        print(json.dumps({**rows[0], "results": rows}))
    return 0
