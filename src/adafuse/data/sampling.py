"""TSN segment sampling: which ``num_segments`` frames of an ``n``-frame video make a clip.

Indices are 0-based (frame files are 1-based: index ``i`` is file ``template.format(i + 1)``). The rules are the
official ones (TSN/TSM/AdaFuse ``_sample_indices`` and ``_get_val_indices``):

- train, ``n >= T``: ``T`` chunks of ``d = n // T`` frames, a random offset in each: ``k·d + U[0, d)``;
  the last ``n - T·d`` frames are never drawn;
- train, ``n < T``: ``0 .. n-1``, then the last frame repeated;
- test: segment centres ``int(tick/2 + k·tick)`` with ``tick = n / T``; when ``n <= T``, ``0 .. n-1`` padded
  with the last frame.

Example, ``n = 42, T = 8``: test gives ``[2, 7, 13, 18, 23, 28, 34, 39]`` (``tick = 5.25``).

Multi-clip testing (``num_clips = K``) shifts the centres: clip ``c`` takes ``int(tick·(k + (c + ½)/K))``, so
``K = 1`` is exactly the official centre rule and the clips tile each segment evenly.
"""

from __future__ import annotations

import numpy as np


def _padded(num_frames: int, num_segments: int) -> np.ndarray:
    return np.minimum(np.arange(num_segments), num_frames - 1)


def train_indices(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Random TSN segment indices for training, shape ``(num_segments,)``."""
    _check(num_frames, num_segments)
    if num_frames < num_segments:
        return _padded(num_frames, num_segments)
    d = num_frames // num_segments
    return np.arange(num_segments) * d + rng.integers(0, d, size=num_segments)


def eval_indices(num_frames: int, num_segments: int, *, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """Deterministic segment-centre indices of clip ``clip`` of ``num_clips``, shape ``(num_segments,)``."""
    _check(num_frames, num_segments)
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip {clip} out of range for {num_clips} clips")
    if num_frames <= num_segments:
        return _padded(num_frames, num_segments)
    tick = num_frames / num_segments
    if num_clips == 1:  # the official expression, kept verbatim so float rounding matches it exactly
        return np.array([int(tick / 2.0 + tick * k) for k in range(num_segments)])
    return np.array([int(tick * (k + (clip + 0.5) / num_clips)) for k in range(num_segments)])


def _check(num_frames: int, num_segments: int) -> None:
    if num_frames < 1 or num_segments < 1:
        raise ValueError(f"need num_frames >= 1 and num_segments >= 1, got {num_frames} and {num_segments}")
