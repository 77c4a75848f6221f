"""The presets against the files users actually have: the authors' list lines (copied from
``shared/data/official-lists``, i.e. mengyuest/AdaFuse ``data/``) over frames laid out by the scripts in use.

- Something-V2: AdaFuse lists say ``train/<id>`` with ``00001.jpg``; TSM's extraction writes flat ``<id>/000001.jpg``.
- Mini-Kinetics: the authors and ``adafuse prepare frames`` write ``00001.jpg``; TSN-style tools ``img_00001.jpg``.
- Videos under 3 frames: the official loader drops them (``min_frames``).
- TSM's label scripts sort the class names, so a class file made by them numbers the classes differently.

Frame ``i`` (1-based file) of every fake video is a uniform grey of value ``2 i``: a loaded clip tells which files
were read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from adafuse.cli import main
from adafuse.data import build_dataset, dataset_spec, eval_indices, load_dataset_yaml, preset_class_names
from adafuse.errors import UserError

# The first lines of the authors' lists.
STHV2_TRAIN = ["train/194181 45 105", "train/126639 46 6", "train/105542 44 93"]
STHV2_VAL = ["val/32 29 114", "val/36 59 117"]
STHV1_VAL = ["85 46 90", "1753 47 108", "1091 66 0"]
JESTER_TRAIN = ["34870 37 24", "56557 37 7"]
MINIK_VAL = [
    "images/val/air drumming/7LSJ2Ryv1a8_000000_000010 60 0",
    "images/val/air drumming/DcwyDVypfYg_000000_000010 60 0",
    "images/val/answering questions/dplRiYsjQUk_000169_000179 101 1",
]
# mini_val.txt, the ';'-separated variant the authors ship next to mini_val_videofolder.txt
MINIK_SEMICOLON = "images/val/air drumming/7LSJ2Ryv1a8_000000_000010;60;0"

IMAGENET_MEAN, IMAGENET_STD = 0.485, 0.229  # red channel


def write_frames(folder: Path, n: int, template: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.new("RGB", (8, 6), (2 * i, 2 * i, 2 * i)).save(folder / template.format(i), quality=95)


def write_list(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def frames_on_disk(root: Path, lines: list[str], template: str, folder=None) -> None:
    """Frames for list lines, in ``root / folder(listed path)``."""
    for line in lines:
        path, n, _ = line.rsplit(None, 2)
        write_frames(root / (folder(path) if folder else path), int(n), template)


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """1-based frame files of an imagenet-normalised clip ``(T, 3, H, W)``."""
    grey = clip[:, 0].mean(dim=(1, 2)) * IMAGENET_STD * 255 + IMAGENET_MEAN * 255
    return [round(v / 2) for v in grey.tolist()]


def assert_reads_listed_frames(dataset, lines: list[str]) -> None:
    assert len(dataset) == len(lines)
    for i, line in enumerate(lines):
        clip, label = dataset[i]
        _, n, expected = line.rsplit(None, 2)
        assert label == int(expected)
        assert frame_numbers(clip) == [j + 1 for j in eval_indices(int(n), 4)]


def layout_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "do not match the configured layout" in r.getMessage()]


# --- 1. frame template and folder layout ------------------------------------------------------------------------------


def flat(path: str) -> str:
    return path.split("/", 1)[1]  # TSM: <id>/ without train/ or val/


def same(path: str) -> str:
    return path


def in_val(path: str) -> str:
    return f"val/{path}"  # AdaFuse's split folders


@pytest.mark.parametrize(
    ("lines", "split", "disk", "template", "says"),
    [
        # AdaFuse's lists over TSM's extraction: flat folders, 6 digits
        (STHV2_TRAIN, "train", flat, "{:06d}.jpg", "folders without the listed 'train/' (flat layout), e.g. "),
        (STHV2_VAL, "val", flat, "{:06d}.jpg", "folders without the listed 'val/' (flat layout)"),
        # AdaFuse's lists and frames: the preset's 6 digits are wrong
        (STHV2_TRAIN, "train", same, "{:05d}.jpg", "using template '{:05d}.jpg', not '{:06d}.jpg'"),
        # TSM's flat lists over AdaFuse's split frames
        (
            [flat(x) for x in STHV2_VAL],
            "val",
            in_val,
            "{:05d}.jpg",
            "folders under 'val/' (split layout) and template '{:05d}.jpg', not '{:06d}.jpg'",
        ),
    ],
)
def test_something_v2_layouts_are_detected_and_said(tmp_path, caplog, lines, split, disk, template, says):
    frames_on_disk(tmp_path / "frames", lines, template, disk)
    listed = write_list(tmp_path / "lists" / f"{split}.txt", lines)
    spec = dataset_spec(preset="something_v2", root=tmp_path / "frames", **{f"{split}_list": listed})
    assert spec.template == "{:06d}.jpg"
    caplog.set_level(logging.WARNING)
    dataset = build_dataset(spec=spec, split=split, num_segments=4, input_size=8, train=False)
    warnings = layout_warnings(caplog)
    assert len(warnings) == 1 and says in warnings[0], warnings  # one line saying what was chosen
    assert warnings[0].startswith(str(listed))
    first = lines[0].split()[0]
    assert warnings[0].endswith(f", e.g. {tmp_path / 'frames' / disk(first) / template.format(1)}")
    assert dataset.reader.template == template
    assert [r.path for r in dataset.records] == [disk(line.split()[0]) for line in lines]
    assert_reads_listed_frames(dataset, lines)


@pytest.mark.parametrize(("template", "said"), [("{:05d}.jpg", False), ("img_{:05d}.jpg", True)])
def test_mini_kinetics_default_is_the_authors_frames_and_tsn_names_are_detected(tmp_path, caplog, template, said):
    frames_on_disk(tmp_path / "kinetics-qf", MINIK_VAL, template)
    listed = write_list(tmp_path / "mini_val_videofolder.txt", MINIK_VAL)
    spec = dataset_spec(preset="mini_kinetics", root=tmp_path / "kinetics-qf", val_list=listed)
    assert spec.template == "{:05d}.jpg"  # what the authors' loader and `adafuse prepare frames` write
    caplog.set_level(logging.WARNING)
    dataset = build_dataset(spec=spec, split="val", num_segments=4, input_size=8)
    assert bool(layout_warnings(caplog)) == said
    assert dataset.reader.template == template
    assert_reads_listed_frames(dataset, MINIK_VAL)


def test_matching_layouts_say_nothing(tmp_path, caplog):
    frames_on_disk(tmp_path / "sthv1", STHV1_VAL, "{:05d}.jpg")
    listed = write_list(tmp_path / "validation_split.txt", STHV1_VAL)
    caplog.set_level(logging.WARNING)
    dataset = build_dataset(
        spec=dataset_spec(preset="something_v1", root=tmp_path / "sthv1", val_list=listed),
        split="val",
        num_segments=4,
        input_size=8,
    )
    assert caplog.text == "" and dataset.reader.template == "{:05d}.jpg"
    assert_reads_listed_frames(dataset, STHV1_VAL)


def test_the_configured_template_wins_when_most_folders_have_it(tmp_path, caplog):
    frames_on_disk(tmp_path / "jester", JESTER_TRAIN, "{:05d}.jpg")
    (tmp_path / "jester" / "56557" / "00001.jpg").rename(tmp_path / "jester" / "56557" / "000001.jpg")
    frames_on_disk(tmp_path / "jester", ["99 4 0", "98 4 0"], "{:05d}.jpg")
    listed = write_list(tmp_path / "train_split.txt", [*JESTER_TRAIN, "99 4 0", "98 4 0"])
    caplog.set_level(logging.WARNING)
    dataset = build_dataset(
        spec=dataset_spec(preset="jester", root=tmp_path / "jester", train_list=listed),
        split="train",
        num_segments=4,
        input_size=8,
    )
    assert dataset.reader.template == "{:05d}.jpg" and not layout_warnings(caplog)  # 3 of 4 folders: keep it


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            ["video.webm"],
            r"train_split.txt:1: no frame '00001.jpg' \(template '\{:05d\}.jpg'\) in .*34870, nor any "
            r"other first frame: it holds 'video.webm' \(1 files\); set 'template'",
        ),
        ([], r"train_split.txt:1: no frame '00001.jpg' .* it is empty"),
        (["frame_a.jpg", "frame_b.jpg"], r"it holds 'frame_a.jpg' \(2 files\)"),
        (
            ["img_00001.jpg", "flow_x_00001.jpg"],
            r"34870 has frames named like 'flow_x_00001.jpg', 'img_00001.jpg'; "
            r"set 'template' in the dataset descriptor",
        ),
    ],
)
def test_no_matching_frames_fail_when_the_dataset_is_built(tmp_path, files, message):
    folder = tmp_path / "jester" / "34870"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"")
    listed = write_list(tmp_path / "train_split.txt", JESTER_TRAIN[:1])
    spec = dataset_spec(preset="jester", root=tmp_path / "jester", train_list=listed)
    with pytest.raises(UserError, match=message) as info:
        build_dataset(spec=spec, split="train", num_segments=4, input_size=8)
    assert "\n" not in str(info.value)


def test_cli_says_which_layout_it_chose(tmp_path, capsys, caplog):
    """`adafuse eval` over TSM-extracted frames with the AdaFuse lists: one warning line, then the result."""
    from adafuse.checkpoint import save_model
    from adafuse.models import build_model

    frames_on_disk(tmp_path / "frames", [flat(x) for x in STHV2_VAL], "{:06d}.jpg")
    write_list(tmp_path / "val_videofolder.txt", STHV2_VAL)
    (tmp_path / "dataset.yaml").write_text("preset: somethingv2\nroot: frames\nval_list: val_videofolder.txt\n")
    ckpt = tmp_path / "m.ckpt"
    save_model(
        ckpt,
        build_model(backbone="resnet18", method="tsn", num_classes=174, num_segments=2),
        input_size=32,
        normalization="imagenet",
        classes=None,
    )
    argv = ["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "dataset.yaml"), "--json", "--workers", "0"]
    caplog.set_level(logging.WARNING)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 2
    warnings = layout_warnings(caplog)
    assert len(warnings) == 1 and "without the listed 'val/' (flat layout)" in warnings[0]


# --- 2. videos under 3 frames -----------------------------------------------------------------------------------------


def short_minik(tmp_path: Path) -> tuple[Path, list[str]]:
    """Mini-Kinetics val lines with two videos under 3 frames (the full list has two: 9,864 of 9,866 kept)."""
    lines = [
        MINIK_VAL[0],
        "images/val/applauding/iuJgXPBvrWU_000000_000010 2 2",
        MINIK_VAL[2],
        "images/val/archery/27jJKXiB9Y8_000009_000019 1 4",
    ]
    frames_on_disk(tmp_path / "kinetics-qf", lines, "{:05d}.jpg")
    listed = write_list(tmp_path / "mini_val_videofolder.txt", lines)
    (tmp_path / "dataset.yaml").write_text(f"preset: minik\nroot: kinetics-qf\nval_list: {listed.name}\n")
    return tmp_path / "dataset.yaml", lines


def test_min_frames_drops_the_videos_the_official_loader_drops(tmp_path, caplog):
    descriptor, lines = short_minik(tmp_path)
    caplog.set_level(logging.WARNING)
    kept = build_dataset(spec=descriptor, split="val", num_segments=4, input_size=8)
    assert len(kept) == 4 and "dropped" not in caplog.text  # default: every listed video
    official = build_dataset(spec=descriptor, split="val", num_segments=4, input_size=8, min_frames=3)
    assert [r.source.rsplit(":", 1)[1] for r in official.records] == ["1", "3"]
    assert "mini_val_videofolder.txt: dropped 2 of 4 videos listed with fewer than 3 frames" in caplog.text
    assert_reads_listed_frames(official, [lines[0], lines[2]])


def test_min_frames_on_adafuse_eval(tmp_path, capsys, caplog):
    from adafuse.checkpoint import save_model
    from adafuse.models import build_model

    descriptor, _ = short_minik(tmp_path)
    ckpt = tmp_path / "m.ckpt"
    save_model(
        ckpt,
        build_model(backbone="resnet18", method="tsn", num_classes=200, num_segments=2),
        input_size=32,
        normalization="imagenet",
        classes=None,
    )
    argv = ["eval", "--checkpoint", str(ckpt), "--data", str(descriptor), "--json", "--workers", "0"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 4
    caplog.set_level(logging.WARNING)
    assert main([*argv, "--min-frames", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 2
    assert "dropped 2 of 4 videos listed with fewer than 3 frames" in caplog.text


def test_training_from_one_folder_and_evaluating_from_another(tmp_path, monkeypatch, capsys, caplog):
    """`data.min_frames` reaches training, and the checkpoint names its dataset by an absolute path."""
    from adafuse.checkpoint import read_checkpoint
    from adafuse.data.synthetic import generate_synthetic
    from adafuse.engine.config import load_config
    from adafuse.engine.train import fit

    work = tmp_path / "work"
    generate_synthetic(kind="static", out=work / "synth", num_videos=16, size=32, frames=4, seed=0)
    write_frames(work / "synth" / "frames" / "short", 2, "{:05d}.jpg")
    for name in ("train.txt", "val.txt"):
        with (work / "synth" / name).open("a") as f:
            f.write("short 2 0\n")
    monkeypatch.chdir(work)
    config = load_config(
        None,
        [
            "model.backbone=resnet18",
            "model.method=tsn",
            "model.num_segments=2",
            "data.input_size=32",
            "data.batch_size=2",
            "data.workers=0",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            "optim.epochs=1",
            "trainer.limit_train_batches=1",
            "data.dataset=synth/dataset.yaml",
            "trainer.out=run",
            "data.min_frames=3",
        ],
    )
    caplog.set_level(logging.WARNING)
    result = fit(config)
    assert "train.txt: dropped 1 of 9 videos" in caplog.text and "val.txt: dropped 1 of 9 videos" in caplog.text
    best = Path(result["best"]).resolve()
    assert read_checkpoint(best)["adafuse"]["dataset"] == str(work / "synth" / "dataset.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--checkpoint", str(best), "--json", "--workers", "0", "--min-frames", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 8  # the synthetic val set, without the short one


# --- 3. class order ---------------------------------------------------------------------------------------------------


def tsm_category_file(path: Path, preset: str) -> Path:
    """A class file as TSM's label scripts write it: the class names sorted, one per line."""
    return write_list(path, sorted(preset_class_names(preset)))


