"""``adafuse predict``: streaming recognition of a video file or a camera with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    p = sub.add_parser(
        "predict",
        help="recognize the action in a video file or a camera stream, frame by frame",
        description="Run a trained checkpoint over a video frame by frame on the sparse executor (channels the "
        "policy skips are not computed) and print the label of the averaged frame predictions, its confidence, "
        "the frames per second and the keep/reuse/skip shares of the policy. Needs a causal model: AdaFuse-TSN, "
        "TSN, or TSM built with the causal shift.",
    )
    p.add_argument("--checkpoint", required=True, help="an adafuse checkpoint (adafuse train)")
    p.add_argument(
        "video", metavar="VIDEO", help="a video file; /dev/videoN for a V4L2 camera (PyAV), or a camera index (OpenCV)"
    )
    p.add_argument("--window", type=int, help="average the last N frame predictions (default: the whole video)")
    p.add_argument("--max-frames", type=int, help="stop after N frames (a camera runs until Ctrl-C otherwise)")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    p.add_argument("--top", type=int, default=5, help="how many classes to list (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _frames(source: str) -> Iterator:
    """RGB PIL images from a video file, a V4L2 device (PyAV) or a camera index (OpenCV, when installed)."""
    if source.isdigit():
        yield from _opencv_frames(int(source))
        return
    import av

    from adafuse.data.readers import iter_frames

    if source.startswith("/dev/video"):
        with av.open(source, format="v4l2") as container:
            for frame in container.decode(video=0):
                yield frame.to_image()
        return
    for frame in iter_frames(source):
        yield frame.to_image()


def _opencv_frames(index: int) -> Iterator:
    from adafuse.errors import UserError

    try:
        import cv2
    except ImportError:
        raise UserError("camera indices need OpenCV (pip install opencv-python); or pass /dev/videoN") from None
    from PIL import Image

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise UserError(f"camera {index}: cannot open")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()


def run(args: argparse.Namespace) -> int:
    """Load, stream every frame through the executor, print the averaged prediction."""
    import av
    import torch

    from adafuse.checkpoint import load_model
    from adafuse.data.transforms import EvalTransform
    from adafuse.errors import UserError
    from adafuse.flops import profile
    from adafuse.inference import StreamingRecognizer

    camera = args.video.isdigit() or args.video.startswith("/dev/video")
    if not camera and not Path(args.video).is_file():
        raise UserError(f"video {args.video}: no such file")
    for name in ("window", "max_frames", "threads", "top"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, _ = load_model(args.checkpoint)
    size = model.config.input_size
    stream = StreamingRecognizer(model, window=args.window, input_size=size)
    transform = EvalTransform.for_model(model.config)

    count, model_seconds, start = 0, 0.0, time.perf_counter()
    try:
        for image in _frames(args.video):
            frame = transform([[image.convert("RGB")]])[0, 0]  # (3, S, S): shorter side to 256/224·S, centre crop
            tick = time.perf_counter()
            stream.step(frame)
            if count:  # the first frame pays one-time kernel set-up (oneDNN JIT, weight packing)
                model_seconds += time.perf_counter() - tick
            count += 1
            if args.max_frames and count >= args.max_frames:
                break
    except (OSError, ValueError, EOFError, av.FFmpegError) as e:
        raise UserError(f"video {args.video}: cannot decode ({e})") from None
    except KeyboardInterrupt:
        pass  # a camera stream ends with Ctrl-C: report what was seen
    if count == 0:
        raise UserError(f"video {args.video}: no frames decoded")
    total_seconds = time.perf_counter() - start

    probs = stream.average()[0].softmax(0)
    top = probs.topk(min(args.top, probs.numel()))
    classes = model.config.classes
    names = [classes[i] if classes else str(i) for i in top.indices.tolist()]
    table = profile(model, input_size=size)
    executed = stream.engine.executed_macs / count
    result = {
        "label": names[0],
        "class_index": int(top.indices[0]),
        "confidence": float(top.values[0]),
        "top": [{"label": n, "probability": float(p)} for n, p in zip(names, top.values.tolist(), strict=True)],
        "frames": count,
        "fps": (count - 1) / model_seconds if count > 1 else None,
        "fps_total": count / total_seconds,
        "policy": stream.engine.stats.shares(),
        "gmacs_per_frame": executed / 1e9,
        "gmacs_per_frame_dense": table.dense_macs / model.num_segments / 1e9,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    policy = result["policy"]
    print(f"{result['label']}  ({result['confidence']:.1%})")
    for entry in result["top"][1:]:
        print(f"  {entry['label']}  ({entry['probability']:.1%})")
    speed = f"{result['fps']:.1f} frames/s (model), " if result["fps"] else ""
    print(
        f"{count} frames, {speed}{result['fps_total']:.1f} frames/s (with decoding and set-up), "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"policy: keep {policy['keep']:.1%}, reuse {policy['reuse']:.1%}, skip {policy['skip']:.1%}; "
        f"{result['gmacs_per_frame']:.3f} GMACs/frame executed (dense {result['gmacs_per_frame_dense']:.3f})"
    )
    return 0
