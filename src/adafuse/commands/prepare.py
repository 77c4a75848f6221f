"""``adafuse prepare``: extract frames from videos, and build list files from annotations or a class tree."""

from __future__ import annotations

import argparse
import json

_SOURCES = ("something_v2", "something_v1", "jester", "tree")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``prepare frames`` and ``prepare lists``."""
    p = sub.add_parser(
        "prepare",
        help="extract frames from videos; build list files",
        description="Dataset preparation: 'frames' extracts JPEG frames from video files, 'lists' writes "
        "train.txt, val.txt, classes.txt and dataset.yaml from the official annotations or a class-folder tree.",
    )
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True

    f = what.add_parser(
        "frames",
        help="extract JPEG frames from every video under a folder",
        description="Decode every video under --videos (recursively) into OUT/<relative path without extension>/"
        "00001.jpg ... in parallel. Resumable: finished folders are skipped and an interrupted video is redone.",
    )
    f.add_argument("--videos", required=True, help="folder with video files (searched recursively)")
    f.add_argument("--out", required=True, help="output root for the frame folders")
    f.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    f.add_argument("--template", default="{:05d}.jpg", help="frame file name of a 1-based index (default {:05d}.jpg)")
    f.add_argument("--short-side", type=int, default=256, help="resize the shorter side to this (0: keep; default 256)")
    f.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    f.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="on an unreadable video")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=run_frames)

    lists = what.add_parser(
        "lists",
        help="write list files, classes.txt and dataset.yaml",
        description="Sources: something_v2 (--labels something-something-v2-labels.json, --train/--val the "
        "train/validation json), something_v1 and jester (--labels the labels csv, --train/--val the 'id;label' "
        "csv), tree (ROOT/train/<class>/<item> and ROOT/val/<class>/<item>, items being videos or frame folders). "
        "Frames are counted in the folders under --root.",
    )
    lists.add_argument("--source", required=True, choices=_SOURCES, help="annotation format")
    lists.add_argument("--root", required=True, help="folder of the frame folders (or of the tree)")
    lists.add_argument("--out", required=True, help="where to write the lists and dataset.yaml")
    lists.add_argument("--labels", help="labels file of the official annotations")
    lists.add_argument("--train", help="train annotation file")
    lists.add_argument("--val", help="validation annotation file")
    lists.add_argument("--preset", help="dataset preset written to dataset.yaml (default: the source's, or custom)")
    lists.add_argument("--template", help="frame file name of a 1-based index (default: the preset's)")
    lists.add_argument("--split-dirs", action="store_true", help="frame folders are ROOT/train/<id> and ROOT/val/<id>")
    lists.add_argument("--flip", choices=("true", "false", "swap"), help="flip rule (required for a custom preset)")
    lists.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="on a bad or missing entry")
    lists.add_argument("--json", action="store_true", help="print one JSON object")
    lists.set_defaults(func=run_lists)


def run_frames(args: argparse.Namespace) -> int:
    """Extract and summarise."""
    from adafuse.data.extract import extract_frames
    from adafuse.errors import UserError

    if args.workers < 1 or args.short_side < 0 or not 1 <= args.quality <= 100:
        raise UserError("need --workers >= 1, --short-side >= 0 and 1 <= --quality <= 100")
    summary = extract_frames(
        videos=args.videos,
        out=args.out,
        template=args.template,
        short_side=args.short_side,
        quality=args.quality,
        workers=args.workers,
        on_error=args.on_error,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['videos']} videos: {summary['extracted']} extracted ({summary['frames']} frames), "
            f"{summary['already_done']} already done, {summary['failed']} failed, in {summary['seconds']:.1f} s "
            f"→ {summary['out']}"
        )
    return 0


def run_lists(args: argparse.Namespace) -> int:
    """Read the annotations, count frames, write the lists."""
    from adafuse.data import annotations
    from adafuse.data.presets import preset_class_names
    from adafuse.errors import UserError

    preset = args.preset or ("custom" if args.source == "tree" else args.source)
    splits = {}
    names: list[str] = []
    for split, path in (("train", args.train), ("val", args.val)):
        prefix = f"{split}/" if args.split_dirs else ""
        if args.source == "tree":
            if path is not None or args.labels is not None:
                raise UserError("--source tree takes no --labels/--train/--val: the tree holds train/ and val/")
            tree_names, splits[split] = annotations.tree_entries(args.root, split)
            names = names or tree_names  # train's classes; val's must be among them
            continue
        if args.labels is None or path is None:
            raise UserError(f"--source {args.source} needs --labels, --train and --val")
        read = annotations.something_v2_entries if args.source == "something_v2" else annotations.csv_entries
        names, splits[split] = read(labels=args.labels, annotations=path, prefix=prefix)
    if args.source == "tree" and preset_class_names(preset):
        names = preset_class_names(preset)  # folder names must then be the preset's class names
    flip = {"true": True, "false": False, "swap": "swap", None: None}[args.flip]
    summary = annotations.write_lists(
        out=args.out,
        root=args.root,
        class_names=names,
        splits=splits,
        preset=preset,
        template=args.template,
        flip=flip,
        on_error=args.on_error,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        counts = ", ".join(f"{summary[s]} {s}" for s in splits)
        print(f"listed {counts} ({summary['format']}, {summary['num_classes']} classes) → {summary['dataset']}")
    return 0
