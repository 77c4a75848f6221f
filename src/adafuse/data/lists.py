"""List files and class files.

Two list formats, as the field uses them (TSN/TSM and mmaction2/pytorchvideo):

- frame folders: ``<folder> <num_frames> <label>``, frames ``1..num_frames`` named by a template;
- video files: ``<file> <label>``.

With ``spaces_in_paths`` every token but the last two (one for videos) is the path, so Mini-Kinetics paths like
``images/val/air drumming/7LSJ2Ryv1a8_000000_000010 60 0`` survive. Without it a line must have exactly three
(two) tokens: an extra column is an error rather than a silently mis-read path.

Class files come in two forms, detected per file: ``idx,name`` lines (AdaFuse's ``classInd.txt``) or one name per
line in index order (TSM's ``category.txt``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adafuse.data._problems import OnError, Problems
from adafuse.errors import UserError

ListFormat = Literal["frames", "video"]

_INDEXED = re.compile(r"^\s*(\d+)\s*,(.*)$")
_INTEGER = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a list file.

    Attributes:
        path: frame folder or video file, relative to the dataset root, as written in the list.
        num_frames: frame count from the list (frame folders); ``None`` for video files (read from the file).
        label: class index.
        source: ``"<list file>:<line>"``, used by every error message about this video.
    """

    path: str
    num_frames: int | None
    label: int
    source: str


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


def read_list(
    path: str | Path,
    *,
    root: str | Path,
    format: ListFormat,
    num_classes: int,
    spaces_in_paths: bool = True,
    min_frames: int = 1,
    on_error: OnError = "raise",
) -> list[VideoRecord]:
    """Parse and check a list file against the files under ``root``.

    Checked here, before any training starts: the line format, the label range, ``num_frames >= min_frames`` and
    that every frame folder (video file) exists. Frame-level problems (a missing or corrupt JPEG) surface when the
    clip is loaded.

    Args:
        path: the list file.
        root: folder the listed paths are relative to.
        format: ``"frames"`` (``folder num_frames label``) or ``"video"`` (``file label``).
        num_classes: labels must lie in ``[0, num_classes)``.
        spaces_in_paths: join all leading tokens into the path (Mini-Kinetics); otherwise demand exact columns.
        min_frames: fewest frames a listed frame folder may have (the official code silently drops < 3).
        on_error: ``"raise"`` on the first bad line, or ``"skip"`` it with a warning and a count at the end.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise UserError(f"{path}: list file not found")
    if not root.is_dir():
        raise UserError(f"{root}: dataset root folder not found (list {path})")
    problems = Problems(on_error)
    columns = 3 if format == "frames" else 2
    usage = "<folder> <num_frames> <label>" if format == "frames" else "<video file> <label>"
    records: list[VideoRecord] = []
    total = 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        total += 1
        where = f"{path}:{n}"
        tokens = line.rsplit(None, columns - 1) if spaces_in_paths else line.split()
        if len(tokens) != columns:
            problems(f"{where}: expected '{usage}', got {line!r}")
            continue
        numbers = tokens[1:]
        if not all(_INTEGER.match(t) for t in numbers):
            problems(f"{where}: expected '{usage}' with integer {' and '.join(usage.split()[1:])}, got {line!r}")
            continue
        label = int(numbers[-1])
        num_frames = int(numbers[0]) if format == "frames" else None
        if not 0 <= label < num_classes:
            problems(f"{where}: label {label} is out of range for {num_classes} classes")
            continue
        if num_frames is not None and num_frames < max(min_frames, 1):
            problems(f"{where}: {num_frames} frames listed, fewer than the {max(min_frames, 1)} needed")
            continue
        target = root / tokens[0]
        if format == "frames" and not target.is_dir():
            problems(f"{where}: frame folder {target} not found")
            continue
        if format == "video" and not target.is_file():
            problems(f"{where}: video file {target} not found")
            continue
        records.append(VideoRecord(tokens[0], num_frames, label, where))
    problems.summary(f"{path}", total)
    if not records:
        raise UserError(f"{path}: no usable videos listed")
    return records
