"""Deployment: the sparse executor (real channel skipping), its cost model, and the streaming recognizer.

::

    from adafuse.inference import SparseRecognizer, StreamingRecognizer

    engine = SparseRecognizer.from_model(model)   # folds BN, packs weights, measures when slicing pays
    logits = engine.frame_logits(clip)            # (N, T, K), equal to model.frame_logits(clip)
    stream = StreamingRecognizer(engine, window=8)
    for frame in frames:                          # (3, H, W) each
        frame_logits = stream.step(frame)
"""

from adafuse.inference.cost_model import CostModel, DynamicLayer, LayerTiming
from adafuse.inference.sparse import ExecutionStats, SparseRecognizer, SparseState, check_supported
from adafuse.inference.streaming import StreamingRecognizer

__all__ = [
    "CostModel",
    "DynamicLayer",
    "ExecutionStats",
    "LayerTiming",
    "SparseRecognizer",
    "SparseState",
    "StreamingRecognizer",
    "check_supported",
]
