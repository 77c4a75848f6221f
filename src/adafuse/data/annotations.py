"""List files from the official annotations or from a folder-per-class tree.

Sources:

- Something-Something V2: ``something-something-v2-labels.json`` (``{"name": "idx"}``) and the train/validation
  json (entries with ``id`` and ``template``, whose ``[something]`` brackets are stripped to get the class name);
- Something-Something V1 and Jester: ``id;label`` csv rows and a labels csv with one name per line;
- a tree ``<tree>/train/<class>/<item>`` and ``<tree>/val/<class>/<item>``, items being video files or frame
  folders (Kinetics as torchvision lays it out).

Frames are counted from the extracted folders (``1..n`` must all exist). The output folder gets ``train.txt``,
``val.txt``, ``classes.txt`` (one name per line) and a ``dataset.yaml`` pointing at the frames.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from adafuse.data._problems import OnError, Problems
from adafuse.data.extract import VIDEO_EXTENSIONS
from adafuse.data.presets import get_preset, preset_class_names
from adafuse.data.spec import dataset_spec, save_dataset_yaml
from adafuse.errors import UserError

# (where in the annotations, relative item path, class name)
Entry = tuple[str, str, str]


def count_frame_files(folder: str | Path, template: str) -> int:
    """Number of frames ``template.format(1..n)`` in ``folder``; a gap in the numbering is an error."""
    folder = Path(folder)
    names = set(os.listdir(folder))
    n = 0
    while template.format(n + 1) in names:
        n += 1
    gap = next((i for i in range(n + 2, len(names) + 2) if template.format(i) in names), None)
    if gap is not None:
        raise UserError(f"{folder}: frame {template.format(n + 1)} is missing but {template.format(gap)} exists")
    return n


def something_v2_entries(
    *, labels: str | Path, annotations: str | Path, prefix: str = ""
) -> tuple[list[str], list[Entry]]:
    """Class names and ``(where, folder, class)`` entries of a Something-V2 json split."""
    labels, annotations = Path(labels), Path(annotations)
    table = _load_json(labels)
    if not isinstance(table, dict):
        raise UserError(f"{labels}: expected an object {{class name: index}}")
    try:
        index = {name: int(i) for name, i in table.items()}
    except (TypeError, ValueError):
        raise UserError(f"{labels}: class indices must be integers") from None
    if sorted(index.values()) != list(range(len(index))):
        raise UserError(f"{labels}: class indices must be 0..{len(index) - 1}, each once")
    names = sorted(index, key=index.__getitem__)
    items = _load_json(annotations)
    if not isinstance(items, list):
        raise UserError(f"{annotations}: expected a list of videos")
    entries = []
    for i, item in enumerate(items):
        where = f"{annotations}: entry {i}"
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise UserError(f"{where}: expected an object with 'id' and 'template'")
        entries.append((f"{where} (id {item['id']})", f"{prefix}{item['id']}", _strip_brackets(item["template"])))
    return names, entries


def csv_entries(*, labels: str | Path, annotations: str | Path, prefix: str = "") -> tuple[list[str], list[Entry]]:
    """Class names and entries of a Something-V1 / Jester split (``id;label`` rows, one label name per line)."""
    labels, annotations = Path(labels), Path(annotations)
    names = [line.strip() for line in _read_text(labels).splitlines() if line.strip()]
    entries = []
    for n, line in enumerate(_read_text(annotations).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(";")
        if len(parts) != 2 or not parts[0]:
            raise UserError(f"{annotations}:{n}: expected 'id;label', got {line.strip()!r}")
        entries.append((f"{annotations}:{n}", f"{prefix}{parts[0]}", parts[1].strip()))
    return names, entries


def tree_entries(tree: str | Path, split: str) -> tuple[list[str], list[Entry]]:
    """Class names (sorted folder names) and entries of ``tree/<split>/<class>/<item>``."""
    folder = Path(tree) / split
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found (expected {split}/<class>/<video or frame folder>)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{folder}: no class folders")
    entries = [
        (str(item), f"{split}/{name}/{item.name}", name)
        for name in classes
        for item in sorted((folder / name).iterdir())
        if item.is_dir() or item.suffix.lower() in VIDEO_EXTENSIONS
    ]
    return classes, entries


def write_lists(
    *,
    out: str | Path,
    root: str | Path,
    class_names: list[str],
    splits: dict[str, list[Entry]],
    preset: str = "custom",
    template: str | None = None,
    flip: bool | str | None = None,
    on_error: OnError = "raise",
) -> dict:
    """Resolve entries to list lines and write ``<split>.txt``, ``classes.txt`` and ``dataset.yaml`` in ``out``.

    Items that are folders are listed as ``folder num_frames label`` (frames counted with the template), files as
    ``file label`` (the dataset then decodes them); a split must not mix the two.
    """
    out, root = Path(out), Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: folder not found")
    template = template or get_preset(preset).template
    index = {name: i for i, name in enumerate(class_names)}
    problems = Problems(on_error)
    counts, formats = {}, set()
    lines: dict[str, list[str]] = {}
    for split, entries in splits.items():
        lines[split] = []
        for where, rel, name in entries:
            path = root / rel
            if name not in index:
                problems(f"{where}: unknown class {name!r}")
            elif path.is_dir():
                n = count_frame_files(path, template)
                if n == 0:
                    problems(f"{where}: no frames named like {template.format(1)} in {path}")
                    continue
                formats.add("frames")
                lines[split].append(f"{rel} {n} {index[name]}\n")
            elif path.is_file():
                formats.add("video")
                lines[split].append(f"{rel} {index[name]}\n")
            else:
                problems(f"{where}: {path} not found")
        if not lines[split]:
            raise UserError(f"no usable videos for split {split!r}")
        counts[split] = len(lines[split])
    if len(formats) > 1:
        raise UserError(f"{root}: mixes video files and frame folders; list them separately")
    fmt = formats.pop()
    # Check the descriptor before writing anything (e.g. a custom preset without a flip rule). The class names are
    # the annotations' (classes.txt overrides a preset's packaged names), so only a custom preset needs the count.
    custom = not preset_class_names(preset)
    dataset_spec(
        preset=preset, root=root, num_classes=len(class_names) if custom else None, template=template, flip=flip
    )
    out.mkdir(parents=True, exist_ok=True)
    for split, split_lines in lines.items():
        (out / f"{split}.txt").write_text("".join(split_lines), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
    yaml_path = save_dataset_yaml(
        out / "dataset.yaml",
        preset=preset,
        format=fmt,
        root=os.path.relpath(root.resolve(), out.resolve()),
        train_list="train.txt" if "train" in lines else None,
        val_list="val.txt" if "val" in lines else None,
        classes="classes.txt",
        template=template if fmt == "frames" else None,
        num_classes=len(class_names),
        flip=flip,
    )
    skipped = problems.skipped
    problems.summary("annotations", sum(len(e) for e in splits.values()))
    return {"dataset": str(yaml_path), "format": fmt, "num_classes": len(class_names), **counts, "skipped": skipped}


def _strip_brackets(template: object) -> str:
    return str(template).replace("[", "").replace("]", "")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return path.read_text(encoding="utf-8")


def _load_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
