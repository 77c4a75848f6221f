"""Deployment: the sparse executor (real channel skipping), its cost model, the streaming recognizer, and ONNX export
(the clip model, or the :class:`StreamingStep` with its state as explicit inputs and outputs).

::

    from adafuse.inference import SparseRecognizer, StreamingRecognizer

    engine = SparseRecognizer.from_model(model)   # folds BN, packs weights, measures when slicing pays
    logits = engine.frame_logits(clip)            # (N, T, K), equal to model.frame_logits(clip)
    stream = StreamingRecognizer(engine, window=8)
    for frame in frames:                          # (3, H, W) each
        frame_logits = stream.step(frame)
    export_onnx(model, "step.onnx", mode="stream")  # masked-dense graph for onnxruntime / TensorRT (docs/deploy.md)
"""

from adafuse.inference.cost_model import CostModel, DynamicLayer, LayerTiming
from adafuse.inference.export import OnnxExport, export_onnx, verify_onnx
from adafuse.inference.sparse import ExecutionStats, SparseRecognizer, SparseState, check_supported
from adafuse.inference.stream_step import StreamingStep
from adafuse.inference.streaming import StreamingRecognizer

__all__ = [
    "CostModel",
    "DynamicLayer",
    "ExecutionStats",
    "LayerTiming",
    "OnnxExport",
    "SparseRecognizer",
    "SparseState",
    "StreamingRecognizer",
    "StreamingStep",
    "check_supported",
    "export_onnx",
    "verify_onnx",
]
