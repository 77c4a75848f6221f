"""Deterministic evaluation of a recognizer over a loader (no Lightning needed)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from adafuse.engine.metrics import RecognitionMetrics, confusion_matrix, per_class_accuracy
from adafuse.engine.progress import iter_progress
from adafuse.flops import CostTable, adaptive_macs, count_params
from adafuse.models import Recognizer


def predict_batch(
    model: Recognizer,
    clips: torch.Tensor,
    table: CostTable,
    *,
    cost_mode: str = "real",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Video logits, MACs and policies of a batch, with deterministic (arg-max) policies, or Gumbel-sampled ones
    drawn from ``generator`` when one is given.

    ``clips`` (N, T, 3, S, S), or (N, V, T, 3, S, S) for V views whose logits are averaged. Returns logits
    (N, K), adaptive MACs per video summed over its views (N,), and the policies {name: (N·V, T, G, 3)}.
    """
    views = clips.shape[1] if clips.dim() == 6 else 1
    x = clips.flatten(0, 1) if clips.dim() == 6 else clips
    logits, policies = model.forward_with_policies(x, sample=generator is not None, generator=generator)
    macs = adaptive_macs(policies, table, batch_size=x.shape[0], mode=cost_mode)
    n = logits.shape[0] // views
    return logits.view(n, views, -1).mean(1), macs.view(n, views).sum(1), policies


