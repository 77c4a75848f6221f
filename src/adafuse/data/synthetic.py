"""The built-in synthetic benchmarks: small videos whose label lies in frame order (``temporal``, ``camera``) or in
appearance only (``static``), written in the same frame-folder format as the real datasets.

``temporal`` has four pairs of classes, each pair a time reversal: a video of the second class of a pair is the
first-class video, drawn from the same parameters, played backwards. So the *set* of frames of a video is
identically distributed in both classes and an order-blind model (TSN: average of per-frame predictions) cannot
beat chance within a pair; telling them apart takes comparing neighbouring frames (2.5-3.5 px of motion, an ~8 %
change of size, 15-25° of rotation or a fade step per frame), which is what AdaFuse's fusion of frame t−1 into t
can do.

``static`` has eight shape classes; the object wanders randomly, so motion carries no label information.

``camera`` is a second family with other statistics: no object and no background, but a camera panning, tilting,
zooming or rolling over a photograph-like dead-leaves scene (see :mod:`adafuse.data._camera`), again in four
time-reversed pairs; every frame of every class is a view of the same kind of isotropic, near scale-invariant scene.

Every video has a smooth-noise background, a lightly textured high-contrast object of ≥ 12 px, one or two static
distractor blobs, per-frame pixel noise and a brightness flicker. The clutter is kept mild on purpose: with more,
a CNN trained from scratch takes many more epochs before the temporal cue emerges. Everything is a function of
``(seed, video index)``: two generations are byte-identical, whatever the number of workers.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from adafuse.data._camera import DeadLeavesScene, camera_track
from adafuse.data._canvas import paste, shape_mask, smooth_noise
from adafuse.data.spec import save_dataset_yaml
from adafuse.errors import UserError

Kind = Literal["temporal", "static", "camera"]
KINDS = ("temporal", "static", "camera")

# Pairs (forward, reversed): the second class of each pair is the first played backwards.
TEMPORAL_CLASSES = (
    "moving left",
    "moving right",
    "growing",
    "shrinking",
    "appearing",
    "disappearing",
    "rotating clockwise",
    "rotating counterclockwise",
)
# Pairs again: the second class is the first played backwards. Directions are the camera's (panning left, the
# scene slides right across the frame).
CAMERA_CLASSES = (
    "panning left",
    "panning right",
    "tilting up",
    "tilting down",
    "zooming in",
    "zooming out",
    "rolling clockwise",
    "rolling counterclockwise",
)
# A horizontal flip turns a left pan into a right pan and a clockwise roll into a counterclockwise one; tilts and
# zooms stay what they are.
CAMERA_FLIP_MAP = {0: 1, 1: 0, 6: 7, 7: 6}
STATIC_CLASSES = ("disc", "ring", "square", "triangle", "cross", "star", "crescent", "hourglass")
_TURNING_SHAPES = ("l_shape", "arrow", "wedge")  # no rotational symmetry, so a turn has a visible direction
_MAX_RADIUS = 21  # px at 80 px frames

TEMPLATE = "{:05d}.jpg"
_OUTPUTS = ("frames", "train.txt", "val.txt", "classes.txt", "dataset.yaml")
_VAL_SHARE = 4  # the last quarter of the rounds of one video per class (at least one round) is validation


def class_names(kind: Kind) -> tuple[str, ...]:
    """Class names of a synthetic ``kind``, in label order."""
    if kind == "temporal":
        return TEMPORAL_CLASSES
    if kind == "static":
        return STATIC_CLASSES
    if kind == "camera":
        return CAMERA_CLASSES
    raise UserError(f"synthetic kind must be one of {', '.join(KINDS)}, got {kind!r}")


def render_video(*, kind: Kind, label: int, seed: int | Sequence[int], size: int = 80, frames: int = 16) -> np.ndarray:
    """One synthetic video, uint8 ``(frames, size, size, 3)``.

    For ``temporal`` and ``camera`` the random draws depend on the pair ``label // 2`` only, so with the same
    ``seed`` the video of label ``2p + 1`` is exactly the video of label ``2p`` reversed in time.
    """
    names = class_names(kind)
    if not 0 <= label < len(names):
        raise UserError(f"label {label} is out of range for the {len(names)} {kind} classes")
    rng = np.random.default_rng(seed)
    k = size / 80  # all lengths below are for 80-px frames
    if kind == "camera":
        cameras = camera_track(rng, label // 2, frames, k)
        scene = DeadLeavesScene(rng, cameras, size)
        video = np.stack([_sensor(rng, scene.view(camera)) for camera in cameras])
    else:
        scene = _Scene(rng, size)
        if kind == "temporal":
            track = _temporal_track(rng, label // 2, size, frames, k)
        else:
            track = _random_walk(rng, STATIC_CLASSES[label], size, frames, k)
        video = np.stack([scene.render(rng, *state) for state in track])
    if kind != "static" and label % 2:
        video = video[::-1].copy()
    return video


def _sensor(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """Per-frame pixel noise (σ = 1 % of the range) and a brightness flicker, then uint8."""
    frame = frame + rng.normal(0.0, 0.01, frame.shape).astype(np.float32) + rng.uniform(-0.02, 0.02)
    return (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


class _Scene:
    """Background, distractors and the object's texture of one video."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        k = size / 80
        level = rng.uniform(0.2, 0.8)
        c1 = np.clip(level + rng.uniform(-0.15, 0.15, 3), 0, 1)
        c2 = np.clip(c1 + rng.uniform(-0.12, 0.12, 3), 0, 1)
        self.background = (c1 + (c2 - c1) * smooth_noise(rng, size, size)).astype(np.float32)
        for _ in range(rng.integers(1, 3)):
            radius = rng.uniform(2.5, 4.5) * k
            canvas = math.ceil(2.4 * radius) + 2
            mask = shape_mask(
                str(rng.choice(["disc", "square"])), canvas=canvas, radius=radius, angle=rng.uniform(0, 6.3)
            )
            color = np.broadcast_to(rng.random(3, dtype=np.float32), (canvas, canvas, 3))
            left, top = (int(v) for v in rng.integers(0, size - canvas, 2))
            paste(self.background, color, mask, left, top)
        # The object contrasts with the background in lightness, so its outline is always visible.
        sign = 1.0 if level < 0.5 else -1.0
        c3 = np.clip(level + sign * rng.uniform(0.45, 0.55) + rng.uniform(-0.05, 0.05, 3), 0, 1)
        c4 = np.clip(c3 + rng.uniform(-0.06, 0.06, 3), 0, 1)
        self.canvas = math.ceil(2.6 * _MAX_RADIUS * k) + 4  # fits the largest object (L corners: 1.28 radii)
        self.texture = (c3 + (c4 - c3) * smooth_noise(rng, self.canvas, self.canvas, cells=(2, 4))).astype(np.float32)

    def render(
        self, rng: np.random.Generator, shape: str, x: float, y: float, radius: float, angle: float, alpha: float
    ) -> np.ndarray:
        """One uint8 frame with the object centred at ``(x, y)``."""
        frame = self.background.copy()
        if alpha > 0:
            left, top = math.floor(x - self.canvas / 2), math.floor(y - self.canvas / 2)
            dx, dy = x - self.canvas / 2 - left, y - self.canvas / 2 - top
            mask = shape_mask(shape, canvas=self.canvas, radius=radius, angle=angle, dx=dx, dy=dy)
            paste(frame, self.texture, alpha * mask, left, top)
        return _sensor(rng, frame)


