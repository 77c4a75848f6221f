"""The paper's datasets as data: file naming, class names and flip rule of each.

A preset only fills defaults of a :class:`~adafuse.data.spec.DatasetSpec`; every field can be overridden, and
``custom`` has no defaults beyond the template. Class names ship with the package (``adafuse/data/classes``),
copied from the authors' repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from adafuse.data.classes import read_class_names
from adafuse.errors import UserError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class Preset:
    """Naming and augmentation facts of one dataset.

    Attributes:
        name: preset key.
        template: frame file name for a 1-based index, e.g. ``"{:05d}.jpg"`` → ``00001.jpg``.
        num_classes: number of classes (``None`` for ``custom``: the user says).
        flip: random horizontal flip during training (off where labels say left or right).
        spaces_in_paths: list paths may contain spaces (every token but the last two is the path).
        classes: packaged class file name, ``None`` for ``custom``.
        flip_label_map: classes that swap under a horizontal flip, for flipping with label swapping.
    """

    name: str
    template: str
    num_classes: int | None
    flip: bool | None
    spaces_in_paths: bool
    classes: str | None
    flip_label_map: dict[int, int] = field(default_factory=dict)


def _pairs(*pairs: tuple[int, int]) -> dict[int, int]:
    return {k: v for a, b in pairs for k, v in ((a, b), (b, a))}


# Flip is off for the Something sets and Jester, as in the official code: their labels say left or right.
# The flip maps pair the left/right (and clockwise/counter-clockwise) classes by name, for flip: swap.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="something_v1",
            template="{:05d}.jpg",
            num_classes=174,
            flip=False,
            spaces_in_paths=False,
            classes="something_v1.txt",
            flip_label_map=_pairs((2, 4), (30, 41), (52, 66)),
        ),
        Preset(
            name="something_v2",
            template="{:06d}.jpg",  # TSM's vid2img_sthv2.py; AdaFuse's {:05d}.jpg in train/<id>, val/<id> is detected
            num_classes=174,
            flip=False,
            spaces_in_paths=False,
            classes="something_v2.txt",
            flip_label_map=_pairs((86, 87), (93, 94), (166, 167)),
        ),
        Preset(
            name="jester",
            template="{:05d}.jpg",
            num_classes=27,
            flip=False,
            spaces_in_paths=False,
            classes="jester.txt",
            flip_label_map=_pairs((0, 1), (6, 7), (14, 15)),
        ),
        Preset(
            name="mini_kinetics",
            template="{:05d}.jpg",  # the authors' frames and `adafuse prepare frames`; TSN's img_{:05d}.jpg is detected
            num_classes=200,
            flip=True,
            spaces_in_paths=True,
            classes="mini_kinetics.txt",
        ),
        Preset(
            name="custom",
            template="{:05d}.jpg",
            num_classes=None,
            flip=None,
            spaces_in_paths=True,
            classes=None,
        ),
    )
}


# The authors' dataset keys (their --dataset flag) name the same presets.
ALIASES: dict[str, str] = {"something": "something_v1", "somethingv2": "something_v2", "minik": "mini_kinetics"}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (or by the authors' key, see :data:`ALIASES`); a :class:`UserError` otherwise."""
    preset = PRESETS.get(ALIASES.get(name, name))
    if preset is None:
        aliases = ", ".join(f"{a} = {b}" for a, b in ALIASES.items())
        raise UserError(f"unknown dataset preset {name!r}; known: {', '.join(PRESETS)} (also {aliases})")
    return preset


def packaged_class_file(name: str) -> Traversable | None:
    """The class file that ships with a preset (``None`` for ``custom``)."""
    preset = get_preset(name)
    return None if preset.classes is None else resources.files("adafuse.data") / "classes" / preset.classes


def preset_class_names(name: str) -> list[str]:
    """Class names of a preset in index order (empty for ``custom``)."""
    packaged = packaged_class_file(name)
    if packaged is None:
        return []
    with resources.as_file(packaged) as path:
        return read_class_names(path)
