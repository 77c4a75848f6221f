"""The multi-scale temporal relation head of TRN (Zhou et al., ECCV 2018), as a consensus over frame features.

::

    frame features (N, T, D) ─► dropout ─► Linear(D → F) ─► f (N, T, F)
    for every scale k = T, T−1, …, 2:   g_k = ReLU ─► Linear(k·F → 256) ─► ReLU ─► Linear(256 → K)
        logits += Σ over sampled ordered k-frame subsets (t1 < … < tk) of g_k([f_t1, …, f_tk])

The scale T has one subset (all frames); every other scale sums ``relations`` subsets drawn without replacement in
training, as the official code does. The official code also draws at test time (its predictions are random);
here evaluation is deterministic and uses the *expectation* of that draw: ``relations`` times the mean over every
subset of the scale, which is what training-time outputs average to.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class RelationConsensus(nn.Module):
    """TRN multi-scale relation head: frame features (N, T, in_features) -> video logits (N, num_classes).

    Args:
        in_features: D, the backbone's feature width.
        num_classes: K.
        num_segments: T (fixed: the subsets of every scale are enumerated when the head is built).
        features: F, the per-frame embedding the relations see (``img_feature_dim``, 256 in TRN).
        bottleneck: hidden width of every g_k (256 in TRN).
        relations: subsets summed per scale below T (3 in TRN).
        dropout: dropout on the frame features before the embedding.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_segments: int,
        features: int = 256,
        bottleneck: int = 256,
        relations: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"TRN relates at least 2 frames, got num_segments={num_segments}")
        self.num_segments = num_segments
        self.relations = relations
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Linear(in_features, features)
        self.scales = list(range(num_segments, 1, -1))
        # (subsets of the scale, k) index tensors: buffers follow the module's device, never saved
        for k in self.scales:
            subsets = torch.tensor(list(itertools.combinations(range(num_segments), k)), dtype=torch.long)
            self.register_buffer(f"subsets_{k}", subsets, persistent=False)
        self.g = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(k * features, bottleneck), nn.ReLU(), nn.Linear(bottleneck, num_classes))
            for k in self.scales
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, K); draws subsets in training mode from the global RNG (like dropout)."""
        n = frames.shape[0]
        f = self.embed(self.dropout(frames))
        logits = None
        for k, g in zip(self.scales, self.g, strict=True):
            subsets = getattr(self, f"subsets_{k}")
            weight = 1.0
            if k < self.num_segments:
                draws = min(self.relations, subsets.shape[0])
                if self.training:
                    pick = torch.randperm(subsets.shape[0])[:draws].to(subsets.device)
                    subsets = subsets[pick]
                else:
                    weight = draws / subsets.shape[0]  # expectation of the sum of `draws` random subsets
            # (N, S, k, F) -> (N, S, k·F): the subsets of a scale run as one batch through g_k
            x = f[:, subsets].reshape(n, subsets.shape[0], -1)
            out = g(x).sum(dim=1) * weight
            logits = out if logits is None else logits + out
        return logits
