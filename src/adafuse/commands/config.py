"""``adafuse config show``: a preset or config file resolved with its overrides, every key explained."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` sub-command."""
    p = sub.add_parser(
        "config",
        help="show a resolved config (a preset or file, with overrides)",
        description="Configs: 'show NAME [section.key=value ...]' prints a preset (configs/*.yaml) or a config file "
        "with every key resolved — defaults filled in, overrides applied — and a comment with each key's meaning. "
        "The key reference (defaults, accepted values): adafuse train --help-config.",
    )
    what = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    what.required = True
    show = what.add_parser("show", help="print a resolved config", description="Print a resolved config.")
    show.add_argument("name", metavar="NAME", help="a preset name or a YAML file")
    show.add_argument("overrides", nargs="*", metavar="section.key=value")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    """Resolve and print."""
    from adafuse.engine.config import config_yaml, load_config, resolve_config

    config = load_config(resolve_config(args.name), args.overrides)
    print(json.dumps(config) if args.json else config_yaml(config), end="\n" if args.json else "")
    return 0
