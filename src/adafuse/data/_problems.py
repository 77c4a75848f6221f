"""What happens on bad input: a :class:`~adafuse.errors.UserError` (default) or, with ``on_error="skip"``,
a warning per problem and a count at the end. Never a silent substitution."""

from __future__ import annotations

import logging
from typing import Literal

from adafuse.errors import UserError

OnError = Literal["raise", "skip"]

log = logging.getLogger("adafuse.data")


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` value."""
    if on_error not in ("raise", "skip"):
        raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]


class Problems:
    """Collects problems with the input: raises on the first one, or warns and counts when skipping.

    Each message names the file and line at fault, e.g. ``train.txt:12: label 180 is out of range``.
    """

    def __init__(self, on_error: OnError) -> None:
        self.on_error = check_on_error(on_error)
        self.skipped = 0

    def __call__(self, message: str) -> None:
        """Report one problem; returns only when skipping."""
        if self.on_error == "raise":
            raise UserError(message)
        self.skipped += 1
        log.warning("%s; skipped", message)

    def summary(self, what: str, total: int) -> None:
        """Log how many of ``total`` items of ``what`` were skipped (nothing when none was)."""
        if self.skipped:
            log.warning("%s: skipped %d of %d (see the warnings above)", what, self.skipped, total)
