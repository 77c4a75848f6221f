"""The ``camera`` synthetic family: a camera moving over a photograph-like scene (no object, no background).

The scene is a *dead-leaves* image (Matheron's model of natural images: opaque discs with power-law radii, later
ones occluding earlier ones), which has the statistics that matter in photographs — a scale-invariant ``1/f``
spectrum, sharp occlusion edges at every scale, flat regions — plus a per-leaf shading gradient and a smooth
illumination field. It is rasterised once per video; every frame is an affine view of it (camera centre, scale
and roll angle), supersampled and box-filtered, so all frames of all classes go through the same resampling.

Units: "world" lengths are frame pixels of an 80-px frame at scale 1 (``k = size / 80`` rescales them).
Frames are float32 ``(H, W, 3)`` in [0, 1] (from an 8-bit raster).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from adafuse.data._canvas import smooth_noise

_DENSITY = 2  # raster pixels per world unit: sharp down to scale 0.5
_SUPERSAMPLE = 4  # frames are sampled 4x finer and box-filtered down (anti-aliased at scales up to 1.6)
_RADII = (3.0, 40.0)  # leaf radii (world units), density ∝ r^-3: scale-invariant between these bounds
_COVERAGE = 4.0  # expected leaves over a point: e^-4 ≈ 2 % of the scene shows the plain base colour
SCALES = (0.5, 1.6)  # world units per frame pixel: every frame of every class lies in this range
PAN_SPEED = (3.0, 4.5)  # frame px per frame
ZOOM_RATE = (0.06, 0.08)  # relative change of scale per frame (2.4-3.2x over 16 frames)
ROLL_RATE = (6.0, 9.0)  # degrees per frame

Camera = tuple[float, float, float, float]  # centre x, centre y (world), scale (world per px), angle (rad)


def camera_track(rng: np.random.Generator, pair: int, frames: int, k: float) -> list[Camera]:
    """The forward trajectory of a pair: pan left, tilt up, zoom in or roll clockwise.

    Directions are the camera's: panning left moves the view's centre left along the view's own x axis, so the
    scene slides right across the frame; tilting up moves it up (the scene slides down); zooming in lowers the
    scale (the scene expands); rolling clockwise turns the view clockwise (the scene turns counterclockwise).
    """
    t = np.arange(frames, dtype=np.float64)
    lo, hi = math.log(SCALES[0]), math.log(SCALES[1])
    angle0 = rng.uniform(0, 2 * math.pi)  # the scene is isotropic: its orientation carries no label
    if pair == 2:  # zoom in: scale falls geometrically, the whole path inside SCALES
        # (capped for videos much longer than 16 frames, whose path would not fit the range otherwise)
        rate = min(math.log1p(rng.uniform(*ZOOM_RATE)), (hi - lo) / max(frames - 1, 1))  # log scale per frame
        scale = np.exp(rng.uniform(lo + (frames - 1) * rate, hi) - t * rate)
    else:
        scale = np.full(frames, math.exp(rng.uniform(lo, hi)))
    angle = np.full(frames, angle0)
    if pair == 3:
        angle = angle0 + math.radians(rng.uniform(*ROLL_RATE)) * t  # y points down: + is clockwise on screen
    # Motion in the view's own axes (screen px per frame), turned into world units.
    step = np.zeros((frames, 2))
    if pair in (0, 1):
        speed = rng.uniform(*PAN_SPEED) * k
        step[1:, pair] = -speed  # pan left: -x; tilt up: -y
    cos, sin = np.cos(angle), np.sin(angle)
    world = np.stack([cos * step[:, 0] - sin * step[:, 1], sin * step[:, 0] + cos * step[:, 1]], axis=1)
    centre = np.cumsum(world * scale[:, None], axis=0)
    return [(float(centre[i, 0]), float(centre[i, 1]), float(scale[i]), float(angle[i])) for i in range(frames)]


class DeadLeavesScene:
    """A photograph-like scene covering every view of a camera track, and the views themselves.

    Args:
        rng: the video's generator (the scene's draws come from it).
        track: the cameras of all frames (world units, see :func:`camera_track`).
        size: frame side in pixels.
    """

    def __init__(self, rng: np.random.Generator, track: list[Camera], size: int) -> None:
        k = size / 80
        self.size = size
        # World box: every view corner of every frame, plus a margin for the largest leaf.
        half = size / 2
        corners = []
        for x, y, s, a in track:
            for u, v in ((-half, -half), (half, -half), (-half, half), (half, half)):
                cos, sin = math.cos(a), math.sin(a)
                corners.append((x + s * (u * cos - v * sin), y + s * (u * sin + v * cos)))
        pts = np.array(corners)
        self.origin = pts.min(axis=0) - 2
        extent = pts.max(axis=0) + 2 - self.origin
        width, height = (int(math.ceil(e * _DENSITY)) for e in extent)
        self.raster = self._paint(rng, width, height, k)

    def _paint(self, rng: np.random.Generator, width: int, height: int, k: float) -> Image.Image:
        a, b = (r * k for r in _RADII)
        area = (width / _DENSITY + 2 * b) * (height / _DENSITY + 2 * b)
        mean_sq = 2 * a * a * math.log(b / a) / (1 - (a / b) ** 2)  # E[r^2] under density ∝ r^-3 on [a, b]
        count = int(_COVERAGE * area / (math.pi * mean_sq))
        u = rng.random(count)
        radii = a / np.sqrt(1 - u * (1 - (a / b) ** 2))  # inverse CDF of density ∝ r^-3
        cx = rng.uniform(-b, width / _DENSITY + b, count)
        cy = rng.uniform(-b, height / _DENSITY + b, count)
        # A photograph-like palette: a few colour families per scene, leaves vary around them.
        families = rng.uniform(0.1, 0.9, (int(rng.integers(3, 6)), 3))
        colours = np.clip(families[rng.integers(0, len(families), count)] + rng.normal(0, 0.08, (count, 3)), 0, 1)
        gradients = rng.normal(0, 0.12, (count, 2)) / radii[:, None]  # shading across a leaf, per world unit
        ids = Image.new("I", (width, height), 0)  # 0: no leaf
        draw = ImageDraw.Draw(ids)
        d = _DENSITY
        for i in range(count):  # painted in order: later leaves occlude earlier ones
            r = radii[i] * d
            x, y = cx[i] * d, cy[i] * d
            draw.ellipse((x - r, y - r, x + r, y + r), fill=i + 1)
        leaf = np.asarray(ids, dtype=np.int64) - 1
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / d
        covered = leaf >= 0
        leaf = np.where(covered, leaf, 0)
        shade = gradients[leaf, 0] * (xs - cx[leaf]) + gradients[leaf, 1] * (ys - cy[leaf])
        image = np.where(covered[..., None], colours[leaf] + shade[..., None], families[0])
        light = 0.75 + 0.5 * smooth_noise(rng, height, width, cells=(2, 3))[..., :1]  # illumination, one per scene
        return Image.fromarray((np.clip(image * light, 0, 1) * 255 + 0.5).astype(np.uint8))

    def view(self, camera: Camera) -> np.ndarray:
        """The frame ``(size, size, 3)`` a camera sees: affine sampling of the raster, box-filtered."""
        x, y, s, a = camera
        n = self.size * _SUPERSAMPLE
        step = s / _SUPERSAMPLE * _DENSITY  # raster px per supersampled px
        cos, sin = math.cos(a) * step, math.sin(a) * step
        cx, cy = (x - self.origin[0]) * _DENSITY, (y - self.origin[1]) * _DENSITY
        # PIL samples output pixel (i, j) at its centre (i + 0.5, j + 0.5), in the raster's continuous coordinates.
        off = -n / 2
        data = (cos, -sin, cx + cos * off - sin * off, sin, cos, cy + sin * off + cos * off)
        frame = self.raster.transform((n, n), Image.AFFINE, data, resample=Image.BILINEAR)
        return np.asarray(frame.resize((self.size, self.size), Image.BOX), np.float32) / 255
