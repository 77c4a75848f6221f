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


def sample_actions(logits: torch.Tensor, *, tau: float, sample: bool) -> torch.Tensor:
    """Hard one-hot actions from policy logits: (..., A) -> (..., A).

    ``sample=True`` draws with straight-through Gumbel-softmax at temperature ``tau`` (training, or the
    official stochastic evaluation): the forward value is one-hot, gradients are those of the soft sample.
    ``sample=False`` is the deterministic arg-max (our default at evaluation); it has no gradient.
    """
    if not sample:
        return one_hot_argmax(logits)
    return F.gumbel_softmax(F.log_softmax(logits, dim=-1), tau=tau, hard=True, dim=-1)