State = tuple[str, float, float, float, float, float]  # shape, x, y, radius, angle (rad), alpha


def _temporal_track(rng: np.random.Generator, pair: int, size: int, frames: int, k: float) -> list[State]:
    """The forward trajectory of a pair: moving left, growing, appearing or rotating clockwise."""
    shape = str(rng.choice(_TURNING_SHAPES))
    angle = rng.uniform(0, 2 * math.pi)
    t = np.arange(frames, dtype=np.float64)
    radius = np.full(frames, rng.uniform(11, 14) * k)
    alpha = np.ones(frames)
    angles = np.full(frames, angle)
    # Shapes reach 1.3 radii from their centre (the L's corners): keep them inside the frame.
    margin = 1.3 * (_MAX_RADIUS * k if pair == 1 else radius[0]) + 2
    x = np.full(frames, rng.uniform(margin, size - margin))
    y = np.full(frames, rng.uniform(margin, size - margin))
    if pair == 0:  # moving left, 2.5-3.5 px per frame
        room = size - 2 * margin
        speed = min(rng.uniform(2.5, 3.5) * k, room / (frames - 1))
        x = margin + speed * (frames - 1 - t) + rng.uniform(0, max(room - speed * (frames - 1), 0.0))
    elif pair == 1:  # growing geometrically from ~6.5 to ~19.5 px radius, ~8 % per frame
        r0, r1 = rng.uniform(6, 7) * k, rng.uniform(18, _MAX_RADIUS) * k
        radius = r0 * (r1 / r0) ** (t / (frames - 1))
    elif pair == 2:  # appearing: a fade-in over 4-8 frames somewhere in the middle
        length = int(rng.integers(min(4, frames - 2), min(8, frames - 2) + 1))
        start = int(rng.integers(1, frames - length))
        alpha = np.clip((t - start) / length, 0, 1)
    else:  # rotating clockwise on screen, 15-25 degrees per frame
        angles = angle + np.radians(rng.uniform(15, 25)) * t
    return [(shape, x[i], y[i], radius[i], angles[i], alpha[i]) for i in range(frames)]