@pytest.mark.parametrize(("preset", "differ", "total"), [("something_v1", 173, 174), ("jester", 26, 27)])
def test_a_class_file_in_another_order_drives_the_labels_and_is_reported(tmp_path, caplog, preset, differ, total):
    category = tsm_category_file(tmp_path / "category.txt", preset)
    caplog.set_level(logging.WARNING)
    spec = dataset_spec(preset=preset, root=tmp_path, classes=category)
    assert list(spec.class_names) == sorted(preset_class_names(preset))  # the lists' own class file decides
    message = caplog.records[-1].getMessage()
    assert f"class file {category} differs from the packaged {preset} names" in message
    assert f"classes/{preset}.txt" in message and f"at {differ} of {total} indices" in message


def test_something_v2_sorted_names_agree(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    dataset_spec(preset="somethingv2", root=tmp_path, classes=tsm_category_file(tmp_path / "c.txt", "something_v2"))
    assert caplog.text == ""  # both alphabetical


def test_the_class_file_beside_the_lists_is_used(tmp_path, caplog):
    """TSM's folder: train_videofolder.txt and category.txt; the descriptor names no class file."""
    tsm = tmp_path / "tsm"
    tsm_category_file(tsm / "category.txt", "something_v1")
    frames_on_disk(tmp_path / "frames", STHV1_VAL, "{:05d}.jpg")
    write_list(tsm / "val_videofolder.txt", STHV1_VAL)
    (tmp_path / "dataset.yaml").write_text("preset: something\nroot: frames\nval_list: tsm/val_videofolder.txt\n")
    caplog.set_level(logging.WARNING)
    spec = load_dataset_yaml(tmp_path / "dataset.yaml")
    assert spec.preset == "something_v1" and list(spec.class_names) == sorted(preset_class_names("something_v1"))
    assert f"class file {tsm / 'category.txt'} (beside the lists) differs" in caplog.text
    assert "at 173 of 174 indices; labels follow it" in caplog.text
    # the authors' folder: classInd.txt is the packaged order, so nothing is said
    caplog.clear()
    authors = tmp_path / "somethingv1"
    (authors).mkdir()
    (authors / "classInd.txt").write_text(
        "".join(f"{i},{name}\n" for i, name in enumerate(preset_class_names("something_v1")))
    )
    write_list(authors / "validation_split.txt", STHV1_VAL)
    spec = dataset_spec(preset="something", root=tmp_path / "frames", val_list=authors / "validation_split.txt")
    assert list(spec.class_names) == preset_class_names("something_v1") and caplog.text == ""
    # two class files that disagree: say which
    tsm_category_file(authors / "category.txt", "something_v1")
    with pytest.raises(UserError, match="classInd.txt and .*category.txt both lie beside the lists and differ"):
        dataset_spec(preset="something", root=tmp_path / "frames", val_list=authors / "validation_split.txt")


# --- 5. the authors' preset names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "preset"),
    [("something", "something_v1"), ("somethingv2", "something_v2"), ("jester", "jester"), ("minik", "mini_kinetics")],
)
def test_the_authors_dataset_keys_are_preset_names(tmp_path, alias, preset):
    (tmp_path / "dataset.yaml").write_text(f"preset: {alias}\nroot: .\n")
    spec = load_dataset_yaml(tmp_path / "dataset.yaml")
    assert spec.preset == preset and list(spec.class_names) == preset_class_names(preset)


