"""The synthetic benchmark: determinism, exact time reversal within pairs, and the standard on-disk format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adafuse.cli import main
from adafuse.data import build_dataset, build_loader, load_dataset_yaml, render_video
from adafuse.data._camera import PAN_SPEED, ROLL_RATE, SCALES, ZOOM_RATE, camera_track
from adafuse.data._canvas import shape_mask
from adafuse.data.synthetic import CAMERA_CLASSES, STATIC_CLASSES, TEMPORAL_CLASSES, _temporal_track


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_and_in_the_standard_format(tmp_path, capsys):
    args = ["synth", "--kind", "temporal", "--num-videos", "16", "--size", "48", "--frames", "8", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["num_train"], summary["num_val"], summary["classes"]) == (8, 8, list(TEMPORAL_CLASSES))
    assert main([*args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    assert files(tmp_path / "a") == files(tmp_path / "b")  # byte-identical, whatever the number of workers
    assert main([*args[:-1], "4", "--out", str(tmp_path / "c")]) == 0
    assert files(tmp_path / "a") != files(tmp_path / "c")

    assert (tmp_path / "a" / "train.txt").read_text().splitlines()[:2] == ["00000 8 0", "00001 8 1"]
    assert (tmp_path / "a" / "frames" / "00000" / "00008.jpg").is_file()
    spec = load_dataset_yaml(tmp_path / "a" / "dataset.yaml")
    assert spec.class_names == TEMPORAL_CLASSES and spec.flip is False  # its labels say left and right
    loader = build_loader(
        build_dataset(spec=spec, split="train", input_size=32, num_segments=4), batch_size=8, shuffle=True
    )
    clips, labels = next(iter(loader))
    assert clips.shape == (8, 4, 3, 32, 32) and sorted(labels.tolist()) == list(range(8))


@pytest.mark.parametrize("kind", ["temporal", "camera"])
@pytest.mark.parametrize("pair", range(4))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_second_class_of_a_pair_is_the_first_reversed(kind, pair, seed):
    forward = render_video(kind=kind, label=2 * pair, seed=seed, size=64, frames=12)
    backward = render_video(kind=kind, label=2 * pair + 1, seed=seed, size=64, frames=12)
    assert forward.shape == (12, 64, 64, 3) and forward.dtype == np.uint8
    # Same multiset of frames, opposite order: an order-blind model sees identically distributed inputs.
    assert np.array_equal(backward, forward[::-1])
    assert not np.array_equal(forward, backward)  # ... and the order does differ


def test_forward_trajectories_go_the_way_their_names_say():
    rng = np.random.default_rng(0)
    for _ in range(20):
        moving = _temporal_track(rng, 0, 80, 16, 1.0)
        assert all(b[1] < a[1] for a, b in zip(moving, moving[1:], strict=False))  # "moving left": x decreases
        growing = _temporal_track(rng, 1, 80, 16, 1.0)
        assert growing[-1][3] > 2 * growing[0][3] and growing[0][3] >= 6  # >= 12 px across
        appearing = _temporal_track(rng, 2, 80, 16, 1.0)
        assert appearing[0][5] == 0 and appearing[-1][5] == 1
        turning = _temporal_track(rng, 3, 80, 16, 1.0)
        assert all(
            math.radians(14) < b[4] - a[4] < math.radians(26) for a, b in zip(turning, turning[1:], strict=False)
        )
    # A positive angle turns clockwise on screen (y points down): an arrow pointing right then points down.
    # The head is wide (half-width 0.5 r at 0.37 r along the axis), the shaft narrow (0.25 r).
    arrow = shape_mask("arrow", canvas=40, radius=15, angle=0.0)
    assert arrow[27, 25] > 0.9 and arrow[27, 14] < 0.1  # head on the right
    arrow = shape_mask("arrow", canvas=40, radius=15, angle=math.pi / 2)
    assert arrow[25, 27] > 0.9 and arrow[14, 27] < 0.1  # head below: turned clockwise


def test_static_labels_are_shapes_and_motion_is_label_free():
    videos = [render_video(kind="static", label=label, seed=5, size=64, frames=8) for label in range(8)]
    assert len(STATIC_CLASSES) == 8
    # Same seed, different shape: the same background and path, only the object's outline differs.
    changed = [np.abs(v.astype(int) - videos[0]).max(axis=-1) > 40 for v in videos[1:]]
    assert all(0 < c.mean() < 0.1 for c in changed)


def test_bad_synth_arguments(tmp_path, capsys):
    assert main(["synth", "--kind", "temporal", "--out", str(tmp_path), "--num-videos", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--num-videos must be at least 16" in err
    assert main(["synth", "--kind", "static", "--out", str(tmp_path), "--num-videos", "16", "--size", "32"]) == 0
    assert main(["synth", "--kind", "static", "--out", str(tmp_path), "--num-videos", "16", "--size", "32"]) == 2
    assert "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err


def test_camera_generation_is_deterministic_and_flips_swap_the_mirrored_classes(tmp_path, capsys):
    args = ["synth", "--kind", "camera", "--num-videos", "16", "--size", "40", "--frames", "6", "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "a"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == list(CAMERA_CLASSES)
    assert main([*args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    assert files(tmp_path / "a") == files(tmp_path / "b")
    spec = load_dataset_yaml(tmp_path / "a" / "dataset.yaml")
    # A mirror swaps left/right pans and the two rolls; tilts and zooms keep their labels.
    assert spec.flip is True and spec.flip_label_map == {0: 1, 1: 0, 6: 7, 7: 6}
    assert [CAMERA_CLASSES[i] for i in (0, 1, 6, 7)] == [
        "panning left", "panning right", "rolling clockwise", "rolling counterclockwise"]


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(dx, dy) that moves the content of frame a onto frame b, by phase correlation."""
    fa, fb = (np.fft.fft2(f.astype(float).mean(-1) - f.mean()) for f in (a, b))
    cross = fb * fa.conj()
    peak = np.unravel_index(np.argmax(np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real), a.shape[:2])
    dy, dx = ((p + n // 2) % n - n // 2 for p, n in zip(peak, a.shape[:2], strict=True))
    return int(dx), int(dy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_camera_pans_move_the_scene_the_other_way_and_nothing_else(seed):
    k = (2 * PAN_SPEED[0] // 1, 2 * PAN_SPEED[1] // 1 + 1)  # two frames apart: 5-7 px
    left = render_video(kind="camera", label=0, seed=seed, size=80, frames=8)
    up = render_video(kind="camera", label=2, seed=seed, size=80, frames=8)
    for t in range(0, 6, 2):
        dx, dy = _shift(left[t], left[t + 2])
        assert k[0] <= dx <= k[1] and dy == 0  # panning left: the scene slides right
        dx, dy = _shift(up[t], up[t + 2])
        assert dx == 0 and k[0] <= dy <= k[1]  # tilting up: the scene slides down


def test_camera_tracks_zoom_and_roll_the_way_their_names_say():
    rng = np.random.default_rng(0)
    for _ in range(20):
        for pair in range(4):
            track = camera_track(rng, pair, 16, 1.0)
            scales = [c[2] for c in track]
            assert all(SCALES[0] - 1e-9 <= s <= SCALES[1] + 1e-9 for s in scales)  # one range for every class
            steps = list(zip(track, track[1:], strict=False))
            if pair == 2:  # zooming in: fewer scene units per pixel every frame, at 4.5-6 %
                assert all(1 + ZOOM_RATE[0] - 1e-9 <= a[2] / b[2] <= 1 + ZOOM_RATE[1] + 1e-9 for a, b in steps)
            else:
                assert len(set(scales)) == 1
            if pair == 3:  # rolling clockwise: the angle grows (y points down) by 4-6 degrees a frame
                assert all(math.radians(ROLL_RATE[0]) - 1e-9 <= b[3] - a[3] <= math.radians(ROLL_RATE[1]) + 1e-9
                           for a, b in steps)
            else:
                assert len({c[3] for c in track}) == 1
            if pair >= 2:  # zoom and roll turn about a fixed centre
                assert len({(c[0], c[1]) for c in track}) == 1