def _random_walk(rng: np.random.Generator, shape: str, size: int, frames: int, k: float) -> list[State]:
    """A random, label-free path: momentum plus noise, bouncing off the margins."""
    radius = rng.uniform(9, 13) * k
    lo, hi = 1.3 * radius + 2, size - 1.3 * radius - 2
    pos = rng.uniform(lo, hi, 2)
    vel = rng.normal(0, 1.2 * k, 2)
    angle, spin = rng.uniform(0, 2 * math.pi), rng.uniform(-0.05, 0.05)
    track = []
    for _ in range(frames):
        track.append((shape, pos[0], pos[1], radius, angle, 1.0))
        vel = 0.85 * vel + rng.normal(0, 0.6 * k, 2)
        pos = pos + vel
        for d in range(2):  # reflect at the margins
            if pos[d] < lo or pos[d] > hi:
                pos[d] = np.clip(2 * np.clip(pos[d], lo, hi) - pos[d], lo, hi)
                vel[d] = -vel[d]
        angle += spin
    return track


def _write_video(task: tuple[Kind, int, int, int, int, int, str]) -> None:
    kind, index, label, seed, size, frames, folder = task
    video = render_video(kind=kind, label=label, seed=[seed, index], size=size, frames=frames)
    Path(folder).mkdir(parents=True)
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(Path(folder) / TEMPLATE.format(t + 1), quality=90)


def generate_synthetic(
    *,
    kind: Kind,
    out: str | Path,
    num_videos: int = 480,
    seed: int = 0,
    size: int = 80,
    frames: int = 16,
    workers: int = 1,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic dataset to ``out``: ``frames/<id>/00001.jpg ...``, ``train.txt``, ``val.txt``,
    ``classes.txt`` and ``dataset.yaml`` (preset ``custom``; flip off for ``temporal``, whose labels say left;
    ``swap`` for ``camera``, where a flip swaps left/right pans and the two rolls).

    Labels go round-robin (video ``i`` has label ``i mod 8``); the last quarter of the rounds (at least one) is
    validation, so both splits are balanced. Returns a summary (paths, counts, seconds).
    """
    names = class_names(kind)
    if num_videos < 2 * len(names):
        raise UserError(f"--num-videos must be at least {2 * len(names)} (two per class), got {num_videos}")
    if size < 32 or frames < 4 or workers < 1:
        raise UserError(f"need --size >= 32, --frames >= 4 and --workers >= 1, got {size}, {frames} and {workers}")
    out = Path(out)
    existing = [name for name in _OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{out / existing[0]}: already exists; choose another --out or pass --overwrite")
    for name in existing:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    labels = [i % len(names) for i in range(num_videos)]
    tasks = [(kind, i, labels[i], seed, size, frames, str(out / "frames" / f"{i:05d}")) for i in range(num_videos)]
    if workers > 1:
        with get_context().Pool(workers) as pool:
            pool.map(_write_video, tasks, chunksize=8)
    else:
        for task in tasks:
            _write_video(task)
    rounds = math.ceil(num_videos / len(names))
    first_val = rounds - max(1, rounds // _VAL_SHARE)
    is_val = [i // len(names) >= first_val for i in range(num_videos)]
    for split, want in (("train", False), ("val", True)):
        lines = [f"{i:05d} {frames} {labels[i]}\n" for i in range(num_videos) if is_val[i] == want]
        (out / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    yaml_path = save_dataset_yaml(
        out / "dataset.yaml",
        preset="custom",
        format="frames",
        root="frames",
        train_list="train.txt",
        val_list="val.txt",
        classes="classes.txt",
        template=TEMPLATE,
        num_classes=len(names),
        flip={"temporal": False, "static": True, "camera": "swap"}[kind],
        **({"flip_label_map": CAMERA_FLIP_MAP} if kind == "camera" else {}),
    )
    return {
        "kind": kind,
        "out": str(out),
        "dataset": str(yaml_path),
        "num_videos": num_videos,
        "num_train": is_val.count(False),
        "num_val": is_val.count(True),
        "num_classes": len(names),
        "classes": list(names),
        "frames": frames,
        "size": size,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 3),
    }
