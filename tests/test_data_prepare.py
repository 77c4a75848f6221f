"""``adafuse prepare lists``: list files from the official annotation formats and from class-folder trees.

The expected lines are the authors' own (``34870 37 24`` in Jester, ``train/194181 45 105`` in Something-V2): the
converters must reproduce them from the raw annotations and the extracted frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from adafuse.cli import main
from adafuse.data import build_dataset, build_loader, load_dataset_yaml, preset_class_names
from adafuse.data.annotations import count_frame_files
from adafuse.errors import UserError


def write_frames(folder: Path, n: int, template: str = "{:05d}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.new("RGB", (20, 16), (i, i, i)).save(folder / template.format(i))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_jester_csv(tmp_path, capsys):
    names = preset_class_names("jester")
    (tmp_path / "jester-v1-labels.csv").write_text("\n".join(names) + "\n")
    (tmp_path / "jester-v1-train.csv").write_text("34870;Drumming Fingers\n56557;Sliding Two Fingers Right\n")
    (tmp_path / "jester-v1-validation.csv").write_text("42920;Swiping Left\n")
    for video, n in (("34870", 37), ("56557", 37), ("42920", 33)):
        write_frames(tmp_path / "frames" / video, n)
    code, out, err = run_cli(
        capsys, "prepare", "lists", "--source", "jester", "--root", str(tmp_path / "frames"),
        "--labels", str(tmp_path / "jester-v1-labels.csv"), "--train", str(tmp_path / "jester-v1-train.csv"),
        "--val", str(tmp_path / "jester-v1-validation.csv"), "--out", str(tmp_path / "lists"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["train"] == 2
    assert (tmp_path / "lists" / "train.txt").read_text() == "34870 37 24\n56557 37 7\n"  # the official lines
    assert (tmp_path / "lists" / "val.txt").read_text() == "42920 33 0\n"
    spec = load_dataset_yaml(tmp_path / "lists" / "dataset.yaml")
    assert spec.preset == "jester" and spec.class_names[24] == "Drumming Fingers" and spec.flip is False
    clips, labels = next(
        iter(build_loader(build_dataset(spec=spec, split="train", input_size=16), batch_size=2, shuffle=False))
    )
    assert clips.shape == (2, 8, 3, 16, 16) and labels.tolist() == [24, 7]


def test_something_v2_json_with_split_folders(tmp_path, capsys):
    names = preset_class_names("something_v2")
    (tmp_path / "labels.json").write_text(json.dumps({name: str(i) for i, name in enumerate(names)}))
    bracketed = names[105].replace("something", "[something]")  # the json's templates carry brackets
    (tmp_path / "train.json").write_text(json.dumps([{"id": "194181", "label": "x", "template": bracketed}]))
    (tmp_path / "validation.json").write_text(json.dumps([{"id": "32", "template": names[114]}]))
    write_frames(tmp_path / "frames" / "train" / "194181", 45, "{:06d}.jpg")
    write_frames(tmp_path / "frames" / "val" / "32", 29, "{:06d}.jpg")
    code, _, err = run_cli(
        capsys, "prepare", "lists", "--source", "something_v2", "--root", str(tmp_path / "frames"), "--split-dirs",
        "--labels", str(tmp_path / "labels.json"), "--train", str(tmp_path / "train.json"),
        "--val", str(tmp_path / "validation.json"), "--out", str(tmp_path / "lists"),
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "lists" / "train.txt").read_text() == "train/194181 45 105\n"
    assert (tmp_path / "lists" / "val.txt").read_text() == "val/32 29 114\n"
    spec = load_dataset_yaml(tmp_path / "lists" / "dataset.yaml")
    assert spec.template == "{:06d}.jpg" and spec.num_classes == 174
    assert build_dataset(spec=spec, split="val", input_size=16)[0][1] == 114


def test_tree_of_videos_needs_no_extraction(tmp_path, capsys):
    for split, cls, name in (("train", "air drumming", "a b"), ("train", "yoga", "c"), ("val", "yoga", "d")):
        path = tmp_path / "tree" / split / cls / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
            for i in range(12):
                frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 10 * i, np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    argv = ["prepare", "lists", "--source", "tree", "--root", str(tmp_path / "tree"), "--out", str(tmp_path / "out")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "say whether frames may be flipped" in err  # a custom dataset needs a flip rule
    code, _, err = run_cli(capsys, *argv, "--flip", "true")
    assert code == 0, err
    assert (tmp_path / "out" / "train.txt").read_text() == "train/air drumming/a b.mp4 0\ntrain/yoga/c.mp4 1\n"
    assert (tmp_path / "out" / "classes.txt").read_text() == "air drumming\nyoga\n"
    # With the Mini-Kinetics preset, folder names map to the official class indices.
    code, _, err = run_cli(capsys, *argv, "--preset", "mini_kinetics")
    assert code == 0, err
    assert (tmp_path / "out" / "train.txt").read_text() == "train/air drumming/a b.mp4 0\ntrain/yoga/c.mp4 199\n"
    spec = load_dataset_yaml(tmp_path / "out" / "dataset.yaml")
    assert spec.format == "video" and spec.flip is True
    clip, label = build_dataset(spec=spec, split="train", input_size=16, num_segments=4)[1]
    assert clip.shape == (4, 3, 16, 16) and label == 199


@pytest.mark.parametrize(
    ("rows", "frames", "message"),
    [
        ("34870;Drumming Fingers\n34870 Drumming Fingers\n", 37, "train.csv:2: expected 'id;label'"),
        ("34870;Drumming Thumbs\n", 37, "train.csv:1: unknown class 'Drumming Thumbs'"),
        ("99999;Drumming Fingers\n", 37, r"train.csv:1: .*99999 not found"),
        ("34870;Drumming Fingers\n", 0, r"train.csv:1: no frames named like 00001.jpg"),
    ],
)
def test_bad_annotations(tmp_path, capsys, rows, frames, message):
    (tmp_path / "labels.csv").write_text("\n".join(preset_class_names("jester")))
    (tmp_path / "train.csv").write_text(rows)
    (tmp_path / "frames" / "34870").mkdir(parents=True)
    write_frames(tmp_path / "frames" / "34870", frames)
    code, _, err = run_cli(
        capsys, "prepare", "lists", "--source", "jester", "--root", str(tmp_path / "frames"),
        "--labels", str(tmp_path / "labels.csv"), "--train", str(tmp_path / "train.csv"),
        "--val", str(tmp_path / "train.csv"), "--out", str(tmp_path / "lists"),
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "lists").exists()  # nothing half-written


def test_gap_in_frame_numbering(tmp_path):
    write_frames(tmp_path / "v", 10)
    assert count_frame_files(tmp_path / "v", "{:05d}.jpg") == 10
    (tmp_path / "v" / "00004.jpg").unlink()
    with pytest.raises(UserError, match="00004.jpg is missing but 00005.jpg exists"):
        count_frame_files(tmp_path / "v", "{:05d}.jpg")
