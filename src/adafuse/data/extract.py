"""Frame extraction: video files → folders of JPEG frames, the layout the frame-folder datasets read.

``videos/a/b.mp4`` becomes ``out/a/b/00001.jpg ...`` (1-based, named by a template), every decoded frame in display
order: frame ``i`` of the folder is frame ``i`` that :class:`~adafuse.data.readers.VideoFileReader` decodes.

Resumable: a video is decoded into ``out/.partial/...`` and moved into place only when complete, so a finished
folder is always whole; a rerun skips finished folders and redoes interrupted ones. One extraction per output
folder at a time.
"""

from __future__ import annotations

import os
import shutil
import time
from multiprocessing import get_context
from pathlib import Path

import av
from PIL import Image

from adafuse.data._problems import OnError, Problems
from adafuse.data.readers import iter_frames
from adafuse.data.transforms import resized_size
from adafuse.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".3gp")
PARTIAL = ".partial"


def find_videos(folder: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under ``folder`` (recursive, by extension, case-insensitive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: video folder not found")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if not found:
        raise UserError(f"{folder}: no video files ({', '.join(extensions)}) found")
    return found


def extract_video(video: Path, target: Path, partial: Path, *, template: str, short_side: int, quality: int) -> int:
    """Decode ``video`` into JPEGs in ``partial``, then move the folder to ``target``; returns the frame count.

    ``short_side > 0`` resizes every frame so its shorter side has that many pixels (bilinear); 0 keeps the size.
    """
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    count = 0
    for count, frame in enumerate(iter_frames(video), 1):
        image = frame.to_image()
        if short_side > 0:
            size = resized_size(*image.size, short_side)
            if size != image.size:
                image = image.resize(size, Image.BILINEAR)
        image.save(partial / template.format(count), quality=quality)
    if count == 0:
        shutil.rmtree(partial)
        raise ValueError("no frames decoded")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    return count


def _extract_task(task: tuple[str, str, str, str, int, int]) -> tuple[str, int, str | None]:
    video, target, partial, template, short_side, quality = task
    try:
        count = extract_video(
            Path(video), Path(target), Path(partial), template=template, short_side=short_side, quality=quality
        )
    except (OSError, ValueError, EOFError, av.FFmpegError) as e:
        return video, 0, f"{type(e).__name__}: {e}"
    return video, count, None


def extract_frames(
    *,
    videos: str | Path,
    out: str | Path,
    template: str = "{:05d}.jpg",
    short_side: int = 256,
    quality: int = 95,
    workers: int = 1,
    on_error: OnError = "raise",
    progress: bool = True,
) -> dict:
    """Extract the frames of every video under ``videos`` into ``out`` (see the module docstring).

    Args:
        videos: folder searched recursively for video files.
        out: output root; ``videos/<rel>/<name>.<ext>`` → ``out/<rel>/<name>/``.
        template: frame file name of a 1-based index.
        short_side: resize so the shorter side has this many pixels (0: keep the original size).
        quality: JPEG quality.
        workers: parallel processes.
        on_error: ``"raise"`` at the first unreadable video, or ``"skip"`` it with a warning.
        progress: show a progress bar.

    Returns:
        A summary: ``videos``, ``extracted``, ``already_done``, ``failed``, ``frames``, ``seconds``, ``out``.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    videos, out = Path(videos), Path(out)
    found = find_videos(videos)
    try:
        template.format(1)
    except (IndexError, KeyError, ValueError):
        raise UserError(f"template {template!r} does not format a frame index") from None
    problems = Problems(on_error)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)  # leftovers of an interrupted run
    tasks, done = [], 0
    for video in found:
        rel = video.relative_to(videos).with_suffix("")
        if (out / rel).is_dir():
            done += 1
            continue
        tasks.append((str(video), str(out / rel), str(out / PARTIAL / rel), template, short_side, quality))
    frames = extracted = 0
    pool = get_context().Pool(workers) if workers > 1 and len(tasks) > 1 else None
    results = pool.imap_unordered(_extract_task, tasks) if pool else map(_extract_task, tasks)
    # Only on a terminal, and erased when done: on error, stderr keeps just the one-line reason.
    bar = tqdm(total=len(tasks), unit="video", disable=None if progress else True, leave=False, desc="extracting")
    try:
        for video, count, error in results:
            bar.update()
            if error is not None:
                problems(f"{video}: cannot decode video ({error})")
                continue
            extracted += 1
            frames += count
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    problems.summary(f"{videos}", len(tasks))
    return {
        "videos": len(found),
        "extracted": extracted,
        "already_done": done,
        "failed": problems.skipped,
        "frames": frames,
        "seconds": round(time.perf_counter() - start, 3),
        "out": str(out),
    }