def test_unknown_preset_lists_the_aliases(tmp_path):
    with pytest.raises(UserError, match=r"unknown dataset preset 'kinetics'; known: .*\(also something = "):
        dataset_spec(preset="kinetics", root=tmp_path)


# --- 6. hints for the two common slips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "line", "hint"),
    [
        (
            "minik",
            MINIK_SEMICOLON,
            "its columns are separated by ';', list files use spaces (Mini-Kinetics: "
            "mini_val_videofolder.txt, not mini_val.txt)",
        ),
        ("something", "100218;42;31", "its columns are separated by ';'"),
        ("something", MINIK_VAL[0], "its path has spaces, which only the presets mini_kinetics and custom read"),
        ("jester", "my clips/34870 37 24", "its path has spaces"),
        ("jester", "34870 37 24 7", None),  # an extra label column is not a path with spaces
    ],
)
def test_hints_for_semicolons_and_spaces(tmp_path, preset, line, hint):
    listed = write_list(tmp_path / "list.txt", [line])
    spec = dataset_spec(preset=preset, root=tmp_path, val_list=listed)
    with pytest.raises(UserError, match=r"list.txt:1: expected '<folder> <num_frames> <label>'") as info:
        build_dataset(spec=spec, split="val")
    message = str(info.value)
    if hint is None:
        assert message.endswith(f"got {line!r}")
    else:
        assert f"{line!r}; {hint}" in message, message
