"""Fixed (not learned) fusion policies used as baselines in the paper's Table 1."""

from __future__ import annotations

import torch

from adafuse.errors import UserError
from adafuse.layers.actions import KEEP, NUM_ACTIONS, SKIP
from adafuse.layers.fusion import Fusion


class RandomFusion(Fusion):
    """Random one-hot policy with fixed keep / reuse / skip probabilities (the paper's "Random").

    Sampled decisions (training) draw fresh masks from the caller's generator or the global RNG; deterministic
    ones (evaluation) from a generator seeded with ``seed`` at every forward pass, so evaluation is repeatable.

    Args:
        channels, num_segments, group_size: as :class:`~adafuse.layers.fusion.Fusion`.
        ratios: (keep, reuse, skip) probabilities, summing to 1.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_segments: int,
        ratios: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        group_size: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(channels, num_segments=num_segments, group_size=group_size)
        if len(ratios) != NUM_ACTIONS or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
            raise UserError(f"ratios must be 3 non-negative numbers summing to 1, got {ratios}")
        self.ratios = tuple(float(r) for r in ratios)
        self.seed = seed

    def decide(
        self, x: torch.Tensor, y: torch.Tensor, *, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        shape = (y.shape[0], self.decisions)
        if not sample:
            generator = torch.Generator().manual_seed(self.seed)
        u = torch.rand(shape, generator=generator).to(y.device)
        keep, reuse, _ = self.ratios
        index = (u >= keep).long() + (u >= keep + reuse).long()
        return torch.zeros(*shape, NUM_ACTIONS, device=y.device, dtype=y.dtype).scatter_(-1, index[..., None], 1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratios={self.ratios}"


class ThresholdFusion(Fusion):
    """Keep the ``keep_ratio`` fraction of channel groups with the largest mean |y| per frame, skip the rest
    (the paper's "Threshold": no history, no learning). Deterministic."""

    def __init__(self, channels: int, *, num_segments: int, keep_ratio: float = 0.5, group_size: int = 1) -> None:
        super().__init__(channels, num_segments=num_segments, group_size=group_size)
        if not 0.0 < keep_ratio <= 1.0:
            raise UserError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        self.keep_ratio = keep_ratio
        self.num_keep = max(1, round(keep_ratio * self.decisions))

    def decide(
        self, x: torch.Tensor, y: torch.Tensor, *, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        score = y.detach().abs().mean(dim=(2, 3)).view(y.shape[0], self.decisions, self.group_size).mean(-1)
        kept = torch.zeros_like(score).scatter_(1, score.topk(self.num_keep, dim=1).indices, 1.0)
        mask = torch.zeros(*score.shape, NUM_ACTIONS, device=y.device, dtype=y.dtype)
        mask[..., KEEP] = kept
        mask[..., SKIP] = 1.0 - kept
        return mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep_ratio={self.keep_ratio}"
