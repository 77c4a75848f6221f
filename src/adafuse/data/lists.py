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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adafuse.data._problems import OnError, Problems, log
from adafuse.data.presets import PRESETS
from adafuse.errors import UserError

ListFormat = Literal["frames", "video"]

_INTEGER = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a list file.

    Attributes:
        path: frame folder or video file relative to the dataset root: the listed path, or where the layout
            found it (``train/194181`` listed, ``194181`` on disk).
        num_frames: frame count from the list (frame folders); ``None`` for video files (read from the file).
        label: class index.
        source: ``"<list file>:<line>"``, used by every error message about this video.
    """

    path: str
    num_frames: int | None
    label: int
    source: str


def read_list(
    path: str | Path,
    *,
    root: str | Path,
    format: ListFormat,
    num_classes: int,
    spaces_in_paths: bool = True,
    min_frames: int = 1,
    on_error: OnError = "raise",
    locate: Callable[[str], str] | None = None,
) -> list[VideoRecord]:
    """Parse and check a list file against the files under ``root``.

    Checked here, before any training starts: the line format, the label range and that every frame folder (video
    file) exists. Frame-level problems (a missing or corrupt JPEG) surface when the clip is loaded. Frame folders
    listed with fewer than ``min_frames`` frames are dropped, as the official code drops videos under 3 frames,
    and counted in one warning.

    Args:
        path: the list file.
        root: folder the listed paths are relative to.
        format: ``"frames"`` (``folder num_frames label``) or ``"video"`` (``file label``).
        num_classes: labels must lie in ``[0, num_classes)``.
        spaces_in_paths: join all leading tokens into the path (Mini-Kinetics); otherwise demand exact columns.
        min_frames: drop frame folders listed with fewer frames (1: keep all; 0 frames is always an error).
        on_error: ``"raise"`` on the first bad line, or ``"skip"`` it with a warning and a count at the end.
        locate: maps a listed path to its folder under ``root`` (see :func:`~adafuse.data.layout.resolve_layout`);
            default: the path as listed.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise UserError(f"{path}: list file not found")
    if not root.is_dir():
        raise UserError(f"{root}: dataset root folder not found (list {path})")
    problems = Problems(on_error)
    records: list[VideoRecord] = []
    total = dropped = 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        total += 1
        where = f"{path}:{n}"
        try:
            listed, num_frames, label = parse_line(line, format=format, spaces_in_paths=spaces_in_paths)
        except ValueError as e:
            problems(f"{where}: {e}")
            continue
        if not 0 <= label < num_classes:
            problems(f"{where}: label {label} is out of range for {num_classes} classes")
            continue
        if num_frames is not None and num_frames < 1:
            problems(f"{where}: {num_frames} frames listed, fewer than the 1 needed")
            continue
        if num_frames is not None and num_frames < min_frames:
            dropped += 1
            continue
        rel = locate(listed) if locate is not None else listed
        target = root / rel
        if format == "frames" and not target.is_dir():
            problems(f"{where}: frame folder {target} not found")
            continue
        if format == "video" and not target.is_file():
            problems(f"{where}: video file {target} not found")
            continue
        records.append(VideoRecord(rel, num_frames, label, where))
    problems.summary(f"{path}", total)
    if dropped:
        log.warning(
            "%s: dropped %d of %d videos listed with fewer than %d frames (min_frames)",
            path,
            dropped,
            total,
            min_frames,
        )
    if not records:
        raise UserError(f"{path}: no usable videos listed")
    return records


def parse_line(line: str, *, format: ListFormat, spaces_in_paths: bool) -> tuple[str, int | None, int]:
    """``(path, num_frames, label)`` of one list line (``num_frames`` ``None`` for video lists).

    Raises:
        ValueError: what is wrong with the line, with a hint for the common slips (``;`` columns, paths with spaces
            under a preset that splits at spaces).
    """
    columns = 3 if format == "frames" else 2
    usage = "<folder> <num_frames> <label>" if format == "frames" else "<video file> <label>"
    tokens = line.rsplit(None, columns - 1) if spaces_in_paths else line.split()
    if len(tokens) != columns:
        raise ValueError(f"expected '{usage}', got {line!r}{_hint(line, tokens, columns, spaces_in_paths)}")
    numbers = tokens[1:]
    if not all(_INTEGER.match(t) for t in numbers):
        what = " and ".join(usage.split()[1:])
        raise ValueError(f"expected '{usage}' with integer {what}, got {line!r}{_hint(line, tokens, columns, True)}")
    return tokens[0], int(numbers[0]) if format == "frames" else None, int(numbers[-1])


def _hint(line: str, tokens: list[str], columns: int, spaces_in_paths: bool) -> str:
    """A hint for the two common slips behind a malformed line, or nothing."""
    parts = line.split(";")
    if len(parts) == columns and all(_INTEGER.match(p.strip()) for p in parts[1:]):
        return (
            "; its columns are separated by ';', list files use spaces (Mini-Kinetics: mini_val_videofolder.txt, "
            "not mini_val.txt)"
        )
    numbers, path_tokens = tokens[len(tokens) - columns + 1 :], tokens[: len(tokens) - columns + 1]
    spaced = not spaces_in_paths and len(tokens) > columns and all(_INTEGER.match(t) for t in numbers)
    # Extra integer columns are more labels (a multi-label line), not a path with spaces.
    if spaced and not all(_INTEGER.match(t) for t in path_tokens[1:]):
        allowing = " and ".join(name for name, p in PRESETS.items() if p.spaces_in_paths)
        return f"; its path has spaces, which only the presets {allowing} read as part of a path"
    return ""


def list_head(
    path: str | Path, *, format: ListFormat, spaces_in_paths: bool, count: int
) -> list[tuple[str, str, int | None]]:
    """``(where, path, num_frames)`` of the first ``count`` well-formed lines of a list (bad lines are passed over:
    :func:`read_list` reports them)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: list file not found")
    head = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if len(head) == count:
                break
            try:
                listed, num_frames, _ = parse_line(line.strip(), format=format, spaces_in_paths=spaces_in_paths)
            except ValueError:
                continue
            head.append((f"{path}:{n}", listed, num_frames))
    return head
