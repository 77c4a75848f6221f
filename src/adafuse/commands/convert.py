"""``adafuse convert``: the authors' released checkpoints (official AdaFuse code) as adafuse checkpoints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("adafuse_tsn", "adafuse_tsm", "adafuse_tsm_last")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command."""
    p = sub.add_parser(
        "convert",
        help="convert an official AdaFuse checkpoint (.pth.tar) into an adafuse checkpoint",
        description="Convert a checkpoint saved by the authors' code (e.g. sthv1_adatsm50.pth.tar) into an adafuse "
        "checkpoint for adafuse eval / load_model. The backbone, number of classes, policy hidden sizes, sharing and "
        "fused stages are read from the keys; every tensor of the file must be used and every tensor of the model "
        "filled. The temporal shift has no weights: policy nets in layer4 only means adafuse_tsm_last, otherwise "
        "'tsn' or 'tsm' in the file name decides, or --method.",
    )
    p.add_argument("src", type=Path, metavar="AUTHORS.pth.tar", help="the authors' checkpoint")
    p.add_argument("out", type=Path, metavar="OUT.ckpt", help="the adafuse checkpoint to write")
    p.add_argument("--method", choices=METHODS, help="the model (default: from the keys and the file name)")
    names = p.add_mutually_exclusive_group()
    names.add_argument("--preset", default="something_v1",
                       help="dataset preset whose packaged class names label the outputs (default: something_v1, "
                       "the released models)")  # fmt: skip
    names.add_argument("--classes", type=Path, help="a class file (one name per line, or idx,name) instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, then print what was found."""
    from adafuse.convert import convert_checkpoint
    from adafuse.data.classes import read_class_names
    from adafuse.data.presets import preset_class_names
    from adafuse.errors import UserError
    from adafuse.flops import count_params

    if args.classes is not None:
        classes = read_class_names(args.classes)
    else:
        classes = preset_class_names(args.preset)
        if not classes:
            raise UserError(f"preset {args.preset!r} has no class names; pass --classes FILE")
    model, summary = convert_checkpoint(args.src, args.out, method=args.method, classes=classes)
    config = model.config
    result = {
        "out": str(args.out),
        **summary,
        "backbone": config.backbone,
        "num_classes": config.num_classes,
        "num_segments": config.num_segments,
        "policy_hidden": config.policy_hidden,
        "policy_quota": config.policy_quota,
        "shared_policy": config.shared_policy,
        "shifted_shortcut": config.shifted_shortcut,
        "params": count_params(model),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    hidden = f"quota {config.policy_quota}" if config.policy_quota else f"hidden {config.policy_hidden}"
    print(f"{args.src} -> {args.out}")
    print(f"  {config.method} / {config.backbone} (method from {summary['method_from']}), {config.num_classes} "
          f"classes, T = {config.num_segments}, policy {hidden}{', shared' if config.shared_policy else ''} in "
          f"{'/'.join(summary['fused_stages'])}, {result['params']:,} parameters")  # fmt: skip
    print(f"  {summary['tensors']} tensors read, {summary['aliases_dropped']} shared-bank aliases dropped")
    print(f"  evaluate: adafuse eval --checkpoint {args.out} --data DATASET.yaml (add --sample-policy --seed S for "
          "the authors' stochastic protocol)")  # fmt: skip
    return 0
