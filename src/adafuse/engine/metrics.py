"""Evaluation metrics of a recognizer: accuracy, adaptive cost and policy statistics.

All states are sums, so they reduce correctly across processes (torchmetrics syncs them under DDP).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from adafuse.layers.actions import KEEP, REUSE, SKIP

_ACTIONS = (("keep", KEEP), ("reuse", REUSE), ("skip", SKIP))


class RecognitionMetrics(Metric):
    """Top-1/top-5 accuracy, mean adaptive GMACs per video, and keep/reuse/skip statistics per fusion block.

    ``update(logits (N, K), labels (N,), macs (N,), policies {name: (N·V, T, G, 3)})``, where V views of a
    video were averaged into one prediction and ``macs`` is the video's cost over its V views.

    Policy statistics per block: the share of (frame, channel) decisions of each action, and the *instance*
    shares (Figure 4): of the (video, channel) pairs, those that take the same action in all T frames, per action
    (``keep_instance`` ...) and in all (``instance``).
    """

    full_state_update = False

    def __init__(self, block_names: list[str]) -> None:
        super().__init__()
        self.block_names = list(block_names)
        blocks = max(1, len(self.block_names))
        self.add_state("correct1", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("correct5", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("videos", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("macs", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("actions", torch.zeros(blocks, 3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("constant", torch.zeros(blocks, 3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", torch.zeros(blocks, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, macs: torch.Tensor, policies: dict[str, torch.Tensor]
    ) -> None:
        """Add a batch (see the class docstring for shapes)."""
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == labels[:, None]
        self.correct1 += hit[:, 0].sum()
        self.correct5 += hit.any(dim=1).sum()
        self.videos += labels.numel()
        self.macs += macs.detach().double().sum()
        for i, name in enumerate(self.block_names):
            mask = policies[name].detach()
            self.actions[i] += mask.sum(dim=(0, 1, 2)).double()
            always = mask.min(dim=1).values  # (N, G, 3): 1 where the action is taken in every frame
            self.constant[i] += always.sum(dim=(0, 1)).double()
            self.pairs[i] += mask.shape[0] * mask.shape[2]

    def compute(self) -> dict[str, Any]:
        """``top1``/``top5`` in %, ``gflops`` (adaptive GMACs per video), ``policy`` shares overall and per block."""
        videos = self.videos.clamp(min=1)
        result: dict[str, Any] = {
            "top1": float(100 * self.correct1 / videos),
            "top5": float(100 * self.correct5 / videos),
            "videos": int(self.videos),
            "gflops": float(self.macs / videos.double() / 1e9),
        }
        if self.block_names:
            total = self.actions.sum()
            keep, reuse, skip = (float(self.actions[:, a].sum() / total) for a in (KEEP, REUSE, SKIP))
            result["policy"] = {
                "keep": keep,
                "reuse": reuse,
                "skip": skip,
                "reuse_per_keep": reuse / keep if keep else float("inf"),
                "instance": float(self.constant.sum() / self.pairs.sum()),
                **{f"{a}_instance": float(self.constant[:, i].sum() / self.pairs.sum()) for a, i in _ACTIONS},
            }
            shares = self.actions / self.actions.sum(dim=1, keepdim=True)
            result["blocks"] = [
                {
                    "name": name,
                    "keep": float(shares[i, KEEP]),
                    "reuse": float(shares[i, REUSE]),
                    "skip": float(shares[i, SKIP]),
                    "instance": float(self.constant[i].sum() / self.pairs[i]),
                    **{f"{a}_instance": float(self.constant[i, j] / self.pairs[i]) for a, j in _ACTIONS},
                }
                for i, name in enumerate(self.block_names)
            ]
        return result


def confusion_matrix(
    predicted: torch.Tensor, labels: torch.Tensor, num_classes: int, *, into: torch.Tensor | None = None
) -> torch.Tensor:
    """Counts (K, K) of (true class, predicted class) over predicted (N,) and labels (N,), added to ``into``."""
    pairs = labels.long() * num_classes + predicted.long()
    counts = torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)
    return counts if into is None else into + counts


def per_class_accuracy(confusion: list[list[int]], class_names: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """Per class: its videos and top-1 in % (None without videos), from a confusion matrix (rows: true class)."""
    rows = []
    for i, (name, row) in enumerate(zip(class_names, confusion, strict=True)):
        videos = sum(row)
        rows.append({"class": name, "videos": videos, "top1": 100 * row[i] / videos if videos else None})
    return rows
