"""Deployment: the executor (real channel-group skipping on CPU), in clip mode and streaming.

::

    from adafuse.inference import SparseRecognizer, StreamingRecognizer

    executor = SparseRecognizer.from_model(model)  # folds BatchNorm, packs weights for the group-sparse kernels
    logits, policies = executor.forward_with_policies(clips)  # (N, T, 3, H, W): block by block over the clip
    stream = StreamingRecognizer(model, window=8)  # frame by frame (a causal model)
    for frame in frames:                           # (3, H, W) each
        frame_logits = stream.step(frame)
"""

from adafuse.inference.group_conv import GroupSparseConv
from adafuse.inference.sparse import (
    DISPATCH,
    MIN_KERNEL_GROUP,
    ExecutionStats,
    SparseRecognizer,
    SparseState,
    check_supported,
)
from adafuse.inference.streaming import StreamingRecognizer

__all__ = [
    "DISPATCH",
    "MIN_KERNEL_GROUP",
    "ExecutionStats",
    "GroupSparseConv",
    "SparseRecognizer",
    "SparseState",
    "StreamingRecognizer",
    "check_supported",
]
