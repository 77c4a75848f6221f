"""Class files: ``idx,name`` lines (Something-Something's classInd) or one name per line, in label order."""

from __future__ import annotations

import re
from pathlib import Path

from adafuse.errors import UserError

_INDEXED = re.compile(r"^\s*(\d+)\s*,(.*)$")


def read_class_names(path: str | Path) -> list[str]:
    """Class names in index order from an ``idx,name`` or a one-name-per-line file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class file not found")
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    while lines and not lines[-1][1]:
        lines.pop()  # trailing blank lines are harmless; blank lines inside would shift the indices
    if not lines:
        raise UserError(f"{path}: class file is empty")
    indexed = all(_INDEXED.match(line) for _, line in lines)
    names: dict[int, str] = {}
    for n, line in lines:
        if indexed:
            m = _INDEXED.match(line)
            idx, name = int(m.group(1)), m.group(2).strip()  # type: ignore[union-attr]
        else:
            idx, name = len(names), line
        if not name:
            raise UserError(f"{path}:{n}: empty class name")
        if idx in names:
            raise UserError(f"{path}:{n}: class index {idx} appears twice")
        names[idx] = name
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise UserError(f"{path}: class indices must be 0..{len(names) - 1}; index {missing[0]} is missing")
    return [names[i] for i in range(len(names))]
