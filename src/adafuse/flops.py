"""Cost accounting: parameters, dense MACs per video, and the policy-aware cost of Eq. 5.

Units: multiply-accumulates (MACs), the convention of the paper and of TSM/mmaction2 ("GFLOPs" in
their tables are GMACs). Per video = T frames, one clip, one crop.

- **Dense cost** counts every convolution (``C_out·H_out·W_out·C_in/groups·k_h·k_w``, bias free),
  every linear layer (``in·out``) and LSTM (``4·(in·h + h·h)`` per step), policy nets included.
  BatchNorm, activations and pooling are not counted: BN folds into the preceding conv at deployment,
  the rest are not multiply-accumulates. (The official thop 0.0.31 numbers add BN at 2 ops/element and
  count linear layers twice; the difference is below 1% on every backbone of the paper.)
- **Adaptive cost** (Eq. 5) of a fused block: a channel of the producing conv is paid for at frame t if
  it is kept at t or reused at t+1 (the last frame only when kept — the official code reads the keep mask
  of frame T−2 there, available as ``last_frame="official"``); the consuming conv pays only for input
  channels that are not skipped. ``mode="upb"`` is the official upper bound that counts skip savings only.
  Channel-gated convs (CGNet) save ``(1 − 1/p)`` of the MACs of every gated-off output element.

The counter is analytic and policy-aware: it reads the masks the last forward pass left in the fusion
modules; no generic FLOP counter sees runtime skipping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from adafuse.layers.actions import KEEP, REUSE, SKIP
from adafuse.layers.channel_gating import ChannelGatedConv2d
from adafuse.layers.fusion import Fusion


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (shared policy FCs counted once). Works on the meta device."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class CostTable:
    """Static costs of a model at one input size, from :func:`profile`.

    Attributes:
        num_segments: T the table was made for.
        dense_macs: MACs per video with every channel computed.
        fusion: per fusion module name, (up, down): MACs per frame per channel (C,) of the conv producing
            the channel and of the convs reading it.
        gated: per channel-gated conv name, MACs per frame its gated-off elements can save (all gated off).
        per_module: MACs per video of every counted module, for reports.
    """

    num_segments: int
    dense_macs: float
    fusion: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    gated: dict[str, float] = field(default_factory=dict)
    per_module: dict[str, float] = field(default_factory=dict)

    @property
    def dense_gmacs(self) -> float:
        """Dense GMACs ("GFLOPs" in the paper's tables) per video."""
        return self.dense_macs / 1e9


def _module_macs(module: nn.Module, inputs: tuple, output) -> float:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.LSTM):
        out = output[0]
        steps = out.numel() // module.hidden_size
        return steps * 4 * (module.input_size * module.hidden_size + module.hidden_size**2)
    return 0.0


def profile(model: nn.Module, *, num_segments: int, input_size: int | tuple[int, int] = 224) -> CostTable:
    """Count the dense cost of ``model`` on one video (1, T, 3, H, W), and the per-channel costs of every
    fusion slot. Runs on meta tensors: instant, and the model's own weights are untouched.

    ``model`` is a recognizer (input (N, T, 3, H, W)) or anything exposing ``fusion_cost_links()`` in its
    submodules. The masks left by an earlier forward pass are cleared.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    names = {m: n for n, m in model.named_modules()}
    macs: dict[str, float] = {}

    def hook(module, inputs, output):
        macs[names[module]] = macs.get(names[module], 0.0) + _module_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.LSTM))]
    state = {n: torch.empty_like(t, device="meta") for n, t in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            functional_call(model, state, (torch.empty(1, num_segments, 3, h, w, device="meta"),))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
        _clear_runtime_state(model)

    table = CostTable(num_segments=num_segments, dense_macs=float(sum(macs.values())), per_module=macs)
    per_frame = {name: value / num_segments for name, value in macs.items()}
    for module in model.modules():
        for fusion, producers, consumers in getattr(module, "fusion_cost_links", lambda: ())():
            up = torch.zeros(fusion.channels)
            for conv, offset in producers:
                up[offset : offset + conv.out_channels] = per_frame[names[conv]] / conv.out_channels
            down = torch.zeros(fusion.channels)
            for conv in consumers:
                down += per_frame[names[conv]] / conv.in_channels
            table.fusion[names[fusion]] = (up, down)
    for name, m in model.named_modules():
        if isinstance(m, ChannelGatedConv2d):
            table.gated[name] = per_frame[name] * (1 - 1 / m.partitions)
    return table


def _clear_runtime_state(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Fusion):
            m.last_mask = None
        elif isinstance(m, ChannelGatedConv2d):
            m.last_off_fraction = None


def upstream_saving(mask: torch.Tensor, *, last_frame: str = "correct") -> torch.Tensor:
    """Share of the producing conv not computed: mask (N, T, C, 3) -> (N, T, C) in {0, 1} for hard masks.

    Channel c need not be computed at t when it is neither kept at t nor reused at t+1; at the last frame,
    when it is not kept. ``last_frame="official"`` reproduces the official code, which uses frame T−2's keep
    mask there.
    """
    keep, reuse = mask[..., KEEP], mask[..., REUSE]
    inner = (1 - keep[:, :-1]) * (1 - reuse[:, 1:])
    if last_frame == "correct":
        last = 1 - keep[:, -1:]
    elif last_frame == "official":
        last = 1 - keep[:, -2:-1] if mask.shape[1] > 1 else 1 - keep[:, -1:]
    else:
        raise ValueError(f"last_frame must be 'correct' or 'official', got {last_frame!r}")
    return torch.cat([inner, last], dim=1)


def fusion_saving(
    mask: torch.Tensor, up: torch.Tensor, down: torch.Tensor, *, mode: str = "real", last_frame: str = "correct"
) -> torch.Tensor:
    """MACs per video saved by one fusion slot: mask (N, T, C, 3), up/down (C,) per frame -> (N,).

    Differentiable in the mask (straight-through Gumbel samples carry the gradient to the policy).
    Computed in float32 even under mixed precision: MAC counts overflow float16."""
    mask = mask.float()
    up, down = up.to(mask), down.to(mask)
    saved = (mask[..., SKIP] * down).sum(dim=(1, 2))
    if mode == "real":
        saved = saved + (upstream_saving(mask, last_frame=last_frame) * up).sum(dim=(1, 2))
    elif mode != "upb":
        raise ValueError(f"mode must be 'real' or 'upb', got {mode!r}")
    return saved


def adaptive_macs(
    model: nn.Module, table: CostTable, *, batch_size: int, mode: str = "real", last_frame: str = "correct"
) -> torch.Tensor:
    """Policy-aware MACs per video (N,) of the last forward pass of ``model`` over N = ``batch_size``
    videos (Eq. 5). Equals ``table.dense_macs`` for all-keep policies and for models without policies;
    differentiable for the efficiency loss."""
    cost = torch.full((batch_size,), table.dense_macs)
    for name, m in model.named_modules():
        if isinstance(m, Fusion) and m.last_mask is not None:
            saved = fusion_saving(m.last_mask, *table.fusion[name], mode=mode, last_frame=last_frame)
        elif isinstance(m, ChannelGatedConv2d) and m.last_off_fraction is not None:
            saved = m.last_off_fraction.view(-1, table.num_segments).sum(dim=1) * table.gated[name]
        else:
            continue
        if saved.shape[0] != batch_size:
            raise ValueError(f"{name} recorded a policy for {saved.shape[0]} videos, expected {batch_size}")
        cost = cost.to(saved) - saved
    return cost
