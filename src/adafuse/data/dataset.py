"""The clip dataset and its builder.

``dataset[i] -> (clip, label)``:

- training, or evaluating one view: ``clip`` is float32 ``(T, 3, S, S)``, so a loader batch is ``(B, T, 3, S, S)``;
- evaluating ``V = num_clips × num_crops > 1`` views: ``clip`` is ``(V, T, 3, S, S)`` (batch ``(B, V, T, 3, S, S)``),
  views ordered clip-major: clip 0 crop 0, clip 0 crop 1, ..., so ``clip.view(num_clips, num_crops, T, 3, S, S)``.

Randomness (segment offsets, crop, flip) comes from a generator seeded by ``(seed, epoch, index)`` and nothing else:
the same seed gives the same samples in any worker, with any number of workers. Call :meth:`ClipDataset.set_epoch`
(or use :class:`~adafuse.data.loader.ClipLoader`, which does it) to draw new augmentations each epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from adafuse.data._problems import OnError, check_on_error, log
from adafuse.data.layout import resolve_layout
from adafuse.data.lists import VideoRecord, read_list
from adafuse.data.readers import FrameFolderReader, Pick, VideoFileReader
from adafuse.data.sampling import eval_indices, train_indices
from adafuse.data.spec import DatasetSpec, load_dataset_yaml
from adafuse.data.transforms import EvalTransform, Normalization, TrainTransform
from adafuse.errors import UserError

# Independent random streams of one sample.
_SAMPLING, _AUGMENT = 0, 1


class ClipDataset(Dataset):
    """``num_segments``-frame clips of the videos of a list.

    Args:
        records: the videos (see :func:`~adafuse.data.lists.read_list`).
        reader: a frame reader (:class:`FrameFolderReader` or :class:`VideoFileReader`).
        num_segments: frames per clip, T.
        transform: :class:`TrainTransform` (random segments, augmentation) or :class:`EvalTransform` (segment centres).
        class_names: one name per class.
        num_clips: clips per video when evaluating.
        seed: base of every random choice.
        on_error: ``"raise"`` on an unreadable video, or ``"skip"``: warn and return ``None`` (the loader's
            collate drops it and counts it).
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        reader: FrameFolderReader | VideoFileReader,
        num_segments: int,
        transform: TrainTransform | EvalTransform,
        class_names: Sequence[str],
        num_clips: int = 1,
        seed: int = 0,
        on_error: OnError = "raise",
    ) -> None:
        if num_segments < 1 or num_clips < 1:
            raise ValueError(f"num_segments and num_clips must be >= 1, got {num_segments} and {num_clips}")
        if isinstance(transform, TrainTransform) and num_clips != 1:
            raise ValueError("multi-clip sampling is for evaluation; training draws one random clip")
        self.records = list(records)
        self.reader = reader
        self.num_segments = num_segments
        self.transform = transform
        self.class_names = tuple(class_names)
        self.num_clips = num_clips
        self.seed = seed
        self.on_error = check_on_error(on_error)
        self.epoch = 0

    @property
    def train(self) -> bool:
        """Random sampling and augmentation (else deterministic evaluation views)."""
        return isinstance(self.transform, TrainTransform)

    @property
    def num_views(self) -> int:
        """Views per video, V = num_clips × num_crops (1 when training)."""
        return 1 if self.train else self.num_clips * self.transform.num_crops  # type: ignore[union-attr]

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of ``epoch`` (a pure function of seed, epoch and index)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        """``(clip, label)``: clip ``(T, 3, S, S)``, or ``(V, T, 3, S, S)`` for V > 1 views; ``None`` if skipped."""
        record = self.records[index]
        try:
            clips = self.reader(record, self._pick(index))
        except UserError as e:
            if self.on_error == "raise":
                raise
            log.warning("%s; sample skipped", e)
            return None
        if isinstance(self.transform, TrainTransform):
            return self.transform(clips[0], record.label, self._rng(index, _AUGMENT))
        views = self.transform(clips)
        return (views[0] if len(views) == 1 else views), record.label

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, stream])

    def _pick(self, index: int) -> Pick:
        def pick(num_frames: int) -> list[np.ndarray]:
            if self.train:
                return [train_indices(num_frames, self.num_segments, self._rng(index, _SAMPLING))]
            return [
                eval_indices(num_frames, self.num_segments, clip=c, num_clips=self.num_clips)
                for c in range(self.num_clips)
            ]

        return pick


