"""Drawing helpers of the synthetic benchmark: smooth-noise textures and anti-aliased shape sprites.

Images are float32 ``(H, W, 3)`` in [0, 1]; masks float32 ``(H, W)`` in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

Polygon = list[tuple[float, float]]

_SUPERSAMPLE = 4  # masks are drawn 4x larger and box-filtered down: anti-aliased edges, sub-pixel positions


def _circle(radius: float, cx: float = 0.0, cy: float = 0.0, n: int = 40) -> Polygon:
    return [
        (cx + radius * math.cos(2 * math.pi * k / n), cy + radius * math.sin(2 * math.pi * k / n)) for k in range(n)
    ]


def _star(points: int, inner: float) -> Polygon:
    return [
        ((1.0 if k % 2 == 0 else inner) * math.cos(math.pi * k / points - math.pi / 2),
         (1.0 if k % 2 == 0 else inner) * math.sin(math.pi * k / points - math.pi / 2))
        for k in range(2 * points)
    ]  # fmt: skip


def _wedge(mouth_deg: float) -> Polygon:
    half = math.radians(mouth_deg) / 2
    arc = [half + (2 * math.pi - 2 * half) * k / 32 for k in range(33)]
    return [(0.0, 0.0)] + [(math.cos(a), math.sin(a)) for a in arc]


# Each shape: polygons in a unit box around the origin, painted in order with fill 1 (add) or 0 (cut out).
SHAPES: dict[str, list[tuple[Polygon, int]]] = {
    "disc": [(_circle(1.0), 1)],
    "ring": [(_circle(1.0), 1), (_circle(0.55), 0)],
    "square": [([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], 1)],
    "triangle": [([(0.0, -1.0), (0.9, 0.7), (-0.9, 0.7)], 1)],
    "cross": [([(-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1)], 1), ([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)], 1)],
    "star": [(_star(5, 0.45), 1)],
    "crescent": [(_circle(1.0), 1), (_circle(0.8, 0.45, -0.2), 0)],
    "hourglass": [([(-0.8, -1), (0.8, -1), (0.0, 0.0), (0.8, 1), (-0.8, 1), (0.0, 0.0)], 1)],
    # No rotational symmetry: their turning direction is visible.
    "l_shape": [([(-0.8, -1), (-0.2, -1), (-0.2, 0.4), (0.8, 0.4), (0.8, 1), (-0.8, 1)], 1)],
    "arrow": [([(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)], 1)],
    "wedge": [(_wedge(80), 1)],
}


def smooth_noise(
    rng: np.random.Generator, height: int, width: int, *, cells: tuple[int, ...] = (3, 6, 12)
) -> np.ndarray:
    """Natural-looking texture ``(H, W, 3)`` in [0, 1]: octaves of bicubically upsampled random grids."""
    out = np.zeros((height, width, 3), np.float32)
    weights = [0.5**k for k in range(len(cells))]
    for n, weight in zip(cells, weights, strict=True):
        grid = rng.random((n, n, 3), dtype=np.float32)
        for c in range(3):
            up = Image.fromarray(np.ascontiguousarray(grid[:, :, c])).resize((width, height), Image.BICUBIC)
            out[:, :, c] += weight * np.asarray(up)
    return np.clip(out / sum(weights), 0.0, 1.0)


def shape_mask(shape: str, *, canvas: int, radius: float, angle: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Alpha mask ``(canvas, canvas)`` of ``shape`` with the given radius (px) and angle (radians, clockwise on
    screen), centred at the canvas centre shifted by the sub-pixel ``(dx, dy)``."""
    s = _SUPERSAMPLE
    image = Image.new("L", (canvas * s, canvas * s), 0)
    draw = ImageDraw.Draw(image)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = (canvas / 2 + dx) * s, (canvas / 2 + dy) * s
    for polygon, fill in SHAPES[shape]:
        points = [(cx + s * radius * (x * cos - y * sin), cy + s * radius * (x * sin + y * cos)) for x, y in polygon]
        draw.polygon(points, fill=255 * fill)
    return np.asarray(image.resize((canvas, canvas), Image.BOX), np.float32) / 255.0


def paste(frame: np.ndarray, texture: np.ndarray, mask: np.ndarray, left: int, top: int) -> None:
    """Alpha-blend ``texture`` ``(c, c, 3)`` with ``mask`` ``(c, c)`` into ``frame`` in place at ``(left, top)``."""
    h, w = frame.shape[:2]
    c = mask.shape[0]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + c, w), min(top + c, h)
    if x0 >= x1 or y0 >= y1:
        return
    m = mask[y0 - top : y1 - top, x0 - left : x1 - left, None]
    t = texture[y0 - top : y1 - top, x0 - left : x1 - left]
    frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - m) + t * m
