"""Dataset descriptors: where a dataset lives and how its files are named.

A descriptor is a small YAML file (``dataset.yaml``) that ``adafuse synth`` and ``adafuse prepare lists`` write and
training configs point to::

    preset: something_v2          # fills the defaults below; "custom" has none
    format: frames                # frames (folder num_frames label) or video (file label)
    root: frames                  # relative paths resolve against this file's folder
    train_list: train.txt
    val_list: val.txt
    classes: classes.txt          # idx,name or one name per line; default: the class file beside the lists
                                  # (classInd.txt, category.txt, classes.txt), else the preset's packaged names
    template: "{:06d}.jpg"        # frame file of a 1-based index
    num_classes: 174
    flip: false                   # true, false, or swap (flip and swap left/right labels)
    flip_label_map: {86: 87, 87: 86}   # pairs swapped by a flip; default for swap: the preset's
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adafuse.data._problems import log
from adafuse.data.classes import read_class_names
from adafuse.data.lists import ListFormat
from adafuse.data.presets import get_preset, packaged_class_file, preset_class_names
from adafuse.errors import UserError

_KEYS = (
    "preset",
    "format",
    "root",
    "train_list",
    "val_list",
    "classes",
    "template",
    "num_classes",
    "flip",
    "flip_label_map",
)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset on disk with every default filled in and every path resolved.

    Attributes:
        preset: the preset it was built from.
        root: folder the list paths are relative to.
        train_list, val_list: list files (``None`` when not given).
        class_names: one name per class, index order.
        template: frame file name of a 1-based index (frame folders).
        format: ``"frames"`` or ``"video"``.
        flip: random horizontal flip during training.
        flip_label_map: labels swapped by a flip (empty: a flip keeps the label).
        spaces_in_paths: list paths may contain spaces.
    """

    preset: str
    root: Path
    train_list: Path | None
    val_list: Path | None
    class_names: tuple[str, ...]
    template: str
    format: ListFormat
    flip: bool
    flip_label_map: dict[int, int]
    spaces_in_paths: bool

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def list_file(self, split: str) -> Path:
        """The list file of ``split`` (``"train"`` or ``"val"``)."""
        if split not in ("train", "val"):
            raise UserError(f"split must be 'train' or 'val', got {split!r}")
        path = self.train_list if split == "train" else self.val_list
        if path is None:
            raise UserError(f"the dataset (preset {self.preset}, root {self.root}) has no {split}_list")
        return path


def dataset_spec(
    *,
    preset: str = "custom",
    root: str | Path,
    train_list: str | Path | None = None,
    val_list: str | Path | None = None,
    classes: str | Path | None = None,
    template: str | None = None,
    num_classes: int | None = None,
    flip: bool | str | None = None,
    flip_label_map: dict[int, int] | None = None,
    format: str = "frames",
    base: str | Path = ".",
) -> DatasetSpec:
    """Build a :class:`DatasetSpec` from a preset and overrides; relative paths resolve against ``base``."""
    values = {k: v for k, v in locals().items() if k in _KEYS and v is not None}
    return _build(values, base=Path(base), origin="dataset", lines={})


