"""``adafuse flops``: parameters and dense GMACs per video of any model, without weights or data."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``flops`` sub-command."""
    p = sub.add_parser(
        "flops",
        help="parameters and dense GFLOPs (GMACs) per video of a model",
        description="Count parameters and dense per-video GMACs (the paper's 'GFLOPs': multiply-accumulates, "
        "T frames, one clip, one crop; policy nets included; AR-Net: every branch on every frame, and what a frame "
        "costs under each of its actions). Built on the meta device: instant, no weights.",
    )
    p.add_argument("--config", help="count the model of a training config (file or packaged name) instead of "
                   "--backbone/--method/--policy-*: every model.* key of it is used")
    p.add_argument("--backbone", help="e.g. resnet18, resnet50, bninception, efficientnet_b0")
    p.add_argument("--method", help="tsn, tsm, lstm, cgnet, threshold, random, ada_skip, ...")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--num-segments", type=int, help="frames per video T (default 8, or the config's)")
    hidden = p.add_mutually_exclusive_group()
    hidden.add_argument("--policy-hidden", type=int, help="policy hidden size H (default 512)")
    hidden.add_argument("--policy-quota", type=int, help="policy hidden quota Q: H = Q // C per block")
    p.add_argument("--shared-policy", action="store_true", help="share policy FCs between equal-shape blocks")
    p.add_argument("--policy-group-size", "--policy-groups", type=int, default=1, help="channels per policy decision")
    p.add_argument("--input-size", type=int, help="input resolution (default: the backbone's native one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build on the meta device, count, print."""
    import torch

    from adafuse.errors import UserError
    from adafuse.flops import count_params, profile
    from adafuse.models import build_model, get_backbone

    if args.config:
        from adafuse.engine.config import load_config, model_kwargs, resolve_config

        given = [f for f in ("backbone", "method", "policy_hidden", "policy_quota") if getattr(args, f) is not None]
        if given or args.shared_policy or args.policy_group_size != 1:
            raise UserError("--config gives the model: drop --backbone/--method/--policy-*/--shared-policy")
        config = load_config(resolve_config(args.config))
        kwargs = model_kwargs(config)
        size = args.input_size or config["data"]["input_size"]
    elif args.backbone is None or args.method is None:
        raise UserError("give --backbone and --method, or --config")
    else:
        kwargs = {"backbone": args.backbone, "method": args.method, "policy_hidden": args.policy_hidden,
                  "policy_quota": args.policy_quota, "shared_policy": args.shared_policy,
                  "policy_group_size": args.policy_group_size}  # fmt: skip
        size = args.input_size or get_backbone(args.backbone).input_size
    if size < 32:
        raise UserError(f"--input-size must be at least 32, got {size}")
    if args.num_segments is not None:
        kwargs["num_segments"] = args.num_segments
    with torch.device("meta"):
        model = build_model(**kwargs, num_classes=args.num_classes, input_size=size)
    table = profile(model, input_size=size)
    args.backbone, args.method, args.num_segments = model.config.backbone, model.config.method, model.num_segments
    policy_params = sum(
        p.numel() for n, p in model.named_parameters() if ".fusion." in n or n.startswith("policy.")
    )
    result = {
        "backbone": args.backbone,
        "method": args.method,
        "num_classes": args.num_classes,
        "num_segments": args.num_segments,
        "input_size": size,
        "params": count_params(model),
        "policy_params": policy_params,
        "gflops": round(table.dense_gmacs, 4),
        "gflops_per_frame": round(table.dense_gmacs / args.num_segments, 4),
        "unit": "GMACs per video (T frames, 1 clip, 1 crop)",
    }
    for savings in table.choice.values():  # frame choices (AR-Net): what one frame costs under each action
        per_frame = table.dense_macs / args.num_segments - savings
        result["frame_actions"] = dict(zip(model.action_names(), (round(v / 1e9, 4) for v in per_frame.tolist()),
                                           strict=True))  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.method} / {args.backbone}, {args.num_classes} classes, T={args.num_segments}, {size} px")
        print(f"  params        {result['params']:,} (policy {policy_params:,})")
        print(f"  GFLOPs/video  {result['gflops']:.2f}  (GMACs; {result['gflops_per_frame']:.3f} per frame)")
        for action, gmacs in result.get("frame_actions", {}).items():
            print(f"  a frame choosing {action:<16} {gmacs:.3f} GMACs")
    return 0
