"""Model checkpoints: one format for training (Lightning) checkpoints and exported models.

A checkpoint is a ``torch.save`` dict with
- ``"state_dict"``: the recognizer's tensors, keys prefixed ``"model."`` (Lightning's layout);
- ``"adafuse"``: ``{"build": build_model kwargs, "classes": [names] or None, "input_size": int,
  "normalization": str, ...}`` — enough to rebuild the model with no config file.
Lightning checkpoints carry more keys (optimizer, schedulers, loops) for exact resume; they load here too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from adafuse.errors import UserError
from adafuse.models import Recognizer, build_model


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


def save_model(path: str | Path, model: Recognizer, **meta: Any) -> None:
    """Write ``model`` with its build arguments and ``meta`` (classes, input_size, normalization, ...)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, "adafuse": {"build": dict(model.build_args), **meta}}, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, with a one-line error for anything that is not ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - an unreadable file is the user's input
        raise UserError(f"checkpoint {path}: not readable ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "adafuse" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path}: not an adafuse checkpoint (no 'adafuse' metadata)")
    return ckpt


def load_model(path: str | Path, **overrides: Any) -> tuple[Recognizer, dict[str, Any]]:
    """Rebuild the recognizer of a checkpoint and load its weights strictly; returns (model in eval mode,
    metadata). ``overrides`` change build arguments that do not alter the weights (e.g. ``num_segments``)."""
    ckpt = read_checkpoint(path)
    meta = ckpt["adafuse"]
    model = build_model(**{**meta["build"], **overrides})
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    arch = f"{meta['build'].get('method')} / {meta['build'].get('backbone')}"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        first = str(e).split("\n\t", 1)[-1].split("\n")[0]
        raise UserError(f"checkpoint {path}: weights do not fit {arch} ({first})") from None
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[0]
        raise UserError(f"checkpoint {path}: weights do not fit {arch} (first mismatch: {bad})")
    return model.eval(), meta
