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
        "the frames per second and the keep/reuse/skip shares of the policy. Frames are sampled the way the model "
        "was trained, so the gap between two frames is the one its fusion learned: from a video file the T segment "
        "centres across the file (exactly what `adafuse eval` feeds it), from a camera every k-th frame, k being "
        "the training videos' frames per segment (stored in the checkpoint). Needs a causal model: AdaFuse-TSN, "
        "TSN, or TSM built with the causal shift.",
    )
    p.add_argument("--checkpoint", required=True, help="an adafuse checkpoint (adafuse train)")
    p.add_argument(
        "video", metavar="VIDEO", help="a video file; /dev/videoN for a V4L2 camera (PyAV), or a camera index (OpenCV)"
    )
    p.add_argument("--window", type=int, help="average the last N frame predictions (default: every frame seen)")
    p.add_argument("--stride", type=int, help="feed every N-th frame (default: a file's T segment centres; for a "
                   "camera the checkpoint's training stride)")
    p.add_argument("--max-frames", type=int, help="stop after N model frames (a camera runs until Ctrl-C otherwise)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the CPUs but one, which decodes)")
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


def _segment_frames(path: str, num_segments: int) -> list:
    """The T frames of a video file that evaluation samples (segment centres), as RGB PIL images."""
    from adafuse.data.lists import VideoRecord
    from adafuse.data.readers import VideoFileReader
    from adafuse.data.sampling import eval_indices

    video = Path(path)
    record = VideoRecord(path=video.name, num_frames=None, label=0, source=f"video {path}")
    return VideoFileReader(video.parent)(record, lambda n: [eval_indices(n, num_segments)])[0]


def run(args: argparse.Namespace) -> int:
    """Load, sample frames as in training, stream them through the executor, print the averaged prediction."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _predict(args)
    finally:
        torch.set_num_threads(threads)


def _predict(args: argparse.Namespace) -> int:
    import itertools

    import av
    import torch

    from adafuse.checkpoint import load_model
    from adafuse.data.transforms import EvalTransform
    from adafuse.errors import UserError
    from adafuse.flops import profile
    from adafuse.inference import MIN_KERNEL_GROUP, StreamingRecognizer

    camera = args.video.isdigit() or args.video.startswith("/dev/video")
    if not camera and not Path(args.video).is_file():
        raise UserError(f"video {args.video}: no such file")
    for name in ("window", "max_frames", "threads", "top", "stride"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    from adafuse.engine.threads import default_threads

    torch.set_num_threads(args.threads or default_threads(workers=1))  # decoding runs beside the model

    model, meta = load_model(args.checkpoint)
    size, num_segments = model.config.input_size, model.config.num_segments
    stream = StreamingRecognizer(model, window=args.window)
    transform = EvalTransform.for_model(model.config)
    notes = []
    stride = args.stride
    if camera and stride is None:
        stride = meta.get("frame_stride")
        if stride is None:
            stride = 1
            notes.append("the checkpoint records no training frame stride: every frame is used (set --stride)")
    sampling = {"mode": "stride", "stride": stride} if stride else {"mode": "segments", "num_segments": num_segments}

    count, model_seconds, start = 0, 0.0, time.perf_counter()
    try:
        if stride:
            images = itertools.islice(_frames(args.video), 0, None, stride)
            frames = (transform([[image.convert("RGB")]])[0, 0] for image in images)
        else:  # (T, 3, S, S): the clip `adafuse eval` makes of this video, fed frame by frame
            frames = iter(transform([_segment_frames(args.video, num_segments)])[0])
        for frame in frames:  # (3, S, S): shorter side to 256/224·S, centre crop
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
    stats = stream.executor.stats
    executed, dense = stats.macs / count, table.dense_macs / model.num_segments
    policy = stats.shares()
    if policy["keep"] < 1 and stats.kernel_calls == 0:
        notes.append("the policy reuses or skips channels, but every conv ran dense with the masks applied: "
                     f"decision groups under {MIN_KERNEL_GROUP} channels do not pay on the group kernels")
    result = {
        "label": names[0],
        "class_index": int(top.indices[0]),
        "confidence": float(top.values[0]),
        "top": [{"label": n, "probability": float(p)} for n, p in zip(names, top.values.tolist(), strict=True)],
        "frames": count,
        "sampling": sampling,
        "fps": (count - 1) / model_seconds if count > 1 else None,
        "fps_total": count / total_seconds,
        "policy": policy,
        "gmacs_per_frame": executed / 1e9,
        "gmacs_per_frame_dense": dense / 1e9,
        "threads": torch.get_num_threads(),
        "notes": notes,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['label']}  ({result['confidence']:.1%})")
    for entry in result["top"][1:]:
        print(f"  {entry['label']}  ({entry['probability']:.1%})")
    speed = f"{result['fps']:.1f} frames/s (model), " if result["fps"] else ""
    how = (f"1 frame in {stride}" if stride and stride > 1 else "every frame") if stride else (
        f"the {num_segments} segment centres, as in training and eval")
    print(
        f"{count} frames ({how}), {speed}{result['fps_total']:.1f} frames/s (with decoding and set-up), "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"policy: keep {policy['keep']:.1%}, reuse {policy['reuse']:.1%}, skip {policy['skip']:.1%}; "
        f"{result['gmacs_per_frame']:.3f} GMACs/frame executed (dense {result['gmacs_per_frame_dense']:.3f})"
    )
    for note in notes:
        print(f"note: {note}")
    return 0
