"""Progress on stderr, never stdout (which ``--json`` keeps for one JSON object).

On a terminal: a tqdm bar. Anywhere else (a log file, a pipe): a plain line every :data:`PLAIN_EVERY_S` seconds
and one at the end, so a redirected log holds a few readable lines instead of carriage-return frames.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

PLAIN_EVERY_S = 60.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Meter:
    """Counts units of work towards ``total`` and shows it: a bar on a terminal, plain periodic lines elsewhere.

    Args:
        desc: what is counted (``"eval"``, ``"epoch 3/15"``).
        total: units expected (None: unknown).
        initial: units already done (a run resumed mid-epoch).
        unit: the unit's name.
    """

    def __init__(self, desc: str, *, total: int | None, initial: int = 0, unit: str = "batch") -> None:
        self.desc, self.total, self.done, self.unit = desc, total, initial, unit
        self.start = self.last_line = time.perf_counter()
        self.initial = initial
        self.bar = (
            tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
            if sys.stderr.isatty()
            else None
        )

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more units done; ``postfix`` values (e.g. the loss) are shown beside the count."""
        self.done += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(n)
        elif time.perf_counter() - self.last_line >= PLAIN_EVERY_S:
            self.last_line = time.perf_counter()
            print(self.summary(**postfix), file=sys.stderr, flush=True)

    def summary(self, **postfix: Any) -> str:
        """``"eval: 12/30 batches, loss 1.2, 40 s (ETA 1 min 00 s)"``."""
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        extra = "".join(f", {k} {v:.4g}" for k, v in postfix.items())
        elapsed = time.perf_counter() - self.start
        timing = _duration(elapsed)
        if self.total and self.initial < self.done < self.total:
            rate = elapsed / (self.done - self.initial)
            timing += f" (ETA {_duration(rate * (self.total - self.done))})"
        return f"{self.desc}: {count} {self.unit}{'es' if self.unit.endswith('ch') else 's'}{extra}, {timing}"

    def close(self, message: str | None = None) -> None:
        """Remove the bar, and print ``message`` as a line (plain mode always prints a final count)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if message is not None:
            print(message, file=sys.stderr, flush=True)


def iter_progress(iterable: Iterable[T], *, total: int | None, desc: str, enabled: bool = True) -> Iterator[T]:
    """Yield from ``iterable``, showing progress on stderr when ``enabled``."""
    if not enabled:
        yield from iterable
        return
    meter = Meter(desc, total=total)
    try:
        for item in iterable:
            yield item
            meter.update()
    finally:
        meter.close(None if meter.bar is not None else meter.summary())
