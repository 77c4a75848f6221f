"""Video files: PyAV decoding, ``adafuse prepare frames`` and the equivalence of both routes through one sampler.

Tolerance: a clip decoded from the video and the same clip read from its extracted JPEG frames (quality 95) differ
by at most 1.5 grey levels (of 255) on average and 16 at any pixel; neighbouring frames of the test video differ by
8 levels in blue alone, so a one-frame shift would be caught.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from adafuse.cli import main
from adafuse.data import build_dataset, dataset_spec
from adafuse.data.readers import count_frames
from adafuse.errors import UserError

STD = 0.226 * 255  # about one grey level per 1/255 of ImageNet-normalised value


def write_video(path: Path, *, frames: int = 30, size: tuple[int, int] = (96, 64), codec: str = "libx264") -> Path:
    """A smooth moving pattern; frame i has blue level 4 + 8 i."""
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            red = 128 + 90 * np.sin(2 * np.pi * (xx / w + i / frames))
            green = 128 + 90 * np.cos(2 * np.pi * (yy / h - i / frames))
            image = np.stack([red, green, np.full_like(red, 4 + 8 * i)], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def videos(tmp_path):
    write_video(tmp_path / "videos" / "class a" / "v1.mp4")
    write_video(tmp_path / "videos" / "class a" / "v2.webm", codec="libvpx", frames=21)  # webm: no frame count
    return tmp_path / "videos"


def test_video_and_extracted_frames_give_the_same_clips(tmp_path, videos, capsys):
    code, out, _ = run_cli(capsys, "prepare", "frames", "--videos", str(videos), "--out", str(tmp_path / "frames"),
                           "--short-side", "0", "--workers", "2", "--json")  # fmt: skip
    summary = json.loads(out)
    assert code == 0 and summary["extracted"] == 2 and summary["frames"] == 51 and summary["failed"] == 0
    assert sorted(p.name for p in (tmp_path / "frames" / "class a" / "v1").iterdir())[-1] == "00030.jpg"
    assert count_frames(videos / "class a" / "v2.webm") == 21  # counted from packets, the container does not say

    (tmp_path / "frames.txt").write_text("class a/v1 30 0\nclass a/v2 21 1\n")
    (tmp_path / "videos.txt").write_text("class a/v1.mp4 0\nclass a/v2.webm 1\n")
    common = {"num_classes": 2, "flip": True}
    frames = dataset_spec(root=tmp_path / "frames", train_list=tmp_path / "frames.txt", **common)
    video = dataset_spec(root=videos, train_list=tmp_path / "videos.txt", format="video", **common)
    for train in (False, True):  # segment centres + centre crop, and random segments + multi-scale crop + flip
        a = build_dataset(spec=frames, split="train", train=train, input_size=48, num_segments=8, seed=5)
        b = build_dataset(spec=video, split="train", train=train, input_size=48, num_segments=8, seed=5)
        for i in range(2):
            (x, label_x), (y, label_y) = a[i], b[i]
            assert x.shape == y.shape == (8, 3, 48, 48) and label_x == label_y == i
            diff = (x - y).abs() * STD
            assert diff.mean() < 1.5 and diff.max() < 16
            shifted = (x[1:] - y[:-1]).abs() * STD  # what a one-frame error would look like
            assert shifted[:, 2].mean() > 4


def test_extraction_is_resumable(tmp_path, videos, capsys):
    out_dir = tmp_path / "frames"
    run_cli(capsys, "prepare", "frames", "--videos", str(videos), "--out", str(out_dir), "--short-side", "32")
    assert (out_dir / "class a" / "v1" / "00001.jpg").is_file()
    from PIL import Image

    assert Image.open(out_dir / "class a" / "v1" / "00001.jpg").size == (48, 32)  # shorter side 32
    # Interrupted run: v2's folder never got moved into place, and a half-written partial folder is left over.
    for f in (out_dir / "class a" / "v2").iterdir():
        f.unlink()
    (out_dir / "class a" / "v2").rmdir()
    (out_dir / ".partial" / "class a" / "v2").mkdir(parents=True)
    (out_dir / ".partial" / "class a" / "v2" / "00001.jpg").write_bytes(b"half")
    code, out, err = run_cli(capsys, "prepare", "frames", "--videos", str(videos), "--out", str(out_dir), "--json")
    summary = json.loads(out)
    assert code == 0 and (summary["already_done"], summary["extracted"], summary["frames"]) == (1, 1, 21)
    assert not (out_dir / ".partial").exists() and len(list((out_dir / "class a" / "v2").iterdir())) == 21


def test_unreadable_video(tmp_path, videos, capsys, caplog):
    (videos / "class a" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    code, out, err = run_cli(capsys, "prepare", "frames", "--videos", str(videos), "--out", str(tmp_path / "f"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "broken.mp4: cannot decode video" in err
    assert not (tmp_path / "f" / "class a" / "broken").exists()  # no empty or partial folder left in place

    code, out, err = run_cli(capsys, "prepare", "frames", "--videos", str(videos), "--out", str(tmp_path / "f"),
                             "--on-error", "skip", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["failed"] == 1 and "broken.mp4: cannot decode video" in caplog.text

    (tmp_path / "v.txt").write_text("class a/v1.mp4 0\nclass a/broken.mp4 0\n")
    spec = dataset_spec(root=videos, val_list=tmp_path / "v.txt", format="video", num_classes=1, flip=False)
    dataset = build_dataset(spec=spec, split="val", input_size=32)
    assert isinstance(dataset[0][0], torch.Tensor)
    with pytest.raises(UserError, match=r"v.txt:2: cannot decode video .*broken.mp4"):
        dataset[1]
    assert build_dataset(spec=spec, split="val", input_size=32, on_error="skip")[1] is None


def test_missing_video_file_found_when_building(tmp_path, videos):
    (tmp_path / "v.txt").write_text("class a/v1.mp4 0\nclass a/gone.mp4 0\n")
    spec = dataset_spec(root=videos, val_list=tmp_path / "v.txt", format="video", num_classes=1, flip=False)
    with pytest.raises(UserError, match=r"v.txt:2: video file .*gone.mp4 not found"):
        build_dataset(spec=spec, split="val")


def test_container_overstating_its_frame_count(tmp_path, videos, monkeypatch):
    (tmp_path / "v.txt").write_text("class a/v1.mp4 0\n")
    spec = dataset_spec(root=videos, val_list=tmp_path / "v.txt", format="video", num_classes=1, flip=False)
    honest, _ = build_dataset(spec=spec, split="val", input_size=32)[0]
    monkeypatch.setattr("adafuse.data.readers.count_frames", lambda path: 50)  # the file has 30
    clip, _ = build_dataset(spec=spec, split="val", input_size=32)[0]
    assert torch.equal(clip, honest)  # re-sampled from the 30 frames that exist, not padded or clamped
