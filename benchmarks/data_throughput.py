"""Data-loading throughput: clips per second from JPEG frame folders and from raw video files.

The paper's setting: T = 8 segments, 224 × 224 crops, from 340 × 256 source frames (shorter side 256, the usual
extraction size). Train clips use random segments, the multi-scale crop and a flip; eval clips the segment centres,
a resize to 256 and a centre crop. Source videos are the synthetic benchmark's, rendered at 340 × 256: JPEG quality
95 frame folders (what ``adafuse prepare frames`` writes) and H.264 MP4 files.

Prints one JSON object (one line), then a markdown table::

    python benchmarks/data_throughput.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import PIL
import torch
from PIL import Image

from adafuse.data import build_dataset, build_loader, dataset_spec, render_video


def make_sources(root: Path, *, videos: int, frames: int) -> None:
    """``videos`` clips of ``frames`` 340x256 frames, as JPEG folders and as MP4 files."""
    for i in range(videos):
        clip = render_video(kind="temporal", label=i % 8, seed=[1234, i], size=340, frames=frames)[:, 42:298]
        folder = root / "frames" / f"{i:05d}"
        folder.mkdir(parents=True)
        for t, frame in enumerate(clip):
            Image.fromarray(frame).save(folder / f"{t + 1:05d}.jpg", quality=95)
        (root / "videos").mkdir(exist_ok=True)
        with av.open(str(root / "videos" / f"{i:05d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 340, 256, "yuv420p"
            for frame in clip:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
    (root / "frames.txt").write_text("".join(f"{i:05d} {frames} {i % 8}\n" for i in range(videos)))
    (root / "videos.txt").write_text("".join(f"{i:05d}.mp4 {i % 8}\n" for i in range(videos)))


def clips_per_second(loader: torch.utils.data.DataLoader, epochs: int) -> float:
    """Clips per second over ``epochs`` passes (worker start-up included, as in training)."""
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for clips, _ in loader:
            count += clips.shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48, help="source videos (default 48)")
    parser.add_argument("--frames", type=int, default=48, help="frames per video (default 48, ~2 s at 25 fps)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (default 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the videos per measurement")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-segments", type=int, default=8)
    args = parser.parse_args()

    torch.set_num_threads(1)  # the loader workers are the parallelism being measured
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_sources(root, videos=args.videos, frames=args.frames)
        for source, fmt, data in (("frame folders", "frames", "frames"), ("video files", "video", "videos")):
            spec = dataset_spec(root=root / data, train_list=root / f"{data}.txt", val_list=root / f"{data}.txt",
                                num_classes=8, flip=True, format=fmt)  # fmt: skip
            for split in ("train", "val"):
                dataset = build_dataset(
                    spec=spec, split=split, num_segments=args.num_segments, input_size=args.input_size
                )
                loader = build_loader(
                    dataset, batch_size=args.batch_size, shuffle=split == "train", num_workers=args.workers
                )
                rate = clips_per_second(loader, args.epochs)
                results.append({"source": source, "split": split, "clips_per_s": round(rate, 1),
                                "frames_per_s": round(rate * args.num_segments, 1)})  # fmt: skip
    report = {
        "results": results,
        "setting": {
            k: getattr(args, k) for k in ("videos", "frames", "workers", "batch_size", "input_size", "num_segments")
        }
        | {"source_size": "340x256", "jpeg_quality": 95, "video_codec": "h264"},
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pillow": PIL.__version__,
            "av": av.__version__,
        },
    }
    print(json.dumps(report))
    print()
    print(f"{args.workers} workers, T = {args.num_segments}, {args.input_size} px crops from 340x256 frames:\n")
    print("| source | split | clips/s | frames/s |")
    print("|---|---|---:|---:|")
    for r in results:
        print(f"| {r['source']} | {r['split']} | {r['clips_per_s']} | {r['frames_per_s']} |")


if __name__ == "__main__":
    main()