def build_dataset(
    *,
    spec: DatasetSpec | str | Path,
    split: Literal["train", "val"],
    num_segments: int = 8,
    input_size: int = 224,
    normalization: Normalization = "imagenet",
    train: bool | None = None,
    num_clips: int = 1,
    num_crops: int = 1,
    scale_size: int | None = None,
    seed: int = 0,
    min_frames: int = 1,
    on_error: OnError = "raise",
) -> ClipDataset:
    """The clips of one split of a dataset.

    The list is checked when the dataset is built: its lines, labels and folders, and the frame layout (flat or
    split folders, the frame template) against its first folders (see :func:`~adafuse.data.layout.resolve_layout`).

    Args:
        spec: a :class:`DatasetSpec` or the path of a ``dataset.yaml``.
        split: ``"train"`` or ``"val"``: which list file.
        num_segments: frames per clip, T.
        input_size: side S of the square frames the model sees.
        normalization: ``"imagenet"`` (RGB, ImageNet mean/std) or ``"bgr255"`` (BN-Inception).
        train: random segments and augmentation; default: ``split == "train"``.
        num_clips: clips per video when evaluating (1: the official single centre clip).
        num_crops: 1 (centre crop) or 3 (three crops along the longer side) when evaluating.
        scale_size: evaluation resize of the shorter side; default ``input_size × 256 // 224``.
        seed: base of every random choice.
        min_frames: drop frame folders listed with fewer frames, counted in one warning (the official code: 3).
        on_error: ``"raise"`` a :class:`UserError` at the first bad line or file, or ``"skip"`` with warnings.

    Returns:
        A :class:`ClipDataset`; ``dataset[i] -> (clip (T, 3, S, S) or (V, T, 3, S, S), label)``.
    """
    if not isinstance(spec, DatasetSpec):
        spec = load_dataset_yaml(spec)
    check_on_error(on_error)
    train = split == "train" if train is None else train
    if train and (num_clips != 1 or num_crops != 1):
        raise UserError("multi-clip and three-crop views are for evaluation (train=False)")
    if normalization not in ("imagenet", "bgr255"):
        raise UserError(f"normalization must be 'imagenet' or 'bgr255', got {normalization!r}")
    if num_crops not in (1, 3):
        raise UserError(f"num_crops must be 1 or 3, got {num_crops}")
    list_file = spec.list_file(split)
    layout = None
    if spec.format == "frames":
        layout = resolve_layout(
            list_file, root=spec.root, template=spec.template, split=split, spaces_in_paths=spec.spaces_in_paths
        )
    records = read_list(
        list_file,
        root=spec.root,
        format=spec.format,
        num_classes=spec.num_classes,
        spaces_in_paths=spec.spaces_in_paths,
        min_frames=min_frames,
        on_error=on_error,
        locate=layout.folder if layout is not None else None,
    )
    reader = FrameFolderReader(spec.root, layout.template) if layout is not None else VideoFileReader(spec.root)
    transform: TrainTransform | EvalTransform
    if train:
        transform = TrainTransform(
            input_size=input_size, flip=spec.flip, flip_label_map=spec.flip_label_map, normalization=normalization
        )
    else:
        transform = EvalTransform(
            input_size=input_size, scale_size=scale_size, num_crops=num_crops, normalization=normalization
        )
    return ClipDataset(
        records,
        reader=reader,
        num_segments=num_segments,
        transform=transform,
        class_names=spec.class_names,
        num_clips=num_clips,
        seed=seed,
        on_error=on_error,
    )
