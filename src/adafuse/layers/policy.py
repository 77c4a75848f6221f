"""The AdaFuse policy network (Meng et al., ICLR 2021, Sec. 3.2)."""

from __future__ import annotations

import torch
from torch import nn

from adafuse.errors import UserError


def policy_hidden_size(*, decisions: int, hidden: int | None = None, quota: int | None = None) -> int:
    """Hidden width H of a policy net: a fixed ``hidden``, or ``quota // decisions`` (the official
    ``--hidden_quota``, which keeps the second FC at about 3·quota weights whatever the block width)."""
    if (hidden is None) == (quota is None):
        raise ValueError("give exactly one of policy_hidden and policy_quota")
    size = hidden if hidden is not None else quota // decisions
    if size < 1:
        raise UserError(f"policy hidden size must be >= 1, got {size} (hidden={hidden}, quota={quota})")
    return size


def policy_linears(in_features: int, hidden: int, out_features: int) -> tuple[nn.Linear, nn.Linear]:
    """The two FC layers of a policy net, initialised as the official code does (weights N(0, 1e-3),
    biases 0) so that the initial policy is close to uniform over the actions."""
    fc0, fc1 = nn.Linear(in_features, hidden), nn.Linear(hidden, out_features)
    for fc in (fc0, fc1):
        nn.init.normal_(fc.weight, 0.0, 0.001)
        nn.init.zeros_(fc.bias)
    return fc0, fc1


class PolicyNet(nn.Module):
    """Linear(F -> H) -> BatchNorm1d(H) -> ReLU -> Linear(H -> A·G): per-channel-group action logits.

    Input (N·T, F) pooled features (F = 2·C_in with history ``[v_{t-1}, v_t]``, else C_in);
    output (N·T, G, A) logits, channel-major and action-minor.

    Args:
        fcs: the two linear layers, possibly shared with other blocks of equal shape (the official
            ``--shared_policy_net``); BatchNorm always stays per block.
        decisions: G, the number of decisions per frame (channels / group_size).
        num_actions: A.
    """

    def __init__(self, fcs: tuple[nn.Linear, nn.Linear], *, decisions: int, num_actions: int) -> None:
        super().__init__()
        self.fc0, self.fc1 = fcs
        self.bn = nn.BatchNorm1d(self.fc0.out_features)
        self.relu = nn.ReLU(inplace=True)
        self.decisions = decisions
        self.num_actions = num_actions
        if self.fc1.out_features != decisions * num_actions:
            raise ValueError(f"fc1 gives {self.fc1.out_features} logits, need {decisions} x {num_actions}")

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.fc0(v)))
        return self.fc1(h).view(v.shape[0], self.decisions, self.num_actions)
