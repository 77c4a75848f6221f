"""Datasets and loaders on fake datasets in each preset's exact on-disk layout.

Frame ``i`` (1-based file) of every fake video is a uniform grey of value ``2 i``, so the loaded clip tells which
frames were read (JPEG keeps a flat grey within ±1).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adafuse.data import build_dataset, build_loader, dataset_spec, eval_indices
from adafuse.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = 0.485, 0.229  # red channel


def write_frames(folder: Path, n: int, template: str = "{:05d}.jpg", size: tuple[int, int] = (40, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.new("RGB", size, (2 * i, 2 * i, 2 * i)).save(folder / template.format(i), quality=95)


def make_dataset(root: Path, lines: list[str], template: str) -> Path:
    """Frame folders for list lines (``path num_frames label``), and the list file."""
    for line in lines:
        path, n, _ = line.rsplit(None, 2)
        write_frames(root / "frames" / path, int(n), template)
    (root / "list.txt").write_text("".join(f"{line}\n" for line in lines))
    return root / "list.txt"


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """1-based frame files of an imagenet-normalised clip ``(T, 3, H, W)``."""
    grey = clip[:, 0].mean(dim=(1, 2)) * IMAGENET_STD * 255 + IMAGENET_MEAN * 255
    return [round(v / 2) for v in grey.tolist()]


PRESET_LAYOUTS = {
    "something_v1": (["100218 42 31", "48032 57 79", "9426 53 34"], "{:05d}.jpg", {}),
    "something_v2": (["train/194181 45 105", "train/126639 46 6", "train/105542 44 93"], "{:06d}.jpg", {}),
    "jester": (["34870 37 24", "56557 37 7", "42920 33 0"], "{:05d}.jpg", {}),
    "mini_kinetics": (
        [
            "images/val/air drumming/7LSJ2Ryv1a8_000000_000010 60 0",
            "images/val/air drumming/btX0PMRlEPg_000001_000011 120 0",
            "images/val/answering questions/x_000000_000010 30 1",
        ],
        "{:05d}.jpg",  # the authors' frames and `adafuse prepare frames`
        {},
    ),
}


@pytest.mark.parametrize("preset", list(PRESET_LAYOUTS))
def test_preset_layouts_load_batches(tmp_path, preset):
    lines, template, _ = PRESET_LAYOUTS[preset]
    list_file = make_dataset(tmp_path, lines, template)
    spec = dataset_spec(preset=preset, root=tmp_path / "frames", train_list=list_file, val_list=list_file)
    assert spec.template == template

    val = build_dataset(spec=spec, split="val", num_segments=8, input_size=24)
    clips, labels = next(iter(build_loader(val, batch_size=3, shuffle=False)))
    assert clips.shape == (3, 8, 3, 24, 24) and clips.dtype == torch.float32
    assert labels.tolist() == [int(line.split()[-1]) for line in lines]
    for clip, line in zip(clips, lines, strict=True):
        n = int(line.split()[-2])
        assert frame_numbers(clip) == [i + 1 for i in eval_indices(n, 8)]  # 1-based files, official centres

    train = build_dataset(spec=spec, split="train", num_segments=8, input_size=24, seed=3)
    clips, labels = next(iter(build_loader(train, batch_size=3, shuffle=False)))
    assert clips.shape == (3, 8, 3, 24, 24)
    for clip, line in zip(clips, lines, strict=True):
        d = int(line.split()[-2]) // 8
        assert [(f - 1) // d for f in frame_numbers(clip)] == list(range(8))  # one frame from each chunk


def test_same_seed_same_batches_with_0_and_2_workers(tmp_path):
    lines = [f"v{i} {20 + i} {i % 3}" for i in range(12)]
    list_file = make_dataset(tmp_path, lines, "{:05d}.jpg")
    spec = dataset_spec(root=tmp_path / "frames", train_list=list_file, num_classes=3, flip=True)

    def epoch_batches(workers: int, epoch: int, seed: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dataset = build_dataset(spec=spec, split="train", num_segments=4, input_size=16, seed=seed)
        loader = build_loader(dataset, batch_size=5, shuffle=True, num_workers=workers, seed=seed)
        loader.set_epoch(epoch)
        return list(loader)

    single, double = epoch_batches(0, 1), epoch_batches(2, 1)
    assert [b[0].shape[0] for b in single] == [5, 5, 2]
    for (x0, y0), (x2, y2) in zip(single, double, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    other_epoch = epoch_batches(0, 2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(single, other_epoch, strict=True))
    assert not torch.equal(torch.cat([b[1] for b in single]), torch.cat([b[1] for b in other_epoch]))


def test_multi_view_layout_is_clip_major(tmp_path):
    list_file = make_dataset(tmp_path, ["a 42 1"], "{:05d}.jpg")
    spec = dataset_spec(root=tmp_path / "frames", val_list=list_file, num_classes=2, flip=False)
    dataset = build_dataset(spec=spec, split="val", num_segments=8, input_size=24, num_clips=2, num_crops=3)
    clip, label = dataset[0]
    assert clip.shape == (6, 8, 3, 24, 24) and label == 1 and dataset.num_views == 6
    views = clip.view(2, 3, 8, 3, 24, 24)
    for c in range(2):
        for crop in range(3):
            assert frame_numbers(views[c, crop]) == [i + 1 for i in eval_indices(42, 8, clip=c, num_clips=2)]
    batch, _ = next(iter(build_loader(dataset, batch_size=1, shuffle=False)))
    assert batch.shape == (1, 6, 8, 3, 24, 24)


def test_bgr255_normalization(tmp_path):
    list_file = make_dataset(tmp_path, ["a 10 0"], "{:05d}.jpg")
    spec = dataset_spec(root=tmp_path / "frames", val_list=list_file, num_classes=1, flip=False)
    clip, _ = build_dataset(spec=spec, split="val", num_segments=2, input_size=16, normalization="bgr255")[0]
    # grey 2i: B, G, R minus 104, 117, 128; frames 3 and 8 (centres of 10 frames in 2 segments).
    assert torch.allclose(
        clip[:, :, 0, 0], torch.tensor([[6.0 - 104, 6 - 117, 6 - 128], [16 - 104, 16 - 117, 16 - 128]]), atol=1.5
    )


# --- bad frames: found when loading, named by list file and line -----------------------------------------------------


def broken_dataset(tmp_path: Path) -> Path:
    list_file = make_dataset(tmp_path, ["good 8 0", "short 8 1", "corrupt 8 0", "good2 8 1"], "{:05d}.jpg")
    (tmp_path / "frames" / "short" / "00008.jpg").unlink()  # the list says 8 frames, the folder has 7
    (tmp_path / "frames" / "corrupt" / "00004.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return list_file


def test_missing_and_corrupt_frames_raise(tmp_path):
    spec = dataset_spec(root=tmp_path / "frames", val_list=broken_dataset(tmp_path), num_classes=2, flip=False)
    dataset = build_dataset(spec=spec, split="val", num_segments=8, input_size=16)  # the list itself is fine
    with pytest.raises(UserError, match=r"list.txt:2: frame .*short/00008.jpg not found \(listed with 8 frames\)"):
        dataset[1]
    with pytest.raises(UserError, match=r"list.txt:3: cannot read frame .*corrupt/00004.jpg"):
        dataset[2]


def test_worker_errors_arrive_as_one_line(tmp_path):
    spec = dataset_spec(root=tmp_path / "frames", val_list=broken_dataset(tmp_path), num_classes=2, flip=False)
    dataset = build_dataset(spec=spec, split="val", num_segments=8, input_size=16)
    with pytest.raises(UserError) as info:
        list(build_loader(dataset, batch_size=2, shuffle=False, num_workers=2))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'list.txt'}:2: frame ")
    del info
    start = time.perf_counter()
    gc.collect()  # the workers are already stopped: nothing left for the collector to wait on
    assert time.perf_counter() - start < 2


def test_stopping_early_stops_workers(tmp_path):
    list_file = make_dataset(tmp_path, [f"v{i} 8 0" for i in range(8)], "{:05d}.jpg")
    spec = dataset_spec(root=tmp_path / "frames", val_list=list_file, num_classes=1, flip=False)
    loader = build_loader(
        build_dataset(spec=spec, split="val", num_segments=2, input_size=8), batch_size=2, shuffle=False, num_workers=2
    )
    clips, _ = next(iter(loader))
    assert clips.shape == (2, 2, 3, 8, 8)
    start = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - start < 2


def test_skip_mode_drops_and_counts(tmp_path, caplog):
    spec = dataset_spec(root=tmp_path / "frames", val_list=broken_dataset(tmp_path), num_classes=2, flip=False)
    dataset = build_dataset(spec=spec, split="val", num_segments=8, input_size=16, on_error="skip")
    batches = list(build_loader(dataset, batch_size=2, shuffle=False))
    assert [b[1].tolist() for b in batches] == [[0], [1]]  # the two broken videos are gone, nothing stands in
    assert "list.txt:2: frame" in caplog.text and "list.txt:3: cannot read frame" in caplog.text
    assert "2 of 4 samples skipped" in caplog.text


def test_list_level_problems_found_when_building(tmp_path):
    list_file = make_dataset(tmp_path, ["a 8 0"], "{:05d}.jpg")
    list_file.write_text("a 8 0\nb 8 0\n")
    spec = dataset_spec(root=tmp_path / "frames", train_list=list_file, num_classes=2, flip=False)
    with pytest.raises(UserError, match=r"list.txt:2: frame folder .*frames/b not found"):
        build_dataset(spec=spec, split="train")
    with pytest.raises(UserError, match="has no val_list"):
        build_dataset(spec=spec, split="val")
    with pytest.raises(UserError, match="for evaluation"):
        build_dataset(spec=spec, split="train", num_clips=2)


def test_flip_rule_follows_the_preset(tmp_path):
    array = np.zeros((30, 40, 3), np.uint8)
    array[:, 20:] = 200
    for i in range(1, 9):
        (tmp_path / "frames" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(tmp_path / "frames" / "a" / f"{i:05d}.jpg")
    (tmp_path / "list.txt").write_text("a 8 0\n")

    def flips(**spec_args: object) -> set[bool]:
        spec = dataset_spec(root=tmp_path / "frames", train_list=tmp_path / "list.txt", **spec_args)
        seen = set()
        for seed in range(12):
            clip, _ = build_dataset(spec=spec, split="train", num_segments=2, input_size=16, seed=seed)[0]
            seen.add(bool(clip[0, 0, :, 0].mean() > clip[0, 0, :, -1].mean()))
        return seen

    assert flips(preset="jester") == {False}  # no flip for Something/Jester
    assert flips(preset="mini_kinetics", template="{:05d}.jpg") == {False, True}
