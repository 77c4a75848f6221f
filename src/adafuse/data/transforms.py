"""Clip transforms: the same spatial operation on all T frames, then one normalised tensor.

Train (TSN ``GroupMultiScaleCrop`` + flip): a crop whose sides are ``int(short side × scale)`` for scales
``(1, .875, .75, .66)``, snapped to the input size when within 3 px, width and height scale indices differing by
at most 1; placed at one of 13 fixed offsets; bilinear resize to ``input_size²``; a horizontal flip with p = ½
where the dataset allows it (optionally swapping left/right labels). Test: resize the shorter side to
``scale_size`` (``256/224 × input_size``), then a centre crop, or three crops along the longer side.

Randomness comes only from the ``rng`` argument, so a sample is reproducible from its seed alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

Normalization = Literal["imagenet", "bgr255"]
Box = tuple[int, int, int, int]  # left, top, width, height

DEFAULT_SCALES = (1.0, 0.875, 0.75, 0.66)
_IMAGENET_MEAN_255 = tuple(255 * m for m in (0.485, 0.456, 0.406))
_IMAGENET_INV_STD_255 = tuple(1 / (255 * s) for s in (0.229, 0.224, 0.225))
_BGR_MEAN = (104.0, 117.0, 128.0)  # BN-Inception (Caffe): BGR order, 0-255, std 1


def fixed_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 TSN crop positions: 4 corners, centre, 4 edge midpoints, 4 quarter points."""
    w, h = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    return [
        (0, 0), (4 * w, 0), (0, 4 * h), (4 * w, 4 * h), (2 * w, 2 * h),
        (0, 2 * h), (4 * w, 2 * h), (2 * w, 4 * h), (2 * w, 0),
        (w, h), (3 * w, h), (w, 3 * h), (3 * w, 3 * h),
    ]  # fmt: skip


