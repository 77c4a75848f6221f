"""List files, class files, presets and dataset.yaml: the real formats of the paper's datasets.

The lines below are copied from the authors' list files (mengyuest/AdaFuse, data/), so the parsers are tested on
the true layouts: Something-V1/Jester ids, Something-V2 ``train/<id>`` paths, Mini-Kinetics paths with spaces.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adafuse.data import (
    PRESETS,
    dataset_spec,
    load_dataset_yaml,
    preset_class_names,
    read_class_names,
    read_list,
    save_dataset_yaml,
)
from adafuse.errors import UserError

SOMETHING_V1 = ["100218 42 31", "48032 57 79", "10433 63 121"]
SOMETHING_V2 = ["train/194181 45 105", "train/126639 46 6", "val/32 29 114"]
JESTER = ["34870 37 24", "56557 37 7", "42920 33 0"]
MINI_KINETICS = [
    "images/val/air drumming/7LSJ2Ryv1a8_000000_000010 60 0",
    "images/val/air drumming/btX0PMRlEPg_000001_000011 120 0",
]


def make_folders(root: Path, lines: list[str]) -> Path:
    """Empty frame folders for list lines (list parsing checks folders, not frames)."""
    for line in lines:
        (root / line.rsplit(None, 2)[0]).mkdir(parents=True, exist_ok=True)
    return root


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# --- class files ---------------------------------------------------------------------------------------------------


def test_packaged_class_names_of_every_preset():
    jester = preset_class_names("jester")
    assert len(jester) == 27 and jester[0] == "Swiping Left" and jester[26] == "Doing other things"
    v1, v2 = preset_class_names("something_v1"), preset_class_names("something_v2")
    assert len(v1) == len(v2) == 174
    assert v1[0] == "Holding something" and v2[0] == "Approaching something with your camera"
    # "idx,name" splits at the first comma only: names with commas survive.
    assert v1[43] == "Putting something, something and something on the table"
    kinetics = preset_class_names("mini_kinetics")
    assert len(kinetics) == 200 and kinetics[0] == "air drumming" and kinetics[-1] == "yoga"
    assert preset_class_names("custom") == []


def test_flip_maps_pair_left_and_right_classes():
    for name in ("something_v1", "something_v2", "jester"):
        names = preset_class_names(name)
        for a, b in PRESETS[name].flip_label_map.items():
            swapped = names[a].replace("left", "@").replace("right", "left").replace("@", "right")
            swapped = swapped.replace("Left", "@").replace("Right", "Left").replace("@", "Right")
            swapped = swapped.replace("Counterclockwise", "@").replace("Clockwise", "Counterclockwise")
            assert names[b] in (swapped, swapped.replace("@", "Clockwise")), (name, a, b)


def test_class_file_forms(tmp_path):
    indexed = write(tmp_path / "a.txt", ["0,Swiping Left", "1,Swiping Right", "2,Putting something, on it"])
    assert read_class_names(indexed) == ["Swiping Left", "Swiping Right", "Putting something, on it"]
    shuffled = write(tmp_path / "b.txt", ["1,b", "0,a"])
    assert read_class_names(shuffled) == ["a", "b"]
    plain = write(tmp_path / "c.txt", ["air drumming", "answering questions", ""])
    assert read_class_names(plain) == ["air drumming", "answering questions"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["0,a", "0,b"], "c.txt:2: class index 0 appears twice"),
        (["0,a", "2,b"], "index 1 is missing"),
        (["a", "", "b"], "c.txt:2: empty class name"),
    ],
)
def test_bad_class_files(tmp_path, lines, message):
    with pytest.raises(UserError, match=message):
        read_class_names(write(tmp_path / "c.txt", lines))


# --- list files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "lines", "first"),
    [
        ("something_v1", SOMETHING_V1, ("100218", 42, 31)),
        ("something_v2", SOMETHING_V2, ("train/194181", 45, 105)),
        ("jester", JESTER, ("34870", 37, 24)),
        ("mini_kinetics", MINI_KINETICS, ("images/val/air drumming/7LSJ2Ryv1a8_000000_000010", 60, 0)),
    ],
)
def test_official_list_lines(tmp_path, preset, lines, first):
    root = make_folders(tmp_path / "frames", lines)
    records = read_list(
        write(tmp_path / "list.txt", lines),
        root=root,
        format="frames",
        num_classes=PRESETS[preset].num_classes,
        spaces_in_paths=PRESETS[preset].spaces_in_paths,
    )
    assert len(records) == len(lines)
    assert (records[0].path, records[0].num_frames, records[0].label) == first
    assert records[1].source == f"{tmp_path / 'list.txt'}:2"


def test_video_list_with_spaces(tmp_path):
    (tmp_path / "air drumming").mkdir()
    (tmp_path / "air drumming" / "a b.mp4").write_bytes(b"")
    records = read_list(
        write(tmp_path / "v.txt", ["air drumming/a b.mp4 3"]), root=tmp_path, format="video", num_classes=5
    )
    assert (records[0].path, records[0].num_frames, records[0].label) == ("air drumming/a b.mp4", None, 3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("100218 42", "list.txt:2: expected '<folder> <num_frames> <label>'"),
        ("100218 42 31 7", "list.txt:2: expected '<folder> <num_frames> <label>'"),  # extra label column
        ("100218 forty 31", "list.txt:2: expected '<folder> <num_frames> <label>' with integer"),
        ("100218 42 174", "list.txt:2: label 174 is out of range for 174 classes"),
        ("100218 42 -1", "list.txt:2: label -1 is out of range"),
        ("100218 0 3", "list.txt:2: 0 frames listed, fewer than the 1 needed"),
        ("99999 42 3", "list.txt:2: frame folder .*99999 not found"),
    ],
)
def test_bad_list_lines_name_file_and_line(tmp_path, line, message):
    root = make_folders(tmp_path, ["100218 42 31"])
    path = write(tmp_path / "list.txt", ["100218 42 31", line])
    with pytest.raises(UserError, match=message):
        read_list(path, root=root, format="frames", num_classes=174, spaces_in_paths=False)


def test_min_frames_drops_and_counts_short_videos_and_skipping_counts_bad_lines(tmp_path, caplog):
    root = make_folders(tmp_path, ["a 2 0", "b 5 0"])
    path = write(tmp_path / "list.txt", ["a 2 0", "b 5 0", "c 9 0", "d 1 0"])
    with pytest.raises(UserError, match="list.txt:3: frame folder .*c not found"):  # a short video is no error
        read_list(path, root=root, format="frames", num_classes=2, min_frames=3)
    caplog.clear()
    records = read_list(path, root=root, format="frames", num_classes=2, min_frames=3, on_error="skip")
    assert [r.path for r in records] == ["b"]  # the others are dropped, never replaced
    assert "list.txt:3: frame folder" in caplog.text and "skipped 1 of 4" in caplog.text
    assert "list.txt: dropped 2 of 4 videos listed with fewer than 3 frames" in caplog.text
    assert "list.txt:1" not in caplog.text and "list.txt:4" not in caplog.text  # one count, no line each
    caplog.clear()
    kept = read_list(path, root=root, format="frames", num_classes=2, on_error="skip")  # default: keep all
    assert [r.path for r in kept] == ["a", "b"] and "dropped" not in caplog.text  # d's folder is missing


def test_missing_list_and_root(tmp_path):
    with pytest.raises(UserError, match="nope.txt: list file not found"):
        read_list(tmp_path / "nope.txt", root=tmp_path, format="frames", num_classes=2)
    path = write(tmp_path / "list.txt", ["a 2 0"])
    with pytest.raises(UserError, match="missing: dataset root folder not found"):
        read_list(path, root=tmp_path / "missing", format="frames", num_classes=2)


# --- dataset specs and dataset.yaml --------------------------------------------------------------------------------


def test_preset_defaults_and_overrides(tmp_path):
    spec = dataset_spec(preset="something_v2", root=tmp_path, train_list="t.txt", base=tmp_path)
    assert spec.template == "{:06d}.jpg" and spec.num_classes == 174 and spec.flip is False
    assert spec.train_list == tmp_path / "t.txt" and spec.val_list is None
    kin = dataset_spec(preset="mini_kinetics", root=tmp_path, template="{:05d}.jpg")
    assert kin.flip is True and kin.spaces_in_paths and kin.template == "{:05d}.jpg"
    swap = dataset_spec(preset="jester", root=tmp_path, flip="swap")
    assert swap.flip and swap.flip_label_map[0] == 1 and swap.flip_label_map[15] == 14


def test_dataset_yaml_round_trip_with_relative_paths(tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "classes.txt", ["left", "right", "up"])
    path = save_dataset_yaml(
        tmp_path / "d" / "dataset.yaml",
        preset="custom",
        root="frames",
        train_list="train.txt",
        classes="classes.txt",
        num_classes=3,
        flip=True,
        flip_label_map={0: 1, 1: 0},
    )
    spec = load_dataset_yaml(path)
    assert spec.root == tmp_path / "d" / "frames" and spec.train_list == tmp_path / "d" / "train.txt"
    assert spec.class_names == ("left", "right", "up") and spec.flip_label_map == {0: 1, 1: 0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("root: f\nnum_class: 3\n", "dataset.yaml:2: unknown key 'num_class'"),
        ("root: f\npreset: kinetics\n", "dataset.yaml:2: unknown dataset preset 'kinetics'"),
        ("root: f\nnum_classes: three\nflip: true\n", "dataset.yaml:2: num_classes must be a positive integer"),
        ("root: f\nnum_classes: 3\n", "dataset.yaml: say whether frames may be flipped"),
        ("root: f\nnum_classes: 3\nflip: maybe\n", "dataset.yaml:3: flip must be true, false or 'swap'"),
        ("root: f\nnum_classes: 3\nflip: true\nflip_label_map: {0: 1}\n", "dataset.yaml:4: .*must be symmetric"),
        ("root: f\nnum_classes: 3\nflip: true\nflip_label_map: {0: 5, 5: 0}\n", "dataset.yaml:4: .*out of range"),
        ("root: f\ntemplate: '{:05d}'\nnum_classes: 2\nflip: false\n", None),
        ("root: f\ntemplate: 'frame.jpg'\nnum_classes: 2\nflip: false\n", "dataset.yaml:2: .*same name to every"),
        ("preset: jester\nroot: f\nnum_classes: 26\n", "dataset.yaml:3: num_classes is 26 but preset jester has 27"),
        ("root: [f\n", "dataset.yaml:2: not valid YAML"),
        ("- root\n", "dataset.yaml: expected a mapping"),
        ("num_classes: 3\n", "dataset.yaml: missing key 'root'"),
    ],
)
def test_bad_dataset_yaml(tmp_path, text, message):
    (tmp_path / "dataset.yaml").write_text(text)
    if message is None:
        load_dataset_yaml(tmp_path / "dataset.yaml")
        return
    with pytest.raises(UserError, match=message):
        load_dataset_yaml(tmp_path / "dataset.yaml")
