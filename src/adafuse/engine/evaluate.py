"""Deterministic evaluation of a recognizer over a loader (no Lightning needed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm import tqdm

from adafuse.engine.metrics import RecognitionMetrics
from adafuse.flops import CostTable, adaptive_macs, count_params
from adafuse.models import Recognizer


def predict_batch(
    model: Recognizer, clips: torch.Tensor, table: CostTable, *, cost_mode: str = "real"
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Video logits, MACs and policies of a batch.

    ``clips`` (N, T, 3, S, S), or (N, V, T, 3, S, S) for V views whose logits are averaged. Returns logits
    (N, K), adaptive MACs per video summed over its views (N,), and the policies {name: (N·V, T, C, 3)}.
    """
    views = clips.shape[1] if clips.dim() == 6 else 1
    x = clips.flatten(0, 1) if clips.dim() == 6 else clips
    logits = model(x)
    macs = adaptive_macs(model, table, batch_size=x.shape[0], mode=cost_mode)
    n = logits.shape[0] // views
    return logits.view(n, views, -1).mean(1), macs.view(n, views).sum(1), model.policies()


@torch.inference_mode()
def evaluate(
    model: Recognizer,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    table: CostTable,
    views: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1/top-5, adaptive and dense GMACs per video (× views), parameters and policy statistics.

    The model runs in eval mode: arg-max policies unless a fusion's ``sample_at_eval`` was set.
    """
    model.eval().to(device)
    metrics = RecognitionMetrics(list(model.fusions())).to(device)
    total = len(loader) if hasattr(loader, "__len__") else None
    for clips, labels in tqdm(loader, total=total, desc="eval", unit="batch", disable=not progress, leave=False):
        logits, macs, policies = predict_batch(model, clips.to(device), table)
        metrics.update(logits, labels.to(device), macs, policies)
    result = metrics.compute()
    sampled = any(getattr(f, "sample_at_eval", False) for f in model.fusions().values())
    result.update(
        gflops_dense=table.dense_gmacs * views,
        params=count_params(model),
        views=views,
        policy_mode="sampled" if sampled else "deterministic",
    )
    return result
