"""The ``adafuse`` command.

Each sub-command lives in ``adafuse.commands.<name>`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Command modules import torch and friends inside ``func`` so that
``adafuse --help`` stays fast. A :class:`~adafuse.errors.UserError`, or an ``OSError`` (a read-only folder, a full
disk), becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from adafuse.errors import UserError

# Order is the order of `adafuse --help`.
COMMANDS = (
    "demo", "synth", "prepare", "train", "config", "eval", "convert", "flops", "predict", "export", "bench", "plot",
)


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
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides (section.key=value) are accepted anywhere, also after options: argparse leaves those it meets
    # after an option unparsed.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"adafuse {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # whoever read stdout went away (`| head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a read-only folder, a full disk, ...: the path and the system's reason, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"adafuse {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adafuse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
