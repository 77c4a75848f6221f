"""The video recognizer: a 2D backbone over N·T frames, a new head, and a temporal consensus."""

from __future__ import annotations

import torch
from torch import nn

from adafuse.layers.fusion import Fusion


class Recognizer(nn.Module):
    """Frame-level 2D CNN + dropout + linear head + consensus (TSN average, or an LSTM over time).

    Input (N, T, 3, H, W) -> video logits (N, num_classes), the mean of the per-frame logits. With
    ``consensus="lstm"`` the frame features go through an LSTM (hidden ``lstm_hidden``) before the head.
    Policies of the last forward pass are read with :meth:`policies`; the cost counter is
    :mod:`adafuse.flops`.

    Args:
        backbone: maps (N·T, 3, H, W) -> (N·T, backbone.num_features).
        num_classes: K.
        num_segments: default T; the actual T is taken from each input.
        dropout: dropout on the pooled features (0.5 in the paper).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        num_segments: int,
        dropout: float = 0.5,
        consensus: str = "avg",
        lstm_hidden: int = 512,
    ) -> None:
        super().__init__()
        if consensus not in ("avg", "lstm"):
            raise ValueError(f"consensus must be 'avg' or 'lstm', got {consensus!r}")
        self.backbone = backbone
        self.num_segments = num_segments
        self.num_classes = num_classes
        self.consensus = consensus
        features = backbone.num_features
        self.lstm = nn.LSTM(features, lstm_hidden, batch_first=True) if consensus == "lstm" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(lstm_hidden if self.lstm is not None else features, num_classes)
        nn.init.normal_(self.head.weight, 0.0, 0.001)
        nn.init.zeros_(self.head.bias)

    def set_num_segments(self, num_segments: int) -> None:
        """Tell every temporal module (shift, fusion) how many frames a video has."""
        self.num_segments = num_segments
        for m in self.backbone.modules():
            if hasattr(m, "num_segments"):
                m.num_segments = num_segments

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame features: (N, T, 3, H, W) -> (N, T, F)."""
        n, t = x.shape[:2]
        self.set_num_segments(t)
        return self.backbone(x.flatten(0, 1)).view(n, t, -1)

    def frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame logits: (N, T, 3, H, W) -> (N, T, K)."""
        f = self.forward_features(x)
        if self.lstm is not None:
            f = self.lstm(f)[0]
        return self.head(self.dropout(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_logits(x).mean(dim=1)

    def fusions(self) -> dict[str, Fusion]:
        """The fusion slots, by module name."""
        return {name: m for name, m in self.named_modules() if isinstance(m, Fusion)}

    def policies(self) -> dict[str, torch.Tensor]:
        """Masks (N, T, C, 3) of the last forward pass, one-hot over KEEP/REUSE/SKIP, by module name."""
        return {name: m.last_mask for name, m in self.fusions().items() if m.last_mask is not None}
