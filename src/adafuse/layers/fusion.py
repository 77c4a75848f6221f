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
    """Apply a policy mask: y (N·T, C, H, W), mask (N, T, G, 3) with C divisible by G -> (N·T, C, H, W), in y's
    memory format (NCHW or channels_last).

    ``out_t = keep_t·y_t + reuse_t·y_{t−1}`` in one output buffer: the history is a view of y one frame back, never
    a copy. ``previous`` (N, C, H, W) is the raw y of the frame before the clip (what REUSE copies at its first
    frame); zeros by default. A streaming step is the clip of one frame (T = 1) with the previous frame's y carried
    in. Under autograd a hand-written backward saves only y and the masks (y is already saved by the ReLU before
    it), where the textbook formulation would also keep the shifted history alive until the backward pass.
    """
    n, t, g, _ = mask.shape
    y6 = y.view(n, t, g, y.shape[1] // g, *y.shape[2:])
    mask = mask.to(y.dtype).view(n, t, g, 1, 1, 1, NUM_ACTIONS)
    keep, reuse = mask[..., KEEP], mask[..., REUSE]
    if previous is not None:  # streaming (inference and export): plain tensor ops
        return _fused(y6, keep, reuse, previous.view_as(y6[:, :1])).view_as(y)
    if torch.is_grad_enabled() and (y.requires_grad or mask.requires_grad) and not torch.jit.is_tracing():
        return _Fuse.apply(y6, keep, reuse).view_as(y)
    return _fused(y6, keep, reuse).view_as(y)  # inference, and tracing (ONNX export): plain tensor ops


def _fused(
    y6: torch.Tensor, keep: torch.Tensor, reuse: torch.Tensor, previous: torch.Tensor | None = None
) -> torch.Tensor:
    """``keep_t·y_t + reuse_t·y_{t−1}`` on y6 (N, T, G, C/G, H, W) and masks (N, T, G, 1, 1, 1), with ``previous``
    (N, 1, G, C/G, H, W) as ``y_{−1}`` (zeros when None), out of place: the form a tracer (ONNX export) records
    correctly; it mis-records an in-place update of a slice."""
    out = y6 * keep
    first = out[:, :1] if previous is None else torch.addcmul(out[:, :1], previous, reuse[:, :1])
    if y6.shape[1] == 1:
        return first
    return torch.cat([first, torch.addcmul(out[:, 1:], y6[:, :-1], reuse[:, 1:])], dim=1)


class _Fuse(torch.autograd.Function):
    """:func:`_fused` under autograd, with its backward written out: d/dy is the same keep/reuse arithmetic run
    backwards in time, d/dmask are per-group dot products of the incoming gradient with y (KEEP) and with y one frame
    back (REUSE)."""

    @staticmethod
    def forward(ctx, y6: torch.Tensor, keep: torch.Tensor, reuse: torch.Tensor) -> torch.Tensor:
        # y is needed only for the masks' gradients (straight-through training), not for forced or arg-max masks.
        ctx.save_for_backward(y6 if ctx.needs_input_grad[1] or ctx.needs_input_grad[2] else None, keep, reuse)
        out = y6 * keep  # then the reuse term added in place: two passes over y, where _fused needs three
        if y6.shape[1] > 1:
            out[:, 1:].addcmul_(y6[:, :-1], reuse[:, 1:])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y6, keep, reuse = ctx.saved_tensors
        grad_y = grad_keep = grad_reuse = None
        dims = (3, 4, 5)
        if ctx.needs_input_grad[0]:
            grad_y = grad * keep
            if grad.shape[1] > 1:
                grad_y[:, :-1].addcmul_(grad[:, 1:], reuse[:, 1:])
        if ctx.needs_input_grad[1]:
            grad_keep = (grad * y6).sum(dim=dims, keepdim=True)
        if ctx.needs_input_grad[2]:
            grad_reuse = torch.zeros_like(reuse)
            if grad.shape[1] > 1:
                grad_reuse[:, 1:] = (grad[:, 1:] * y6[:, :-1]).sum(dim=dims, keepdim=True)
        return grad_y, grad_keep, grad_reuse


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
