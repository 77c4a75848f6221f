"""Streaming recognition: one frame in, logits out, for B independent streams.

::

    stream = StreamingRecognizer(model, batch_size=2, window=8)
    for frames in camera:                  # frames (2, 3, H, W), normalised
        logits = stream.step(frames)       # (2, K): the offline model's frame logits at this frame
        label = stream.average().argmax(1) # running average over the last 8 frames of each stream
    stream.reset(1)                        # stream 1 starts a new video

A frame's logits depend only on the frames before it, so they equal the offline model's per-frame logits
(:meth:`~adafuse.models.Recognizer.frame_logits`) on the same frames: AdaFuse-TSN is causal as it is, TSM must use
the causal shift (``build_model(..., causal_shift=True)``). Everything carried between frames lives in
:attr:`StreamingRecognizer.state`, a :class:`~adafuse.inference.sparse.SparseState`.
"""

from __future__ import annotations

from collections import deque

import torch

from adafuse.inference.sparse import SparseRecognizer, SparseState, check_supported
from adafuse.models.recognizer import Recognizer


class StreamingRecognizer:
    """Frame-by-frame recognizer over B independent streams, on the executor's group-sparse kernels.

    Args:
        model: a trained recognizer (folded into a :class:`SparseRecognizer`) or an executor built already.
        batch_size: B, the number of independent streams.
        window: the video prediction is the mean of the last ``window`` frame logits of a stream; None averages
            every frame since the stream's last reset.
        dispatch: which kernels run the policy-controlled convolutions, when ``model`` is a recognizer
            (:meth:`SparseRecognizer.from_model`).
    """

    def __init__(
        self,
        model: Recognizer | SparseRecognizer,
        *,
        batch_size: int = 1,
        window: int | None = None,
        dispatch: str = "auto",
    ) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of frames or None, got {window}")
        if isinstance(model, SparseRecognizer):
            self.executor = model
        else:
            check_supported(model, streaming=True)
            self.executor = SparseRecognizer.from_model(model, dispatch=dispatch)
        self.batch_size = batch_size
        self.window = window
        self.state: SparseState = self.executor.init_state(batch_size)
        self._history: list[deque[torch.Tensor]] = [deque(maxlen=window) for _ in range(batch_size)]

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits of the next frame of every stream: frames (B, 3, H, W), or (3, H, W) when B = 1 -> (B, K)."""
        if frames.dim() == 3:
            frames = frames.unsqueeze(0)
        logits, _ = self.executor.step(frames, self.state)
        for history, row in zip(self._history, logits, strict=True):
            history.append(row)
        return logits

    def average(self) -> torch.Tensor:
        """Running average of each stream's frame logits over the window: (B, K); zeros before a first frame."""
        k = self.executor.num_classes
        return torch.stack([torch.stack(list(h)).mean(0) if h else torch.zeros(k) for h in self._history])

    def reset(self, index: int | None = None) -> None:
        """Start stream ``index`` (every stream when None) afresh: its next frame is a first frame."""
        self.executor.reset_state(self.state, index)
        for i in range(self.batch_size) if index is None else [index]:
            self._history[i].clear()
