"""Model checkpoints: one format for training (Lightning) checkpoints and saved models.

A checkpoint is a ``torch.save`` dict with
- ``"state_dict"``: the recognizer's tensors, keys prefixed ``"model."`` (Lightning's layout);
- ``"adafuse"``: ``{"format": 2, "config": ModelConfig.to_dict(), "dataset": path, ...}`` — the model's frozen
  config (backbone, method, classes, T, input size, normalization, build options): enough to rebuild the model
  with no config file. Format 1 (``"build"`` + ``classes`` / ``input_size`` / ``normalization``) still loads.
Lightning checkpoints carry more keys (optimizer, schedulers, loops) for exact resume; they load here too.

Loading never runs code from the file: ``torch.load(weights_only=True)``, which admits tensors and plain Python
containers, plus the one extra type our own training checkpoints hold (``collections.Counter``, the milestones of
the step schedule). A file that needs anything else is refused with a one-line error.
"""

from __future__ import annotations

import collections
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from adafuse.errors import UserError
from adafuse.models import ModelConfig, Recognizer, build_from_config

FORMAT = 2
SAFE_GLOBALS = [collections.Counter]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file, and
    a failed write (read-only folder, full disk) is a :class:`UserError` naming the path and the OS reason, the
    previous file at ``path`` intact."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as file:  # a file object: torch then reports a full disk as ENOSPC
            torch.save(obj, file)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def checkpoint_meta(model: Recognizer, **meta: Any) -> dict[str, Any]:
    """The ``"adafuse"`` entry of a checkpoint of ``model`` (its config) with extra ``meta`` (e.g. ``dataset``)."""
    return {"format": FORMAT, "config": model.config.to_dict(), **meta}


def save_model(path: str | Path, model: Recognizer, **meta: Any) -> None:
    """Write ``model`` with its config and ``meta`` (e.g. the dataset it was trained on), atomically."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, "adafuse": checkpoint_meta(model, **meta)}, path)


def safe_load(path: str | Path) -> Any:
    """``torch.load`` on the CPU without executing code from the file; one-line errors for unreadable files."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("\n")[0].removeprefix("Weights only load failed. ")
        raise UserError(f"{path}: refused, it holds objects other than tensors and plain data ({detail})") from None
    except Exception as e:  # noqa: BLE001 - an unreadable file is the user's input
        raise UserError(f"{path}: not readable ({type(e).__name__}: {e})") from None


def is_authors_state_dict(state: Any) -> bool:
    """Whether ``state`` (a loaded file, or its ``"state_dict"``) is laid out like the official code's
    (``module.base_model.*`` keys: DataParallel around their TSN; :mod:`adafuse.convert` reads it)."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return isinstance(state, dict) and any(str(k).startswith("module.base_model.") for k in state)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, with a one-line error for anything that is not ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    ckpt = safe_load(path)
    if is_authors_state_dict(ckpt):
        raise UserError(f"checkpoint {path}: laid out by the official AdaFuse code (module.base_model.* keys); "
                        f"convert it first: adafuse convert {path} OUT.ckpt")  # fmt: skip
    if not isinstance(ckpt, dict) or "adafuse" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path}: not an adafuse checkpoint (no 'adafuse' metadata)")
    return ckpt


def checkpoint_config(meta: dict[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a checkpoint's ``"adafuse"`` entry (format 2, or format 1's ``build``)."""
    if "config" in meta:
        return ModelConfig.from_dict(meta["config"])
    legacy = {k: meta[k] for k in ("input_size", "normalization", "classes") if meta.get(k) is not None}
    return ModelConfig.from_dict({**meta["build"], **legacy})


def load_weights(model: Recognizer, path: str | Path) -> Recognizer:
    """Load a checkpoint's weights into ``model`` strictly (every tensor used, every tensor filled)."""
    return _fill(model, read_checkpoint(path), path)


def _fill(model: Recognizer, ckpt: dict[str, Any], path: str | Path) -> Recognizer:
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    arch = f"{model.config.method} / {model.config.backbone}"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        first = str(e).split("\n\t", 1)[-1].split("\n")[0]
        raise UserError(f"checkpoint {path}: weights do not fit {arch} ({first})") from None
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[0]
        raise UserError(f"checkpoint {path}: weights do not fit {arch} (first mismatch: {bad})")
    return model


def load_model(path: str | Path, **overrides: Any) -> tuple[Recognizer, dict[str, Any]]:
    """Rebuild the recognizer of a checkpoint and load its weights strictly; returns (model in eval mode, the
    checkpoint's ``"adafuse"`` metadata). ``overrides`` change config fields that do not alter the weights (e.g.
    ``num_segments``); the model's ``config`` says what it is."""
    ckpt = read_checkpoint(path)
    meta = ckpt["adafuse"]
    try:
        config = checkpoint_config(meta).replace(**overrides)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path}: unusable model config ({e})") from None
    return _fill(build_from_config(config), ckpt, path).eval(), meta
