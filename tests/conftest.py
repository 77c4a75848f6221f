"""Shared fixtures: tiny models and clips (CPU, seconds)."""

import pytest
import torch

from adafuse.layers import KEEP, REUSE, SKIP, AdaptiveFusion


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_clip(n: int = 2, t: int = 3, size: int = 32) -> torch.Tensor:
    """A random clip batch (N, T, 3, H, W)."""
    return torch.randn(n, t, 3, size, size)


def force_policy(model: torch.nn.Module, action: int) -> None:
    """Make every AdaptiveFusion of ``model`` choose ``action`` for all channels (via its last bias)."""
    for m in model.modules():
        if isinstance(m, AdaptiveFusion):
            fc1 = m.policy.fc1
            with torch.no_grad():
                fc1.weight.zero_()
                bias = torch.full((m.decisions, len(m.actions)), -10.0)
                bias[:, m.actions.index(action)] = 10.0
                fc1.bias.copy_(bias.flatten())


__all__ = ["KEEP", "REUSE", "SKIP", "force_policy", "tiny_clip"]
