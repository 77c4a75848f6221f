"""adafuse: adaptive temporal fusion (AdaFuse, ICLR 2021) for efficient video action recognition.

The public API, importable from the top level (loaded on first use, so ``adafuse --help`` stays fast)::

    from adafuse import build_model, profile, adaptive_macs, load_model, save_model

    model = build_model(backbone="resnet50", method="adafuse_tsn", num_classes=174, num_segments=8)
    logits, policies = model.forward_with_policies(clips)     # (N, K), {fusion: (N, T, G, 3) masks}
    macs = adaptive_macs(policies, profile(model), batch_size=clips.shape[0])

See docs/api.md for the whole list.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "Action": "adafuse.layers.actions",
    "KEEP": "adafuse.layers.actions",
    "REUSE": "adafuse.layers.actions",
    "SKIP": "adafuse.layers.actions",
    "actions_to_mask": "adafuse.layers.actions",
    "mask_to_actions": "adafuse.layers.actions",
    "AdaptiveFusion": "adafuse.layers.adaptive_fusion",
    "FusedConvPair": "adafuse.layers.fusion",
    "TemporalShift": "adafuse.layers.temporal_shift",
    "ModelConfig": "adafuse.models.config",
    "Recognizer": "adafuse.models.recognizer",
    "ARNet": "adafuse.models.arnet",
    "build_model": "adafuse.models.builder",
    "build_from_config": "adafuse.models.builder",
    "list_backbones": "adafuse.models._registry",
    "METHODS": "adafuse.models.builder",
    "CostTable": "adafuse.flops",
    "profile": "adafuse.flops",
    "adaptive_macs": "adafuse.flops",
    "count_params": "adafuse.flops",
    "load_model": "adafuse.checkpoint",
    "load_weights": "adafuse.checkpoint",
    "save_model": "adafuse.checkpoint",
    "convert_checkpoint": "adafuse.convert",
    "from_authors_layout": "adafuse.convert",
    "to_authors_layout": "adafuse.convert",
    "UserError": "adafuse.errors",
    "build_dataset": "adafuse.data.dataset",
    "EvalTransform": "adafuse.data.transforms",
    "SparseRecognizer": "adafuse.inference.sparse",
    "StreamingRecognizer": "adafuse.inference.streaming",
    "StreamingStep": "adafuse.inference.stream_step",
    "export_onnx": "adafuse.inference.export",
    "evaluate": "adafuse.engine.evaluate",
    "evaluate_checkpoint": "adafuse.engine.evaluate",
    "evaluate_ensemble": "adafuse.engine.evaluate",
    "fit": "adafuse.engine.train",
    "load_config": "adafuse.engine.config",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'adafuse' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
