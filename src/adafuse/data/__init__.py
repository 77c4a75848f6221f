"""Video data: list-file and video-file datasets, TSN segment sampling, transforms, presets, synthetic data.

Build a dataset from a ``dataset.yaml`` (or a :class:`DatasetSpec`) and a loader over it::

    from adafuse.data import build_dataset, build_loader

    train_set = build_dataset(spec="data/sthv1/dataset.yaml", split="train", num_segments=8, input_size=224)
    loader = build_loader(train_set, batch_size=32, shuffle=True, num_workers=8, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for clips, labels in loader:  # clips (B, T, 3, 224, 224), labels (B,)
            ...
"""

from adafuse.data.classes import read_class_names
from adafuse.data.dataset import ClipDataset, build_dataset
from adafuse.data.layout import FrameLayout, resolve_layout
from adafuse.data.lists import VideoRecord, read_list
from adafuse.data.loader import ClipLoader, build_loader, collate_clips
from adafuse.data.presets import PRESETS, Preset, get_preset, preset_class_names
from adafuse.data.readers import FrameFolderReader, VideoFileReader
from adafuse.data.sampling import eval_indices, train_indices
from adafuse.data.spec import DatasetSpec, dataset_spec, load_dataset_yaml, save_dataset_yaml
from adafuse.data.synthetic import generate_synthetic, render_video
from adafuse.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "PRESETS",
    "ClipDataset",
    "ClipLoader",
    "DatasetSpec",
    "EvalTransform",
    "FrameFolderReader",
    "FrameLayout",
    "Preset",
    "TrainTransform",
    "VideoFileReader",
    "VideoRecord",
    "build_dataset",
    "build_loader",
    "collate_clips",
    "dataset_spec",
    "eval_indices",
    "generate_synthetic",
    "get_preset",
    "load_dataset_yaml",
    "preset_class_names",
    "read_class_names",
    "read_list",
    "render_video",
    "resolve_layout",
    "save_dataset_yaml",
    "train_indices",
]
