"""Straight-through Gumbel-softmax, the deterministic argmax used at evaluation, and the fixed-budget rule (a
static number of non-skipped groups per frame, for batched GPU execution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    """One-hot of the arg-max over the last dim: (..., A) -> (..., A), same dtype as ``logits``.

    Built with ``scatter`` (not ``F.one_hot``) so it also runs on the meta device used for counting.
    """
    index = logits.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(logits).scatter_(-1, index, 1.0)


def sample_actions(
    logits: torch.Tensor, *, tau: float, sample: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hard one-hot actions from policy logits: (..., A) -> (..., A).

    ``sample=True`` draws with straight-through Gumbel-softmax at temperature ``tau`` (training, or the
    official stochastic evaluation): the forward value is one-hot, gradients are those of the soft sample.
    The noise comes from ``generator`` when given (a seeded, repeatable evaluation that leaves the global RNG
    alone), else from the global RNG. ``sample=False`` is the deterministic arg-max; it has no gradient.
    """
    if not sample:
        return one_hot_argmax(logits)
    log_probs = F.log_softmax(logits, dim=-1)
    if generator is None:
        return F.gumbel_softmax(log_probs, tau=tau, hard=True, dim=-1)
    # The same draw as F.gumbel_softmax (-log of a unit exponential), from the caller's generator.
    gumbels = -torch.empty_like(log_probs).exponential_(generator=generator).log()
    soft = ((log_probs + gumbels) / tau).softmax(dim=-1)
    return one_hot_argmax(soft) - soft.detach() + soft


def budget_onehot(logits: torch.Tensor, *, budget: int, skip: int) -> torch.Tensor:
    """Hard one-hot actions with exactly ``budget`` non-skipped groups per row: logits (..., G, A) -> (..., G, A).

    The ``budget`` groups with the largest margin ``max(non-skip logits) − skip logit`` are not skipped, each takes
    its best non-skip action (keep or reuse), the rest take ``skip`` (the SKIP column). The arg-max rule skips a group
    exactly when that margin is negative, so both rules agree on a row whose arg-max leaves ``budget`` groups
    unskipped; elsewhere the budget overrides the policy's own choice of how much to compute. No gradient.
    """
    groups, num_actions = logits.shape[-2:]
    if not 0 <= budget <= groups:
        raise ValueError(f"budget must be in 0..{groups} groups, got {budget}")
    # No index tensor made from host data: the rule runs inside a captured CUDA graph.
    others = logits.index_fill(-1, torch.full((1,), skip, device=logits.device), float("-inf"))
    best, choice = others.max(dim=-1)
    margin = best - logits[..., skip]
    kept = torch.zeros_like(margin, dtype=torch.bool).scatter_(-1, margin.topk(budget, dim=-1).indices, True)
    index = torch.where(kept, choice, skip)
    return torch.zeros_like(logits).scatter_(-1, index.unsqueeze(-1), 1.0)
