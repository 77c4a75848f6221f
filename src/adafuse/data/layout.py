"""Where a list's frame folders are and how their frames are named, checked against the files when a dataset is built.

Users arrive with frames from different extraction scripts: Something-V2 as AdaFuse lists it (``train/<id>``,
``val/<id>``, ``00001.jpg``) or as TSM extracts it (flat ``<id>/``, ``000001.jpg``); Mini-Kinetics as ``00001.jpg``
or TSN's ``img_00001.jpg``. :func:`resolve_layout` looks at the first folders of the list. When the configured
layout does not match them it uses the one that does and says so in one warning; when no frame file matches, it
raises a :class:`~adafuse.errors.UserError` naming the folder and a file that is there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from adafuse.data._problems import log
from adafuse.data.lists import list_head
from adafuse.errors import UserError

SAMPLE = 8  # list lines looked at
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation")}
_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")  # prefix, frame number, suffix: img_00001.jpg


@dataclass(frozen=True)
class FrameLayout:
    """How the paths of a list map to frame files.

    Attributes:
        template: frame file name of a 1-based index, e.g. ``"{:05d}.jpg"``.
        strip: leading folder of the listed paths that is not on disk (``"train/"``: ``train/<id>`` listed,
            frames in ``<root>/<id>``).
        prefix: folder under the root holding the listed paths (``"train/"``: ``<id>`` listed, frames in
            ``<root>/train/<id>``).
    """

    template: str
    strip: str = ""
    prefix: str = ""

    def folder(self, listed: str) -> str:
        """The frame folder, relative to the root, of a listed path."""
        if self.strip and listed.startswith(self.strip):
            listed = listed[len(self.strip) :]
        return self.prefix + listed


def resolve_layout(
    list_file: str | Path, *, root: str | Path, template: str, split: str, spaces_in_paths: bool
) -> FrameLayout:
    """The layout of a frame-folder list: the configured one if its first folders match it, else the one they match.

    Folders: as listed, without the listed first folder (flat frames for ``train/<id>`` lists), or under the split's
    folder (``train/``, ``val/`` or ``validation/`` for flat lists), whichever finds most of the first
    :data:`SAMPLE` folders (the listed paths win ties). Template: the configured one unless another frame-1 file
    (``000001.jpg``, ``img_00001.jpg``, …) is in more of those folders. A change is one warning.

    Raises:
        UserError: no frame-1 file in any of the folders, or two equally likely templates.
    """
    root = Path(root)
    configured = FrameLayout(template)
    head = list_head(list_file, format="frames", spaces_in_paths=spaces_in_paths, count=SAMPLE)
    if not head or not root.is_dir():
        return configured  # read_list reports what is wrong
    candidates = [configured]
    firsts = {listed.split("/", 1)[0] for _, listed, _ in head}
    if len(firsts) == 1 and all("/" in listed for _, listed, _ in head):
        candidates.append(replace(configured, strip=f"{firsts.pop()}/"))
    candidates += [replace(configured, prefix=f"{name}/") for name in _SPLIT_FOLDERS.get(split, ())]
    found = [
        [(where, root / c.folder(listed)) for where, listed, _ in head if (root / c.folder(listed)).is_dir()]
        for c in candidates
    ]
    best = max(range(len(candidates)), key=lambda i: (len(found[i]), -i))
    if not found[best]:
        return configured  # no folder at all: read_list names the first missing one
    layout, folders = candidates[best], found[best]

    names = [set(os.listdir(folder)) for _, folder in folders]
    score = {template: sum(template.format(1) in n for n in names)}
    for n in names:
        for name in n:
            guess = _template_of_first_frame(name)
            if guess is not None and guess not in score:
                score[guess] = sum(guess.format(1) in other for other in names)
    top = max(score.values())
    if top == 0:
        where, folder = folders[0]
        there = sorted(names[0])
        hint = f"it holds {there[0]!r} ({len(there)} files)" if there else "it is empty"
        raise UserError(
            f"{where}: no frame {template.format(1)!r} (template {template!r}) in {folder}, nor any other first "
            f"frame: {hint}; set 'template' in the dataset descriptor (frames are numbered from 1)"
        )
    if score[template] < top:
        likely = sorted(t for t, s in score.items() if s == top)
        if len(likely) > 1:
            where, folder = folders[0]
            raise UserError(
                f"{where}: {folder} has frames named like {', '.join(repr(t.format(1)) for t in likely)}; "
                f"set 'template' in the dataset descriptor to one of {', '.join(map(repr, likely))}"
            )
        layout = replace(layout, template=likely[0])
    if layout != configured:
        _report(list_file, head[0][1], root, configured, layout)
    return layout


def _template_of_first_frame(name: str) -> str | None:
    """The template whose frame 1 is ``name`` (``000001.jpg`` → ``{:06d}.jpg``), or ``None``."""
    m = _NUMBERED.match(name)
    if m is None or int(m.group(2)) != 1:
        return None
    prefix, digits, suffix = (part.replace("{", "{{").replace("}", "}}") for part in m.groups())
    return f"{prefix}{{:0{len(digits)}d}}{suffix}" if len(digits) > 1 else f"{prefix}{{:d}}{suffix}"


def _report(list_file: str | Path, listed: str, root: Path, configured: FrameLayout, layout: FrameLayout) -> None:
    changes = []
    if layout.strip:
        changes.append(f"folders without the listed {layout.strip!r} (flat layout)")
    if layout.prefix:
        changes.append(f"folders under {layout.prefix!r} (split layout)")
    if layout.template != configured.template:
        changes.append(f"template {layout.template!r}, not {configured.template!r}")
    example = root / layout.folder(listed) / layout.template.format(1)
    log.warning(
        "%s: the frames on disk do not match the configured layout; using %s, e.g. %s",
        list_file,
        " and ".join(changes),
        example,
    )
