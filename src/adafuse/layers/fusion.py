"""Keep / reuse / skip fusion: the shared mechanism of every fusion policy.

::

    x (block input) ──► policy ──► mask (N, T, G, 3) one-hot over KEEP/REUSE/SKIP, one row per channel group
         │
         └─► first conv ─► y ──► out_t = keep_t·y_t + reuse_t·y_{t-1}   (skip -> 0, y_{-1} = 0)
                                   │
                                   └─► second conv

The history ``y_{t-1}`` is the raw (unfused) output of the previous frame, so reuse does not chain. A decision
covers a group of ``group_size`` contiguous channels.

Policies are data: a :class:`Fusion` returns its mask, the block that owns it returns the mask next to its output
(``forward_with_policies``), and nothing is stored on the module. Forced decisions (replay, tests, benchmarks) go
in through the ``actions`` argument.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE

Policies = dict[str, torch.Tensor]  # module name -> policy mask (N, T, G, 3) (or a channel gate, see flops)


def fuse(y: torch.Tensor, mask: torch.Tensor, *, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a policy mask: y (N·T, C, H, W), mask (N, T, G, 3) with C divisible by G -> (N·T, C, H, W).

    ``previous`` (N, C, H, W) is the raw y of the frame before the clip (what REUSE copies at its first frame);
    zeros by default. A streaming step is the clip of one frame (T = 1) with the previous frame's y carried in.
    """
    n, t, g, _ = mask.shape
    y6 = y.view(n, t, g, y.shape[1] // g, *y.shape[2:])
    mask = mask.to(y.dtype).view(n, t, g, 1, 1, 1, NUM_ACTIONS)
    first = torch.zeros_like(y6[:, :1]) if previous is None else previous.view_as(y6[:, :1])
    history = first if t == 1 else torch.cat([first, y6[:, :-1]], dim=1)
    return (mask[..., KEEP] * y6 + mask[..., REUSE] * history).view_as(y)


def scope(actions: Mapping[str, torch.Tensor] | None, prefix: str) -> dict[str, torch.Tensor] | None:
    """The entries of ``actions`` under module ``prefix`` (``"layer1.0"``), renamed relative to it."""
    if actions is None:
        return None
    head = f"{prefix}."
    return {k[len(head) :]: v for k, v in actions.items() if k.startswith(head)}


def qualify(prefix: str, policies: Mapping[str, torch.Tensor]) -> Policies:
    """``policies`` of a submodule, renamed as seen from its parent (``prefix.name``)."""
    return {f"{prefix}.{k}": v for k, v in policies.items()}


class Fusion(nn.Module):
    """Base of the fusion slot: ``forward(x, y) -> mask (N, T, G, 3)``; subclasses implement :meth:`decide`.

    Args:
        channels: C, channels of y (the first conv's output).
        num_segments: frames per video T, fixed when the model is built (inputs are (N·T, ...)); the recognizer
            checks that every temporal module agrees with it.
        group_size: channels per decision; C must be divisible by it (G = C / group_size decisions per frame).
    """

    def __init__(self, channels: int, *, num_segments: int, group_size: int = 1) -> None:
        super().__init__()
        if group_size < 1 or channels % group_size:
            raise UserError(f"channels ({channels}) must be divisible by policy_group_size ({group_size})")
        self.channels = channels
        self.num_segments = num_segments
        self.group_size = group_size
        self.decisions = channels // group_size

    def decide(
        self, x: torch.Tensor, y: torch.Tensor, *, sample: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One-hot actions (N·T, G, 3) from block input x (N·T, C_in, H, W) and first-conv output y."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        actions: torch.Tensor | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The policy mask (N, T, G, 3) for block input x and first-conv output y (both (N·T, ...)).

        ``actions`` (N, T, G, 3) forces the decisions (the policy does not run); ``sample`` draws stochastic
        decisions (default: in training mode only), with noise from ``generator`` when given.
        """
        nt, t = y.shape[0], self.num_segments
        if nt % t:
            raise ValueError(f"{nt} frames do not split into videos of num_segments={t}")
        shape = (nt // t, t, self.decisions, NUM_ACTIONS)
        if actions is not None:
            if tuple(actions.shape) != shape:
                raise ValueError(f"forced actions must be a policy mask of shape {shape}, got {tuple(actions.shape)}")
            return actions.to(device=y.device, dtype=y.dtype)
        mask = self.decide(x, y, sample=self.training if sample is None else sample, generator=generator)
        return mask.view(shape)

    def decide_and_fuse(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        actions: torch.Tensor | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decide and fuse: returns (fused y (N·T, C, H, W), mask (N, T, G, 3)). What a block calls."""
        mask = self(x, y, actions=actions, sample=sample, generator=generator)
        return fuse(y, mask), mask

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_segments={self.num_segments}, group_size={self.group_size}"


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


class FusedConvPair(nn.Module):
    """Plug a fusion policy between any two modules of your own: ``second(fuse(first(x), fusion(x, first(x))))``.

    ``first`` maps x (N·T, C_in, H, W) to y (N·T, C, H', W') — e.g. conv-BN-ReLU — and ``second`` consumes
    it. For cost accounting, the last conv inside ``first`` produces the fused channels and the first
    conv inside ``second`` is the one that skipped channels save. ``forward(x) -> Tensor`` for use inside any
    block; :meth:`forward_with_policies` also returns the mask, under the name ``"fusion"``.
    """

    def __init__(self, first: nn.Module, second: nn.Module, fusion: Fusion) -> None:
        super().__init__()
        if not _convs(first) or not _convs(second):
            raise ValueError("FusedConvPair needs a Conv2d inside both `first` and `second`")
        self.first, self.fusion, self.second = first, fusion, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_policies(x)[0]

    def forward_with_policies(
        self,
        x: torch.Tensor,
        *,
        actions: Mapping[str, torch.Tensor] | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Policies]:
        """(output, {"fusion": mask (N, T, G, 3)}); ``actions`` may hold a forced mask under ``"fusion"``."""
        y = self.first(x)
        forced = (actions or {}).get("fusion")
        y, mask = self.fusion.decide_and_fuse(x, y, actions=forced, sample=sample, generator=generator)
        return self.second(y), {"fusion": mask}

    def fusion_cost_links(self):
        """(fusion, [(producer conv, channel offset)], [consumer convs]) for the cost counter."""
        yield self.fusion, [(_convs(self.first)[-1], 0)], [_convs(self.second)[0]]