@torch.inference_mode()
def evaluate(
    model: Recognizer,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    table: CostTable,
    views: int = 1,
    device: str | torch.device = "cpu",
    sample_policy: bool = False,
    seed: int = 0,
    progress: bool = True,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """Top-1/top-5, adaptive and dense GMACs per video (× views), parameters, policy statistics and the
    ``confusion`` matrix (K, K) as lists (row: true class, column: predicted class).

    The model runs in eval mode with arg-max policies, or with ``sample_policy`` Gumbel-sampled ones (the
    official protocol) from a generator seeded with ``seed``: repeatable, and the global RNG is left alone.
    ``keep_scores`` also returns the softmax ``scores`` (N, K), ``labels`` (N,) and per-video ``video_macs`` (N,)
    as tensors (for :func:`evaluate_ensemble`).
    """
    model.eval().to(device)
    generator = torch.Generator(device=device).manual_seed(seed) if sample_policy else None
    metrics = RecognitionMetrics(list(model.fusions())).to(device)
    total = len(loader) if hasattr(loader, "__len__") else None
    confusion = None
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for clips, labels in iter_progress(loader, total=total, desc="eval", enabled=progress):
        logits, macs, policies = predict_batch(model, clips.to(device), table, generator=generator)
        metrics.update(logits, labels.to(device), macs, policies)
        confusion = confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), logits.shape[1], into=confusion)
        if keep_scores:
            kept.append((logits.float().softmax(1).cpu(), labels.cpu(), macs.float().cpu()))
    result = metrics.compute()
    if keep_scores:
        scores, labels, video_macs = (torch.cat(parts) for parts in zip(*kept, strict=True))
        result.update(scores=scores, labels=labels, video_macs=video_macs)
    result["confusion"] = confusion.tolist() if confusion is not None else []
    result.update(
        gflops_dense=table.dense_gmacs * views,
        params=count_params(model),
        views=views,
        policy_mode="sampled" if sample_policy else "deterministic",
    )
    return result


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    num_segments: int | None = None,
    input_size: int | None = None,
    num_clips: int = 1,
    num_crops: int = 1,
    batch_size: int = 8,
    workers: int = 2,
    device: str | torch.device = "cpu",
    sample_policy: bool = False,
    seed: int = 0,
    progress: bool = True,
    min_frames: int = 1,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate` a checkpoint on a dataset split (default: the dataset it was trained on), with the
    checkpoint's transforms; clips (N, T, 3, S, S) or (N, V, T, 3, S, S) for V = num_clips × num_crops views.
    ``sample_policy`` draws Gumbel-sampled policies seeded by ``seed`` (the official protocol); ``min_frames=3``
    drops the videos the official loader drops."""
    from adafuse.checkpoint import load_model
    from adafuse.data.dataset import build_dataset
    from adafuse.data.loader import build_loader
    from adafuse.data.spec import load_dataset_yaml
    from adafuse.errors import UserError
    from adafuse.flops import profile

    model, meta = load_model(checkpoint, **({"num_segments": num_segments} if num_segments else {}))
    config = model.config
    data = data or meta.get("dataset")
    if not data:
        raise UserError(f"checkpoint {checkpoint} names no dataset; pass --data DATASET.yaml")
    spec = load_dataset_yaml(data)
    if spec.num_classes != config.num_classes:
        raise UserError(
            f"{data} has {spec.num_classes} classes but checkpoint {checkpoint} was trained for {config.num_classes}"
        )
    trained = list(config.classes or [])
    unnamed = [str(i) for i in range(spec.num_classes)]  # a dataset.yaml with num_classes only names none
    if trained and unnamed not in (trained, list(spec.class_names)) and trained != list(spec.class_names):
        # the same count in another order would score near chance silently
        i, ours = next((i, a) for i, (a, b) in enumerate(zip(spec.class_names, trained, strict=True)) if a != b)
        hint = ("the same names in another order: list them in the checkpoint's order"
                if sorted(trained) == sorted(spec.class_names) else "other class names")
        raise UserError(f"{data}: class {i} is {ours!r} but checkpoint {checkpoint} has {trained[i]!r} there ({hint})")
    size = input_size or config.input_size
    dataset = build_dataset(spec=spec, split=split, num_segments=config.num_segments, input_size=size,
                            normalization=config.normalization, train=False, num_clips=num_clips, num_crops=num_crops,
                            min_frames=min_frames)
    loader = build_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    table = profile(model, input_size=size)
    result = evaluate(model, loader, table=table, views=num_clips * num_crops, device=device,
                      sample_policy=sample_policy, seed=seed, progress=progress, keep_scores=keep_scores)  # fmt: skip
    result.update(checkpoint=str(checkpoint), dataset=str(data), split=split, method=config.method,
                  backbone=config.backbone, num_segments=config.num_segments, input_size=size,
                  classes=list(spec.class_names), per_class=per_class_accuracy(result["confusion"], spec.class_names))
    return result


def evaluate_ensemble(checkpoints: list[str | Path], **options: Any) -> dict[str, Any]:
    """An evaluation-time ensemble (ECO_En): every checkpoint is evaluated on the same split with its own frames
    (its T, size and transforms; ``options`` as :func:`evaluate_checkpoint`'s), and the ensemble predicts the mean
    of the members' softmax scores. Its GMACs and parameters are the members' sums.

    Returns top-1/top-5 of the ensemble, ``gflops`` / ``gflops_dense`` / ``params`` summed, ``num_segments`` summed
    (ECO_En Lite: 16 + 20 + 24 + 32 = 92 frames) and ``members`` (each member's own result, without confusion).
    """
    from adafuse.errors import UserError

    if len(checkpoints) < 2:
        raise UserError("an ensemble needs at least two checkpoints")
    members = [evaluate_checkpoint(path, **options, keep_scores=True) for path in checkpoints]
    first = members[0]
    for path, member in zip(checkpoints[1:], members[1:], strict=True):
        if member["classes"] != first["classes"] or not torch.equal(member["labels"], first["labels"]):
            raise UserError(f"{path} was evaluated on other classes or videos than {checkpoints[0]}: an ensemble "
                            "needs members trained for the same classes, evaluated on the same split")  # fmt: skip
    scores = torch.stack([m["scores"] for m in members]).mean(0)
    labels = first["labels"]
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    videos = max(1, labels.numel())
    summary = [{k: v for k, v in m.items() if k not in ("scores", "labels", "video_macs", "confusion", "per_class")}
               for m in members]  # fmt: skip
    return {
        "top1": float(100 * hit[:, 0].sum() / videos),
        "top5": float(100 * hit.any(dim=1).sum() / videos),
        "videos": int(labels.numel()),
        "gflops": sum(m["gflops"] for m in members),
        "gflops_dense": sum(m["gflops_dense"] for m in members),
        "params": sum(m["params"] for m in members),
        "num_segments": sum(m["num_segments"] for m in members),
        "dataset": first["dataset"],
        "split": first["split"],
        "method": "ensemble of " + ", ".join(f"{m['method']} (T={m['num_segments']})" for m in members),
        "members": summary,
    }