def multi_scale_crop_box(
    image_w: int,
    image_h: int,
    *,
    input_size: int,
    rng: np.random.Generator,
    scales: Sequence[float] = DEFAULT_SCALES,
    max_distort: int = 1,
) -> Box:
    """A random TSN multi-scale crop of a ``image_w × image_h`` frame."""
    base = min(image_w, image_h)
    sizes = [int(base * s) for s in scales]
    # The 3-px snap of the official code, but never beyond the frame (it would crop outside the image).
    crop_h = [input_size if abs(s - input_size) < 3 and input_size <= image_h else s for s in sizes]
    crop_w = [input_size if abs(s - input_size) < 3 and input_size <= image_w else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    w, h = pairs[rng.integers(len(pairs))]
    offsets = fixed_offsets(image_w, image_h, w, h)
    x, y = offsets[rng.integers(len(offsets))]
    return x, y, w, h


def resized_size(image_w: int, image_h: int, short_side: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``short_side`` (torchvision ``Resize(int)`` rounding)."""
    if image_w <= image_h:
        return short_side, int(short_side * image_h / image_w)
    return int(short_side * image_w / image_h), short_side


def center_box(image_w: int, image_h: int, size: int) -> Box:
    """The centred ``size × size`` crop (torchvision ``CenterCrop`` rounding)."""
    return int(round((image_w - size) / 2.0)), int(round((image_h - size) / 2.0)), size, size


def three_crop_boxes(image_w: int, image_h: int, size: int) -> list[Box]:
    """Three ``size × size`` crops along the longer side: start, end, centre (TSM ``GroupFullResSample`` order)."""
    w, h = (image_w - size) // 4, (image_h - size) // 4
    if image_w >= image_h:
        return [(0, 2 * h, size, size), (4 * w, 2 * h, size, size), (2 * w, 2 * h, size, size)]
    return [(2 * w, 0, size, size), (2 * w, 4 * h, size, size), (2 * w, 2 * h, size, size)]


def to_tensor(frames: Sequence[Image.Image], normalization: Normalization) -> torch.Tensor:
    """Stack RGB PIL frames into a normalised, contiguous float tensor ``(T, 3, H, W)``.

    ``"imagenet"``: RGB in [0, 1], ImageNet mean/std. ``"bgr255"``: BGR in [0, 255] minus (104, 117, 128), std 1
    (BN-Inception).
    """
    w, h = frames[0].size
    out = np.empty((len(frames), 3, h, w), np.float32)
    _normalize_into(out, frames, normalization)
    return torch.from_numpy(out)


def _normalize_into(out: np.ndarray, frames: Sequence[Image.Image], normalization: Normalization) -> None:
    """Write normalised frames into ``out`` ``(T, 3, H, W)``.

    Plain numpy, one channel at a time, straight into the output layout: single-threaded and cheap, so a loading
    process never competes for torch's intra-op threads (small torch ops in a busy process cost ~10 ms each).
    """
    if normalization == "imagenet":
        order, mean, scale = (0, 1, 2), _IMAGENET_MEAN_255, _IMAGENET_INV_STD_255
    elif normalization == "bgr255":
        order, mean, scale = (2, 1, 0), _BGR_MEAN, (1.0, 1.0, 1.0)
    else:
        raise ValueError(f"normalization must be 'imagenet' or 'bgr255', got {normalization!r}")
    pixels = np.stack([np.asarray(f) for f in frames])  # (T, H, W, 3) uint8
    for c, source in enumerate(order):
        np.subtract(pixels[..., source], mean[c], out=out[:, c], dtype=np.float32)
        if scale[c] != 1.0:
            out[:, c] *= scale[c]


def _crop_resize(frames: Sequence[Image.Image], box: Box, size: int | None) -> list[Image.Image]:
    x, y, w, h = box
    crops = [f.crop((x, y, x + w, y + h)) for f in frames]
    if size is None or (w, h) == (size, size):
        return crops
    return [c.resize((size, size), Image.BILINEAR) for c in crops]


class TrainTransform:
    """Multi-scale crop and optional flip, identical for all frames: T frames → ``(T, 3, S, S)`` and a label.

    Args:
        input_size: output side S.
        flip: flip the clip horizontally with p = ½.
        flip_label_map: labels swapped by a flip (left/right classes); others keep their label.
        normalization: ``"imagenet"`` or ``"bgr255"``.
        scales: crop sides as fractions of the shorter frame side.
    """

    def __init__(
        self,
        *,
        input_size: int,
        flip: bool,
        flip_label_map: Mapping[int, int] | None = None,
        normalization: Normalization = "imagenet",
        scales: Sequence[float] = DEFAULT_SCALES,
    ) -> None:
        self.input_size = input_size
        self.flip = flip
        self.flip_label_map = dict(flip_label_map or {})
        self.normalization = normalization
        self.scales = tuple(scales)

    def __call__(self, frames: Sequence[Image.Image], label: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """Transform one clip; returns ``(clip (T, 3, S, S), label)``."""
        w, h = frames[0].size
        box = multi_scale_crop_box(w, h, input_size=self.input_size, rng=rng, scales=self.scales)
        out = _crop_resize(frames, box, self.input_size)
        if self.flip and rng.random() < 0.5:
            out = [f.transpose(Image.FLIP_LEFT_RIGHT) for f in out]
            label = self.flip_label_map.get(label, label)
        return to_tensor(out, self.normalization), label


class EvalTransform:
    """Resize the shorter side to ``scale_size``, then one centre crop or three crops, for each clip of a video:
    ``(clips × crops, T, 3, S, S)``.

    Args:
        input_size: crop side S.
        scale_size: shorter side before cropping; default ``input_size × 256 // 224`` (256 for 224, as TSM).
        num_crops: 1 (centre) or 3 (start, end, centre along the longer side).
        normalization: ``"imagenet"`` or ``"bgr255"``.
    """

    def __init__(
        self,
        *,
        input_size: int,
        scale_size: int | None = None,
        num_crops: int = 1,
        normalization: Normalization = "imagenet",
    ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.input_size = input_size
        self.scale_size = scale_size or input_size * 256 // 224
        self.num_crops = num_crops
        self.normalization = normalization

    @classmethod
    def for_model(cls, config: Any, *, num_crops: int = 1) -> EvalTransform:
        """The evaluation transform of a model: its ``config`` (a :class:`~adafuse.models.ModelConfig`) gives the
        input size and normalization it was trained with."""
        return cls(input_size=config.input_size, normalization=config.normalization, num_crops=num_crops)

    def __call__(self, clips: Sequence[Sequence[Image.Image]]) -> torch.Tensor:
        """Transform the clips of one video; returns ``(V, T, 3, S, S)``, ``V = len(clips) × num_crops``, clip-major
        (clip 0 crop 0, clip 0 crop 1, ...)."""
        s = self.input_size
        out = np.empty((len(clips) * self.num_crops, len(clips[0]), 3, s, s), np.float32)
        for c, frames in enumerate(clips):
            size = resized_size(*frames[0].size, self.scale_size)
            if size != frames[0].size:
                frames = [f.resize(size, Image.BILINEAR) for f in frames]
            boxes = [center_box(*size, s)] if self.num_crops == 1 else three_crop_boxes(*size, s)
            for k, box in enumerate(boxes):
                _normalize_into(out[c * self.num_crops + k], _crop_resize(frames, box, None), self.normalization)
        return torch.from_numpy(out)
