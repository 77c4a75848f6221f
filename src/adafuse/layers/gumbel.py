"""Straight-through Gumbel-softmax and the deterministic argmax used at evaluation."""

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
