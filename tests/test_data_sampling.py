"""Segment sampling and spatial transforms against the official rules, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adafuse.data.sampling import eval_indices, train_indices
from adafuse.data.transforms import (
    EvalTransform,
    TrainTransform,
    center_box,
    fixed_offsets,
    multi_scale_crop_box,
    resized_size,
    three_crop_boxes,
    to_tensor,
)


class FixedOffsets:
    """A stand-in generator whose ``integers`` returns chosen chunk offsets."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = np.array(offsets)

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        assert (low, size) == (0, len(self.offsets)) and (self.offsets < high).all()
        return self.offsets


# --- sampling ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # tick = 5.25: int(2.625), int(7.875), int(13.125), int(18.375), int(23.625), int(28.875), int(34.125), ...
        (42, [2, 7, 13, 18, 23, 28, 34, 39]),
        # tick = 5.625: 2.8125, 8.4375, 14.0625, 19.6875, 25.3125, 30.9375, 36.5625, 42.1875
        (45, [2, 8, 14, 19, 25, 30, 36, 42]),
        (16, [1, 3, 5, 7, 9, 11, 13, 15]),  # tick = 2: centres 1 + 2k
        (8, [0, 1, 2, 3, 4, 5, 6, 7]),  # n = T: every frame
        (5, [0, 1, 2, 3, 4, 4, 4, 4]),  # n < T: padded with the last frame
        (1, [0, 0, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_eval_indices_official_centres(n, expected):
    assert eval_indices(n, 8).tolist() == expected


def test_multi_clip_indices():
    # n = 42, tick = 5.25, K = 2: clip 0 at int(5.25 (k + 1/4)), clip 1 at int(5.25 (k + 3/4)).
    assert eval_indices(42, 8, clip=0, num_clips=2).tolist() == [1, 6, 11, 17, 22, 27, 32, 38]
    assert eval_indices(42, 8, clip=1, num_clips=2).tolist() == [3, 9, 14, 19, 24, 30, 35, 40]
    assert eval_indices(5, 8, clip=1, num_clips=2).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_train_indices_official_chunks():
    # n = 42, T = 8: chunks of d = 5 frames (40 and 41 are never drawn); index = 5k + offset.
    assert train_indices(42, 8, FixedOffsets([0, 1, 2, 3, 4, 0, 1, 2])).tolist() == [0, 6, 12, 18, 24, 25, 31, 37]
    assert train_indices(8, 8, FixedOffsets([0] * 8)).tolist() == list(range(8))  # d = 1
    assert train_indices(5, 8, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]  # n < T
    rng = np.random.default_rng(0)
    seen = np.stack([train_indices(42, 8, rng) for _ in range(500)])
    assert (seen // 5 == np.arange(8)).all() and set(np.unique(seen % 5)) == {0, 1, 2, 3, 4}


# --- transforms ----------------------------------------------------------------------------------------------------


def test_fixed_offsets_are_the_13_tsn_positions():
    # 340x256 frame, 224 crop: steps (340 - 224) // 4 = 29 and (256 - 224) // 4 = 8.
    assert fixed_offsets(340, 256, 224, 224) == [
        (0, 0), (116, 0), (0, 32), (116, 32), (58, 16),
        (0, 16), (116, 16), (58, 32), (58, 0),
        (29, 8), (87, 8), (29, 24), (87, 24),
    ]  # fmt: skip


def test_multi_scale_crop_sizes_and_snap():
    rng = np.random.default_rng(0)
    boxes = [multi_scale_crop_box(340, 256, input_size=224, rng=rng) for _ in range(2000)]
    # Sides int(256 s) for s in (1, .875, .75, .66) = 256, 224, 192, 168; width/height indices differ by <= 1.
    sizes = [256, 224, 192, 168]
    assert {(w, h) for _, _, w, h in boxes} == {
        (sizes[j], sizes[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1
    }
    assert all((x, y) in fixed_offsets(340, 256, w, h) for x, y, w, h in boxes)
    # 254 px: int(254 * .875) = 222 is within 3 px of 224 and snaps to it.
    snapped = {w for _, _, w, _ in (multi_scale_crop_box(330, 254, input_size=224, rng=rng) for _ in range(500))}
    assert snapped == {254, 224, 190, 167}


def test_resize_and_crops():
    assert resized_size(340, 256, 256) == (340, 256)
    assert resized_size(320, 240, 256) == (341, 256)  # int(256 * 320 / 240)
    assert resized_size(100, 176, 128) == (128, 225)
    assert center_box(341, 256, 224) == (58, 16, 224, 224)  # round(58.5) = 58, as torchvision
    assert three_crop_boxes(341, 256, 224) == [(0, 16, 224, 224), (116, 16, 224, 224), (58, 16, 224, 224)]
    assert three_crop_boxes(256, 341, 224) == [(16, 0, 224, 224), (16, 116, 224, 224), (16, 58, 224, 224)]


def test_normalizations():
    frame = Image.new("RGB", (2, 2), (255, 0, 30))
    rgb = to_tensor([frame], "imagenet")[0, :, 0, 0]
    expected = (torch.tensor([1.0, 0.0, 30 / 255]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    assert torch.allclose(rgb, expected, atol=1e-5)
    bgr = to_tensor([frame], "bgr255")[0, :, 0, 0]
    assert bgr.tolist() == [30 - 104, 0 - 117, 255 - 128]  # BGR order, 0-255, mean (104, 117, 128), std 1


def test_train_transform_same_crop_for_all_frames_and_flip_swaps_labels():
    # Left half dark, right half bright: a flipped clip is bright on the left.
    array = np.zeros((48, 64, 3), np.uint8)
    array[:, 32:] = 255
    frames = [Image.fromarray(array)] * 3
    transform = TrainTransform(input_size=32, flip=True, flip_label_map={0: 1, 1: 0})
    outcomes = set()
    for seed in range(40):
        clip, label = transform(frames, 0, np.random.default_rng(seed))
        assert clip.shape == (3, 3, 32, 32) and torch.equal(clip[0], clip[2])
        flipped = bool(clip[0, 0, :, 0].mean() > clip[0, 0, :, -1].mean())
        assert label == (1 if flipped else 0)
        outcomes.add(flipped)
    assert outcomes == {True, False}
    no_flip = TrainTransform(input_size=32, flip=False)
    assert all(no_flip(frames, 0, np.random.default_rng(s))[1] == 0 for s in range(20))


def test_eval_transform_shapes():
    frames = [Image.new("RGB", (80, 60))] * 4
    assert EvalTransform(input_size=64).scale_size == 73  # 64 * 256 // 224, as TSM
    assert EvalTransform(input_size=224).scale_size == 256
    assert EvalTransform(input_size=64)([frames]).shape == (1, 4, 3, 64, 64)
    assert EvalTransform(input_size=64, num_crops=3)([frames, frames]).shape == (6, 4, 3, 64, 64)
