"""The ``adafuse`` command.

Each sub-command lives in ``adafuse.commands.<name>`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Command modules import torch and friends inside ``func`` so that
``adafuse --help`` stays fast. A :class:`~adafuse.errors.UserError` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from adafuse.errors import UserError

# Order is the order of `adafuse --help`.
COMMANDS = ("demo", "synth", "prepare", "train", "eval", "flops", "predict", "export", "bench", "plot")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not the whole usage text) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command registered."""
    parser = _Parser(prog="adafuse", description="Adaptive temporal fusion for efficient video recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"adafuse.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"adafuse {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adafuse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
