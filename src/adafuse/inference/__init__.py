"""Deployment: the executor (real channel-group skipping on CPU), in clip mode and streaming, and ONNX export
(the clip model, or the :class:`StreamingStep` with its state as explicit inputs and outputs).

::

    from adafuse.inference import SparseRecognizer, StreamingRecognizer

    executor = SparseRecognizer.from_model(model)  # folds BatchNorm, packs weights for the group-sparse kernels
    logits, policies = executor.forward_with_policies(clips)  # (N, T, 3, H, W): block by block over the clip
    stream = StreamingRecognizer(model, window=8)  # frame by frame (a causal model)
    for frame in frames:                           # (3, H, W) each
        frame_logits = stream.step(frame)
    export_onnx(model, "step.onnx", mode="stream")  # masked-dense graph for onnxruntime / TensorRT (docs/deploy.md)
"""

from adafuse.inference.export import OnnxExport, export_onnx, verify_onnx
from adafuse.inference.group_conv import GroupSparseConv
from adafuse.inference.sparse import (
    DISPATCH,
    MIN_KERNEL_GROUP,
    ExecutionStats,
    SparseRecognizer,
    SparseState,
    check_supported,
)
from adafuse.inference.stream_step import StreamingStep
from adafuse.inference.streaming import StreamingRecognizer

__all__ = [
    "DISPATCH",
    "MIN_KERNEL_GROUP",
    "ExecutionStats",
    "GroupSparseConv",
    "OnnxExport",
    "SparseRecognizer",
    "SparseState",
    "StreamingRecognizer",
    "StreamingStep",
    "check_supported",
    "export_onnx",
    "verify_onnx",
]
