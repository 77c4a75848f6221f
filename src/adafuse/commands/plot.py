"""``adafuse plot``: the paper's Figures 2–4 from ``adafuse eval --json`` results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` sub-command."""
    p = sub.add_parser(
        "plot",
        help="plot eval results (Figures 2, 3, 4)",
        description="Plot results of `adafuse eval --json` (a file holding one result, or {'results': [...]}). "
        "tradeoff: GFLOPs vs top-1 bubbles sized by parameters (Fig. 2); policy: keep/reuse/skip pies (Fig. 3); "
        "blocks: per-block policy with instance shares and cubic trends (Fig. 4).",
    )
    p.add_argument("kind", choices=("tradeoff", "policy", "blocks"))
    p.add_argument("results", nargs="+", type=Path, help="JSON files from adafuse eval --json")
    p.add_argument("--labels", help="comma-separated labels, one per result")
    p.add_argument("--title", default=None)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def read_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Every result in the given JSON files, in order."""
    from adafuse.errors import UserError

    results = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        items = data["results"] if isinstance(data, dict) and "results" in data else [data]
        for item in items:
            missing = [k for k in ("top1", "gflops", "params") if not isinstance(item, dict) or k not in item]
            if missing:
                raise UserError(f"{path}: not an eval result (missing {', '.join(missing)})")
            results.append(item)
    return results


def run(args: argparse.Namespace) -> int:
    """Read the results and draw."""
    from adafuse import viz
    from adafuse.errors import UserError
    from adafuse.outputs import check_writable

    results = read_results(args.results)
    check_writable(args.out.parent)
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(results):
        raise UserError(f"--labels gives {len(labels)} labels for {len(results)} results")
    if args.kind != "tradeoff":
        without = [i for i, r in enumerate(results) if "policy" not in r]
        if without:
            raise UserError(f"result {without[0] + 1} ({results[without[0]].get('method', '?')}) has no policy")
    if args.kind == "tradeoff":
        path = viz.plot_tradeoff(results, args.out, labels=labels, title=args.title or "GFLOPs vs accuracy")
    elif args.kind == "policy":
        path = viz.plot_policy_pies(results, args.out, labels=labels or [r.get("method", "?") for r in results])
    else:
        if len(results) != 1:
            raise UserError(f"blocks plots one result, got {len(results)}")
        path = viz.plot_policy_blocks(results[0], args.out, title=args.title or "Policy per block")
    print(json.dumps({"plot": str(path)}) if args.json else path)
    return 0
