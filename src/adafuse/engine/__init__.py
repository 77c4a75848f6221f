"""Training (Lightning) and evaluation: configs, the training module and loop, deterministic evaluation.

``fit`` and ``RecognitionModule`` import Lightning (seconds): import them from their modules, or through this
package, which loads them on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "load_config": "adafuse.engine.config",
    "resolve_config": "adafuse.engine.config",
    "save_config": "adafuse.engine.config",
    "evaluate": "adafuse.engine.evaluate",
    "evaluate_checkpoint": "adafuse.engine.evaluate",
    "evaluate_ensemble": "adafuse.engine.evaluate",
    "predict_batch": "adafuse.engine.evaluate",
    "RecognitionMetrics": "adafuse.engine.metrics",
    "RecognitionModule": "adafuse.engine.module",
    "fit": "adafuse.engine.train",
    "markdown_report": "adafuse.engine.report",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'adafuse.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
