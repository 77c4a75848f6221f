"""Frame readers: the frames of one video at chosen indices, as RGB PIL images.

A reader is called as ``reader(record, pick)`` where ``pick(num_frames)`` returns the 0-based indices of each clip
once the frame count is known; it returns the frames of each clip. Any problem with the files (missing or corrupt
frame, unreadable video) is a :class:`~adafuse.errors.UserError` naming the list file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from adafuse.data.lists import VideoRecord
from adafuse.errors import UserError

Pick = Callable[[int], list[np.ndarray]]
Clips = list[list[Image.Image]]


def _wanted(clips: list[np.ndarray]) -> set[int]:
    return {int(i) for clip in clips for i in clip}


def _gather(clips: list[np.ndarray], frames: dict[int, Image.Image]) -> Clips:
    return [[frames[int(i)] for i in clip] for clip in clips]


class FrameFolderReader:
    """JPEG frames ``root/<record.path>/<template.format(i + 1)>`` (files are 1-based).

    Args:
        root: dataset root.
        template: frame file name of a 1-based index, e.g. ``"{:05d}.jpg"``.
    """

    def __init__(self, root: str | Path, template: str) -> None:
        self.root = Path(root)
        self.template = template

    def __call__(self, record: VideoRecord, pick: Pick) -> Clips:
        """The frames of each clip ``pick(record.num_frames)`` chooses."""
        clips = pick(record.num_frames)  # type: ignore[arg-type]
        return _gather(clips, {i: self._load(record, i) for i in sorted(_wanted(clips))})

    def _load(self, record: VideoRecord, index: int) -> Image.Image:
        path = self.root / record.path / self.template.format(index + 1)
        try:
            image = Image.open(path)
            image.load()
        except FileNotFoundError:
            raise UserError(
                f"{record.source}: frame {path} not found (listed with {record.num_frames} frames)"
            ) from None
        except (OSError, SyntaxError, ValueError) as e:  # PIL reports corrupt files with any of these
            raise UserError(f"{record.source}: cannot read frame {path}: {e}") from None
        return image if image.mode == "RGB" else image.convert("RGB")


class VideoFileReader:
    """Frames of ``root/<record.path>``, a video file decoded with PyAV (FFmpeg).

    The frame count is the container's (or, when the container does not say, the number of video packets, found
    without decoding). Decoding stops at the last frame needed and only needed frames are converted to RGB. If the
    file decodes to fewer frames than its container claims, the clip is re-sampled from the true count: the
    indices always refer to frames that exist.

    Args:
        root: dataset root.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __call__(self, record: VideoRecord, pick: Pick) -> Clips:
        """The frames of each clip ``pick(num_frames)`` chooses."""
        path = self.root / record.path
        try:
            num_frames = count_frames(path)
            if num_frames == 0:
                raise UserError(f"{record.source}: video {path} has no frames")
            clips = pick(num_frames)
            frames, decoded = _decode(path, _wanted(clips))
            if len(frames) < len(_wanted(clips)):  # fewer frames than the container claims: use the true count
                if decoded == 0:
                    raise UserError(f"{record.source}: video {path} has no decodable frames")
                clips = pick(decoded)
                frames, _ = _decode(path, _wanted(clips))
        except (OSError, ValueError, EOFError, av.FFmpegError) as e:
            raise UserError(f"{record.source}: cannot decode video {path}: {e}") from None
        return _gather(clips, frames)


def count_frames(path: str | Path) -> int:
    """Number of frames of the first video stream: the container's count, else its packets counted."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def iter_frames(path: str | Path) -> Iterator[av.VideoFrame]:
    """Decode every frame of the first video stream in display order."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        yield from container.decode(container.streams.video[0])


def _decode(path: Path, wanted: set[int]) -> tuple[dict[int, Image.Image], int]:
    """RGB images of the ``wanted`` frames and how many frames were decoded (stops after the last wanted)."""
    last, frames, count = max(wanted), {}, 0
    for count, frame in enumerate(iter_frames(path), 1):
        if count - 1 in wanted:
            frames[count - 1] = frame.to_image()
        if count - 1 == last:
            break
    return frames, count
