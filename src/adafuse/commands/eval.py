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
    p.add_argument("--ensemble", nargs="+", metavar="CKPT", help="more checkpoints: evaluate the ensemble of them "
                   "all (mean of softmax scores; GFLOPs and params summed), e.g. ECO_En Lite's four ECO-Lite models")
    p.add_argument("--data", help="dataset.yaml (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--num-segments", type=int, help="frames per clip T (default: the checkpoint's)")
    p.add_argument("--input-size", type=int, help="crop size (default: the checkpoint's)")
    p.add_argument("--num-clips", type=int, default=1, help="clips per video (views are averaged)")
    p.add_argument("--num-crops", type=int, default=1, choices=(1, 3), help="1 centre crop or 3 crops")
    p.add_argument("--min-frames", type=int, default=1, help="drop videos listed with fewer frames (official: 3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="loader processes (default 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the CPUs left after the workers)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--sample-policy", action="store_true", help="sample policies with Gumbel noise (official, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample-policy")
    p.add_argument("--report", type=Path, help="also write a markdown report here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def check_device(name: str) -> str:
    """``name`` if it is a device this machine has, else a one-line error."""
    import torch

    from adafuse.errors import UserError

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: only cpu, cuda and mps are supported")
    return name


def last_beside_best(checkpoint: Path, split: str, data: str | None) -> dict | None:
    """For a ``best.ckpt`` scored on the validation split it was chosen on: the last validation of the run's
    ``last.ckpt`` (recorded by training), so the optimistic number has the honest one beside it."""
    from adafuse.checkpoint import read_checkpoint

    last = checkpoint.with_name("last.ckpt")
    if checkpoint.name != "best.ckpt" or split != "val" or data is not None or not last.is_file():
        return None
    state = read_checkpoint(last).get("callbacks", {}).get("LastCheckpoint", {})  # engine.train.LastCheckpoint
    validation = state.get("validation")
    return {"checkpoint": str(last), **validation} if validation else None


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    import torch

    from adafuse.engine.evaluate import evaluate_checkpoint, evaluate_ensemble
    from adafuse.engine.report import markdown_report
    from adafuse.engine.threads import default_threads
    from adafuse.errors import UserError
    from adafuse.outputs import check_writable

    for name in ("num_segments", "input_size", "num_clips", "batch_size", "threads", "min_frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    check_device(args.device)
    if args.report is not None:  # before minutes of evaluation, not after
        if args.report.is_dir():
            raise UserError(f"--report {args.report} is a folder; give a file name")
        check_writable(args.report.parent)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads(workers=args.workers))
    if args.ensemble and (args.num_segments or args.input_size):
        raise UserError("--ensemble evaluates every member with its own frames: drop --num-segments/--input-size")
    options = dict(
        data=args.data, split=args.split, num_clips=args.num_clips, num_crops=args.num_crops,
        batch_size=args.batch_size, workers=args.workers, device=args.device, sample_policy=args.sample_policy,
        seed=args.seed, progress=not args.json, min_frames=args.min_frames,
    )  # fmt: skip
    try:
        if args.ensemble:
            result = evaluate_ensemble([args.checkpoint, *args.ensemble], **options)
        else:
            result = evaluate_checkpoint(args.checkpoint, num_segments=args.num_segments, input_size=args.input_size,
                                         **options)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    if args.ensemble:
        if args.report:
            args.report.write_text("```json\n" + json.dumps(result, indent=1) + "\n```\n", encoding="utf-8")
        print(json.dumps(result) if args.json else
              f"ensemble of {len(result['members'])}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
              f"{result['gflops']:.2f} GFLOPs/video  {result['params']:,} params  ({result['videos']} videos)")
        return 0
    last = last_beside_best(Path(args.checkpoint), args.split, args.data)
    if last:
        result["last"] = last
    if args.report:
        args.report.write_text(markdown_report(result), encoding="utf-8")
    print(json.dumps(result) if args.json else markdown_report(result))
    return 0