def load_dataset_yaml(path: str | Path) -> DatasetSpec:
    """Read a ``dataset.yaml``; relative paths in it resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: dataset descriptor not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(values, dict) or not isinstance(node, yaml.MappingNode):
        raise UserError(f"{path}: expected a mapping of {', '.join(_KEYS)}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    for key in values:
        if key not in _KEYS:
            raise UserError(f"{path}:{lines.get(key, 1)}: unknown key {key!r}; known: {', '.join(_KEYS)}")
    if "root" not in values:
        raise UserError(f"{path}: missing key 'root'")
    values = {k: v for k, v in values.items() if v is not None}
    return _build(values, base=path.parent, origin=str(path), lines=lines)


def save_dataset_yaml(path: str | Path, **fields: Any) -> Path:
    """Write a ``dataset.yaml`` with the given keys (relative paths stay relative to its folder)."""
    unknown = sorted(set(fields) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown dataset.yaml keys: {unknown}")
    path = Path(path)
    ordered = {k: fields[k] for k in _KEYS if fields.get(k) is not None}
    path.write_text(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _build(values: dict[str, Any], *, base: Path, origin: str, lines: dict[str, int]) -> DatasetSpec:
    def at(key: str) -> str:
        return f"{origin}:{lines[key]}" if key in lines else origin

    def typed(key: str, kinds: tuple[type, ...], what: str) -> Any:
        value = values.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
            raise UserError(f"{at(key)}: {key} must be {what}, got {value!r}")
        return value

    def resolve(key: str) -> Path | None:
        value = typed(key, (str, Path), "a path")
        return None if value is None else base / Path(value).expanduser()

    try:
        preset = get_preset(typed("preset", (str,), "a preset name") or "custom")
    except UserError as e:
        raise UserError(f"{at('preset')}: {e}") from None
    fmt = typed("format", (str,), "'frames' or 'video'") or "frames"
    if fmt not in ("frames", "video"):
        raise UserError(f"{at('format')}: format must be 'frames' or 'video', got {fmt!r}")

    template = typed("template", (str,), "a format string such as '{:05d}.jpg'") or preset.template
    try:
        first, second = template.format(1), template.format(2)
    except (IndexError, KeyError, ValueError) as e:
        raise UserError(f"{at('template')}: template {template!r} does not format a frame index ({e})") from None
    if first == second:
        raise UserError(f"{at('template')}: template {template!r} gives the same name to every frame")

    classes, beside = resolve("classes"), False
    if classes is None and preset.classes is not None:
        classes = _class_file_beside(resolve("train_list"), resolve("val_list"))
        beside = classes is not None
    names = read_class_names(classes) if classes is not None else preset_class_names(preset.name)
    if classes is not None and preset.classes is not None:
        _report_class_order(names, f"{classes} (beside the lists)" if beside else str(classes), preset.name, origin)
    num_classes = typed("num_classes", (int,), "a positive integer")
    if names and num_classes is not None and num_classes != len(names):
        where = classes if classes is not None else f"preset {preset.name}"
        raise UserError(f"{at('num_classes')}: num_classes is {num_classes} but {where} has {len(names)} classes")
    if not names:
        if num_classes is None or num_classes < 1:
            raise UserError(f"{origin}: give 'classes' (a class file) or a positive 'num_classes'")
        names = [str(i) for i in range(num_classes)]

    flip = typed("flip", (bool, str), "true, false or 'swap'")
    flip = preset.flip if flip is None else flip
    if flip is None:
        raise UserError(f"{origin}: say whether frames may be flipped (flip: true, false or swap)")
    if isinstance(flip, str) and flip != "swap":
        raise UserError(f"{at('flip')}: flip must be true, false or 'swap', got {flip!r}")
    flip_map = typed("flip_label_map", (dict,), "a mapping of class indices")
    if flip_map is not None and flip is False:
        raise UserError(f"{at('flip_label_map')}: flip_label_map is given but flip is false")
    if flip == "swap" and flip_map is None:
        flip_map = preset.flip_label_map
        if not flip_map:
            raise UserError(f"{at('flip')}: flip: swap needs a flip_label_map (preset {preset.name} has none)")
    flip_map = _check_flip_map(flip_map or {}, len(names), at("flip_label_map"))

    if "root" not in values:
        raise UserError(f"{origin}: the dataset root is required")
    return DatasetSpec(
        preset=preset.name,
        root=resolve("root"),  # type: ignore[arg-type]
        train_list=resolve("train_list"),
        val_list=resolve("val_list"),
        class_names=tuple(names),
        template=template,
        format=fmt,  # type: ignore[arg-type]
        flip=bool(flip),
        flip_label_map=flip_map,
        spaces_in_paths=preset.spaces_in_paths,
    )


def _check_flip_map(mapping: dict, num_classes: int, where: str) -> dict[int, int]:
    """A flip applied twice is the identity, so the map must pair classes symmetrically."""
    out: dict[int, int] = {}
    for a, b in mapping.items():
        try:
            a, b = int(a), int(b)
        except (TypeError, ValueError):
            raise UserError(f"{where}: flip_label_map entries must be class indices, got {a!r}: {b!r}") from None
        if not (0 <= a < num_classes and 0 <= b < num_classes):
            raise UserError(f"{where}: flip_label_map {a}: {b} is out of range for {num_classes} classes")
        out[a] = b
    for a, b in out.items():
        if out.get(b, b) != a:
            raise UserError(f"{where}: flip_label_map must be symmetric: {a} -> {b} but {b} -> {out.get(b, b)}")
    return out


# Class files that come with list files: AdaFuse's classInd.txt (minik_classInd.txt), TSM's category.txt, ours.
_CLASS_FILES = ("classInd.txt", "*_classInd.txt", "category.txt", "classes.txt")


def _class_file_beside(*lists: Path | None) -> Path | None:
    """The class file in the folder of the list files, if there is one (two that disagree are an error)."""
    found: dict[Path, list[str]] = {}
    for folder in dict.fromkeys(p.parent for p in lists if p is not None):
        for pattern in _CLASS_FILES:
            for path in sorted(folder.glob(pattern)):
                found.setdefault(path, read_class_names(path))
    if not found:
        return None
    (first, names), *others = found.items()
    for other, other_names in others:
        if other_names != names:
            raise UserError(f"{first} and {other} both lie beside the lists and differ: say which with 'classes'")
    return first


def _report_class_order(names: list[str], classes: str, preset: str, origin: str) -> None:
    """Warn when a class file disagrees with the preset's packaged names: its labels are not the packaged ones.

    TSM's label scripts sort the class names, so their Something-V1 lists number 173 of the 174 classes
    differently from the authors' classInd.txt (Jester 26 of 27); nothing in the list itself tells.
    """
    packaged = preset_class_names(preset)
    differ = sum(a != b for a, b in zip(names, packaged, strict=False)) + abs(len(names) - len(packaged))
    if differ:
        log.warning(
            "%s: class file %s differs from the packaged %s names (%s) at %d of %d indices; labels follow it",
            origin,
            classes,
            preset,
            packaged_class_file(preset),
            differ,
            max(len(names), len(packaged)),
        )
