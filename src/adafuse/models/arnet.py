"""AR-Net (Meng et al., ECCV 2020): a MobileNetV2 + LSTM policy picks, frame by frame, which resolution (each with
its own ResNet) sees the frame, or skips it and the next frames.

The configuration of the authors' repository (``scripts_train.sh``; ``ops/models_ada.py``)::

    frame t ─► resize to 84 ─► MobileNetV2 ─► LSTMCell(1280 → 512) ─► h_t ─► Linear(512 → A) ─► action a_t
                                                                    └─► Linear(512 → K): the policy's own prediction
    a_t ∈ [ResNet-50 @ 224, ResNet-34 @ 168, ResNet-18 @ 112, "policy" (use the policy's prediction),
           skip 1, skip 2, skip 4 (this frame and the next k−1)]
    video logits = mean over the non-skipped frames of the chosen branch's frame logits

Decisions are straight-through Gumbel-softmax samples in training (τ = ``tau``) and the arg-max at evaluation.
A skip-k decision *covers* the next k−1 frames: the policy does not run there, the LSTM state is carried over
unchanged (the official code keeps the hidden state but lets the cell state run on; we freeze both), and the mask
marks those frames with a last, extra action ``covered``. So the policy returned by :meth:`ARNet.forward_with_policies`
is one one-hot tensor ``{"policy": (N, T, A + 1)}``, and its cost is a pure function of it and the cost table
(:func:`adafuse.flops.adaptive_macs`, "frame choices"): a frame costs its chosen branch (ResNet and classifier)
plus the policy, a skipped or "policy" frame the policy only, a covered frame nothing.

As in the official training code, the forward pass computes every branch on every frame (the decisions select
among them, and their gradients train every branch); that dense pass is what ``profile`` counts as the dense cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adafuse.layers.fusion import Policies
from adafuse.layers.gumbel import sample_actions
from adafuse.models._registry import get_backbone
from adafuse.models.config import ModelConfig


class ARNetPolicy(nn.Module):
    """MobileNetV2 + LSTM policy: frames (N, T, 3, r, r) -> action logits (N, T, A) and the policy's own frame
    logits (N, T, K). ``step`` runs one frame so that covered frames can leave the state alone."""

    def __init__(self, *, num_actions: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.backbone = get_backbone("mobilenet_v2").builder()
        self.rnn = nn.LSTMCell(self.backbone.num_features, hidden)
        self.actions = nn.Linear(hidden, num_actions)
        self.classifier = nn.Linear(hidden, num_classes)
        for fc in (self.actions, self.classifier):
            nn.init.normal_(fc.weight, 0.0, 0.001)
            nn.init.zeros_(fc.bias)


class ARNet(nn.Module):
    """AR-Net over clips (N, T, 3, S, S) -> video logits (N, K), S = ``config.input_size``.

    Args:
        branches: backbone names, one per resolution (high to low), e.g. resnet50, resnet34, resnet18.
        scales: their frame sides as shares of ``config.input_size``, then the policy's (1, 0.75, 0.5, 0.375:
            224, 168, 112, 84 px at 224).
        skips: the skip lengths the policy may choose (e.g. 1, 2, 4).
        num_classes, num_segments: K and T. hidden: LSTM width. dropout: before every classifier.
        tau: Gumbel-softmax temperature. config: the model's :class:`ModelConfig`.
    """

    def __init__(
        self,
        *,
        branches: Sequence[str],
        scales: Sequence[float],
        skips: Sequence[int],
        num_classes: int,
        num_segments: int,
        hidden: int = 512,
        dropout: float = 0.5,
        tau: float = 0.67,
        config: ModelConfig,
    ) -> None:
        super().__init__()
        if len(scales) != len(branches) + 1:
            raise ValueError(f"{len(branches)} branches need {len(branches) + 1} scales (the last: the policy's), "
                             f"got {len(scales)}")  # fmt: skip
        self.config = config
        self.resolutions = tuple(max(1, round(s * config.input_size)) for s in scales)  # frame sides
        self.skips = tuple(int(k) for k in skips)
        self.tau = tau
        self.branches = nn.ModuleList(get_backbone(name).builder() for name in branches)
        self.classifiers = nn.ModuleList(nn.Linear(b.num_features, num_classes) for b in self.branches)
        for fc in self.classifiers:
            nn.init.normal_(fc.weight, 0.0, 0.001)
            nn.init.zeros_(fc.bias)
        self.dropout = nn.Dropout(dropout)
        # actions: one per branch, the policy's own prediction, one per skip length; the mask adds "covered"
        self.num_actions = len(self.branches) + 1 + len(self.skips)
        self.policy = ARNetPolicy(num_actions=self.num_actions, num_classes=num_classes, hidden=hidden)

    @property
    def num_classes(self) -> int:
        """K."""
        return self.config.num_classes

    @property
    def num_segments(self) -> int:
        """T."""
        return self.config.num_segments

    def action_names(self) -> list[str]:
        """Names of the mask's columns (A + 1), e.g. ``resnet50@224 … policy@84 skip1 … covered``."""
        names = [f"{b}@{r}" for b, r in zip(self.config.arnet_backbones, self.resolutions, strict=False)]
        return [*names, f"policy@{self.resolutions[-1]}", *(f"skip{k}" for k in self.skips), "covered"]

    def _resize(self, x: torch.Tensor, size: int) -> torch.Tensor:
        return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def decide(
        self, clips: torch.Tensor, *, sample: bool, generator: torch.Generator | None = None,
        forced: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the policy frame by frame: clips (N, T, 3, S, S) -> (mask (N, T, A + 1), policy logits (N, T, K)).

        ``forced`` (N, T, A + 1) replaces the decisions (its covered frames must follow its skips)."""
        n, t = clips.shape[:2]
        p = self.policy
        small = self._resize(clips.flatten(0, 1), self.resolutions[-1])
        feats = p.backbone(small).view(n, t, -1)
        h = feats.new_zeros(n, p.rnn.hidden_size)
        c = torch.zeros_like(h)
        remaining = torch.zeros(n, dtype=torch.long, device=clips.device)  # frames still covered by a skip
        skip_len = torch.tensor(self.skips, device=clips.device)
        first_skip = len(self.branches) + 1
        masks, logits = [], []
        for step in range(t):
            covered = (remaining > 0)[:, None]
            h_new, c_new = p.rnn(feats[:, step], (h, c))
            h, c = torch.where(covered, h, h_new), torch.where(covered, c, c_new)
            if forced is not None:
                action = forced[:, step].to(feats.dtype)
            else:
                chosen = sample_actions(p.actions(h), tau=self.tau, sample=sample, generator=generator)
                action = torch.cat([chosen * ~covered, covered.to(chosen.dtype)], dim=1)
            logits.append(p.classifier(self.dropout(h)))
            masks.append(action)
            hard = action.detach()[:, first_skip:-1]  # (N, S) one-hot skip decision, zero otherwise
            remaining = torch.where(covered[:, 0], remaining, (hard * skip_len).sum(1).long()) - 1
            remaining = remaining.clamp(min=0)
        return torch.stack(masks, dim=1), torch.stack(logits, dim=1)

    def forward_with_policies(
        self,
        clips: torch.Tensor,
        *,
        actions: Mapping[str, torch.Tensor] | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
        per_frame: bool = False,
    ) -> tuple[torch.Tensor, Policies]:
        """Video logits (N, K) (``per_frame``: the chosen frame logits (N, T, K), zero on skipped frames) and
        ``{"policy": mask (N, T, A + 1)}``; ``actions={"policy": mask}`` forces the decisions."""
        n, t = clips.shape[:2]
        if t != self.num_segments:
            raise ValueError(f"the model was built for num_segments={self.num_segments} frames per clip, got {t}")
        unused = sorted(set(actions or ()) - {"policy"})
        if unused:
            raise ValueError(f"forced actions for modules without a policy: {', '.join(unused)}")
        sample = self.training if sample is None else sample
        mask, policy_logits = self.decide(clips, sample=sample, generator=generator,
                                          forced=(actions or {}).get("policy"))  # fmt: skip
        frames = clips.flatten(0, 1)
        per_branch = []
        for branch, fc, size in zip(self.branches, self.classifiers, self.resolutions, strict=False):
            features = branch(self._resize(frames, size))
            per_branch.append(fc(self.dropout(features)).view(n, t, -1))
        per_branch.append(policy_logits)
        scores = torch.stack(per_branch, dim=2)  # (N, T, B + 1, K)
        chosen = mask[..., : len(per_branch), None]  # (N, T, B + 1, 1): 0 on skipped and covered frames
        frame_logits = (scores * chosen).sum(dim=2)  # (N, T, K)
        if per_frame:
            return frame_logits, {"policy": mask}
        used = chosen.sum(dim=(1, 2)).clamp(min=1)  # (N, 1): frames that were not skipped
        return frame_logits.sum(dim=1) / used, {"policy": mask}

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Video logits: (N, T, 3, S, S) -> (N, K)."""
        return self.forward_with_policies(clips)[0]

    def frame_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-frame logits of the chosen branch (zero on skipped frames): (N, T, K)."""
        return self.forward_with_policies(clips, per_frame=True)[0]

    def fusions(self) -> dict:
        """AR-Net has no channel fusions (its policy is a frame choice: see :meth:`choice_cost_links`)."""
        return {}

    def choice_cost_links(self):
        """(policy module, per mask column the modules that column's frames run) for the cost counter: a branch
        runs its ResNet, classifier and the policy; "policy" and skips the policy only; covered frames nothing."""
        spend = [[b, fc, self.policy] for b, fc in zip(self.branches, self.classifiers, strict=True)]
        spend += [[self.policy]] * (1 + len(self.skips)) + [[]]
        yield self.policy, spend
