"""AdaFuse: learned per-channel keep / reuse / skip (Meng et al., ICLR 2021, Sec. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adafuse.layers.actions import NUM_ACTIONS, REUSE, Action
from adafuse.layers.fusion import Fusion
from adafuse.layers.gumbel import one_hot_argmax, sample_actions
from adafuse.layers.policy import PolicyNet, policy_hidden_size, policy_linears

ADAFUSE_ACTIONS = (Action.KEEP, Action.REUSE, Action.SKIP)
ADA_SKIP_ACTIONS = (Action.KEEP, Action.SKIP)  # "Ada. Skip": no history input, keep or skip
ADA_REUSE_ACTIONS = (Action.KEEP, Action.REUSE)  # "Ada. Reuse": history, keep or reuse, never skip


class SharedPolicyFCs:
    """Hands out policy FC pairs, one per (in_features, out_features) shape, so that blocks of equal shape
    share them (the official ``--shared_policy_net``). Build one per model and pass it to every fusion."""

    def __init__(self) -> None:
        self._fcs: dict[tuple[int, int, int], tuple[nn.Linear, nn.Linear]] = {}

    def get(self, in_features: int, hidden: int, out_features: int) -> tuple[nn.Linear, nn.Linear]:
        """The FC pair for this shape, created on first request."""
        key = (in_features, hidden, out_features)
        if key not in self._fcs:
            self._fcs[key] = policy_linears(in_features, hidden, out_features)
        return self._fcs[key]


class AdaptiveFusion(Fusion):
    """Learned fusion policy.

    The policy sees the global-average-pooled block input of the previous and current frame,
    ``[v_{t-1}, v_t]`` with ``v_{-1} = 0`` (only ``v_t`` when REUSE is not an action), and outputs one
    decision per channel group. Training samples with straight-through Gumbel-softmax at temperature
    ``tau``; evaluation takes the arg-max unless the caller asks for sampled decisions (``sample=True``: the
    official protocol, repeatable with a seeded generator).

    Args:
        in_channels: C_in of the block input x (N·T, C_in, H, W).
        channels: C of the fused tensor y (N·T, C, H', W').
        num_segments: T.
        hidden / quota: fixed policy hidden size H, or a quota Q with H = Q // (C / group_size).
        actions: the allowed actions; ``ADAFUSE_ACTIONS``, ``ADA_SKIP_ACTIONS`` or ``ADA_REUSE_ACTIONS``.
        group_size: channels per decision.
        tau: Gumbel-softmax temperature.
        shared: share the FC layers with other blocks of the same shape through this bank.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        num_segments: int,
        hidden: int | None = None,
        quota: int | None = None,
        actions: Sequence[Action] = ADAFUSE_ACTIONS,
        group_size: int = 1,
        tau: float = 0.67,
        shared: SharedPolicyFCs | None = None,
    ) -> None:
        super().__init__(channels, num_segments=num_segments, group_size=group_size)
        self.actions = tuple(Action(a) for a in actions)
        if len(set(self.actions)) != len(self.actions) or len(self.actions) < 2:
            raise ValueError(f"need at least two distinct actions, got {actions}")
        self.history = REUSE in self.actions
        in_features = (2 if self.history else 1) * in_channels
        size = policy_hidden_size(decisions=self.decisions, hidden=hidden, quota=quota)
        out_features = len(self.actions) * self.decisions
        fcs = shared.get(in_features, size, out_features) if shared else policy_linears(in_features, size, out_features)
        self.policy = PolicyNet(fcs, decisions=self.decisions, num_actions=len(self.actions))
        self.tau = tau
        # Column j of the zero-padded A-way one-hot is action order[j]; gather them into KEEP/REUSE/SKIP.
        order = list(self.actions) + [a for a in Action if a not in self.actions]
        self.register_buffer("_columns", torch.tensor([order.index(a) for a in Action]), persistent=False)

    def policy_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled policy features: x (N·T, C_in, H, W) -> (N·T, 2·C_in) ``[v_{t-1}, v_t]`` (or (N·T, C_in))."""
        v = x.mean(dim=(2, 3))
        if not self.history:
            return v
        v3 = v.view(-1, self.num_segments, v.shape[1])
        prev = torch.cat([torch.zeros_like(v3[:, :1]), v3[:, :-1]], dim=1)
        return torch.cat([prev, v3], dim=2).view(v.shape[0], -1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Action logits (N·T, G, A) over ``self.actions`` from block input x (N·T, C_in, H, W)."""
        return self.policy(self.policy_input(x))

    def decide(
        self, x: torch.Tensor, y: torch.Tensor, *, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        return self._mask(sample_actions(self.logits(x), tau=self.tau, sample=sample, generator=generator))

    def step(self, x: torch.Tensor, pooled: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame of B streams, deterministic (arg-max), with the policy history as explicit state.

        x (B, C_in, H, W) the frame's block input; ``pooled`` (B, C_in) the previous frame's pooled input
        ``v_{t-1}`` (zeros at a stream's start; ignored without history) -> (mask (B, G, 3), ``v_t`` (B, C_in): the
        next frame's ``pooled``). Equals the clip policy frame by frame.
        """
        v = x.mean(dim=(2, 3))
        features = torch.cat([pooled, v], dim=1) if self.history else v
        return self._mask(one_hot_argmax(self.policy(features))), v

    def _mask(self, onehot: torch.Tensor) -> torch.Tensor:
        """(..., G, A) one-hot over ``self.actions`` -> policy mask (..., G, 3) over KEEP / REUSE / SKIP."""
        return F.pad(onehot, (0, NUM_ACTIONS - onehot.shape[-1])).index_select(-1, self._columns)

    def extra_repr(self) -> str:
        names = "/".join(a.name.lower() for a in self.actions)
        return f"{super().extra_repr()}, actions={names}, tau={self.tau}"
