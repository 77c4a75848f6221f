"""The video recognizer: a 2D backbone over N·T frames (or a 3D one over whole clips), a new head, and a temporal
consensus."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from adafuse.layers.fusion import Fusion, Policies, qualify, scope
from adafuse.layers.relation import RelationConsensus
from adafuse.models.config import ModelConfig

CONSENSUS = ("avg", "lstm", "trn")


class Recognizer(nn.Module):
    """Frame-level 2D CNN + dropout + linear head + consensus (TSN average, an LSTM over time, or TRN's relations).

    Input (N, T, 3, H, W) -> video logits (N, num_classes), the mean of the per-frame logits. With
    ``consensus="lstm"`` the frame features go through an LSTM (hidden ``lstm_hidden``) before the head; with
    ``"trn"`` a :class:`~adafuse.layers.relation.RelationConsensus` (TRN multi-scale, ``trn_features`` wide) is the
    head. A backbone with ``clip_level = True`` (I3D, ECO) sees the whole clip (N, T, 3, H, W) and returns video
    features (N, D): the head classifies them and there are no frame logits.
    :meth:`forward_with_policies` also returns the policies its fusion slots decided; the cost counter is
    :mod:`adafuse.flops`. ``config`` (a :class:`~adafuse.models.config.ModelConfig`) says what the model is;
    ``build_model`` fills it, a hand-built recognizer gets ``backbone="custom"``.

    Args:
        backbone: maps (N·T, 3, H, W) -> (N·T, backbone.num_features); it returns its policies when it has a
            ``forward_with_policies`` method (every backbone of this package does).
        num_classes: K.
        num_segments: T. Every temporal module of the backbone must have been built for the same T (checked);
            inputs must have T frames (checked).
        dropout: dropout on the pooled features (0.5 in the paper).
        config: the model's config; default: a ``custom`` one from the arguments.
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
        trn_features: int = 256,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        if consensus not in CONSENSUS:
            raise ValueError(f"consensus must be one of {', '.join(CONSENSUS)}, got {consensus!r}")
        self.clip_level = bool(getattr(backbone, "clip_level", False))
        if self.clip_level and consensus != "avg":
            raise ValueError(f"a clip-level (3D) backbone classifies whole clips: consensus {consensus!r} needs frames")
        for name, m in backbone.named_modules():
            t = getattr(m, "num_segments", num_segments)
            if t != num_segments:
                raise ValueError(f"backbone.{name} was built for num_segments={t}, the recognizer for {num_segments}")
        if config is None:
            config = ModelConfig(backbone="custom", method="custom", num_classes=num_classes,
                                 num_segments=num_segments, dropout=dropout, lstm_hidden=lstm_hidden)  # fmt: skip
        elif (config.num_classes, config.num_segments) != (num_classes, num_segments):
            raise ValueError("config.num_classes / num_segments disagree with the recognizer's arguments")
        self.config = config
        self.backbone = backbone
        self.consensus = consensus
        features = backbone.num_features
        self.lstm = nn.LSTM(features, lstm_hidden, batch_first=True) if consensus == "lstm" else None
        if consensus == "trn":
            # TRN's relations replace the linear head (they end in their own classifiers)
            self.relation = RelationConsensus(features, num_classes, num_segments=num_segments,
                                              features=trn_features, dropout=dropout)  # fmt: skip
            self.dropout, self.head = None, None
        else:
            self.relation = None
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(lstm_hidden if self.lstm is not None else features, num_classes)
            nn.init.normal_(self.head.weight, 0.0, 0.001)
            nn.init.zeros_(self.head.bias)

    @property
    def num_classes(self) -> int:
        """K."""
        return self.config.num_classes

    @property
    def num_segments(self) -> int:
        """T, the frames per clip the model was built for."""
        return self.config.num_segments

    def forward_with_policies(
        self,
        clips: torch.Tensor,
        *,
        actions: Mapping[str, torch.Tensor] | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
        per_frame: bool = False,
    ) -> tuple[torch.Tensor, Policies]:
        """Logits and the policies that produced them.

        Args:
            clips: (N, T, 3, H, W).
            actions: forced policy masks (N, T, G, 3) by fusion name (names as :meth:`fusions` gives them);
                those fusions do not run their policy.
            sample: stochastic decisions (Gumbel-softmax samples); default: in training mode only.
            generator: source of the sampling noise (a seeded, repeatable evaluation); default: the global RNG.
            per_frame: return frame logits (N, T, K) instead of the video logits (N, K) (TSN / LSTM only: TRN and
                3D models have no frame logits).

        Returns:
            (logits, policies): ``policies[name]`` is the (N, T, G, 3) one-hot mask of fusion ``name``
            (and, for CGNet's gated convs, the gated-off share of every frame, (N·T,)).
        """
        n, t = clips.shape[:2]
        if t != self.num_segments:
            raise ValueError(
                f"the model was built for num_segments={self.num_segments} frames per clip, got {t}; rebuild it "
                f"for {t} (e.g. adafuse.checkpoint.load_model(path, num_segments={t}))"
            )
        if per_frame and (self.clip_level or self.relation is not None):
            raise ValueError(f"{self.config.method} classifies whole clips: it has no frame logits")
        x = clips if self.clip_level else clips.flatten(0, 1)
        if hasattr(self.backbone, "forward_with_policies"):
            features, policies = self.backbone.forward_with_policies(
                x, actions=scope(actions, "backbone"), sample=sample, generator=generator
            )
            policies = qualify("backbone", policies)
        else:
            features, policies = self.backbone(x), {}
        unused = sorted(set(actions or ()) - set(policies))
        if unused:
            raise ValueError(f"forced actions for modules without a policy: {', '.join(unused)}")
        if self.clip_level:
            return self.head(self.dropout(features)), policies
        f = features.view(n, t, -1)
        if self.relation is not None:
            return self.relation(f), policies
        if self.lstm is not None:
            f = self.lstm(f)[0]
        logits = self.head(self.dropout(f))
        return (logits if per_frame else logits.mean(dim=1)), policies

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Video logits: (N, T, 3, H, W) -> (N, K)."""
        return self.forward_with_policies(clips)[0]

    def frame_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-frame logits: (N, T, 3, H, W) -> (N, T, K)."""
        return self.forward_with_policies(clips, per_frame=True)[0]

    def fusions(self) -> dict[str, Fusion]:
        """The fusion slots, by module name (the keys of the policies)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, Fusion)}
