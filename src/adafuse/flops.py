"""Cost accounting: parameters, dense MACs per video, and the policy-aware cost of Eq. 5.

Units: multiply-accumulates (MACs), the convention of the paper and of TSM/mmaction2 ("GFLOPs" in
their tables are GMACs). Per video = T frames, one clip, one crop.

- **Dense cost** counts every convolution (``C_out·H_out·W_out·C_in/groups·k_h·k_w``, bias free; 3D convs
  also ``·T_out·k_t``), every linear layer (``in·out``), LSTM (``4·(in·h + h·h)`` per step) and the attention
  products of non-local blocks, policy nets included.
  BatchNorm, activations and pooling are not counted: BN folds into the preceding conv at deployment,
  the rest are not multiply-accumulates. (The official thop 0.0.31 numbers add BN at 2 ops/element and
  count linear layers twice; the difference is below 1% on every backbone of the paper.)
- **Adaptive cost** (Eq. 5) of a fused block: a channel of the producing conv is paid for at frame t if
  it is kept at t or reused at t+1 (the last frame only when kept — the official code reads the keep mask
  of frame T−2 there, available as ``last_frame="official"``); the consuming conv pays only for input
  channels that are not skipped. ``mode="upb"`` is the official upper bound that counts skip savings only.
  Channel-gated convs (CGNet) save ``(1 − 1/p)`` of the MACs of every gated-off output element. A frame choice
  (AR-Net: which resolution's network sees the frame, or skip it) pays only what its chosen action runs.

The counter is analytic and policy-aware: :func:`profile` makes a :class:`CostTable` once per model and input
size (on a meta-device twin of the model: the model itself is never touched), and :func:`adaptive_macs` is a pure
function of the policies a forward pass returned (:meth:`adafuse.models.Recognizer.forward_with_policies`) and
that table; no generic FLOP counter sees runtime skipping.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from adafuse.layers.actions import KEEP, REUSE, SKIP
from adafuse.layers.channel_gating import ChannelGatedConv2d
from adafuse.layers.nonlocal_block import BatchMatMul


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (shared policy FCs counted once). Works on the meta device."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class CostTable:
    """Static costs of a model at one input size, from :func:`profile`.

    Attributes:
        num_segments: T the table was made for (the model's).
        dense_macs: MACs per video with every channel computed.
        fusion: per fusion module name, (up, down): MACs per frame of each channel group (G,) in the conv
            producing it and in the convs reading it.
        gated: per channel-gated conv name, MACs per frame its gated-off elements can save (all gated off).
        choice: per frame-choice policy name (AR-Net), MACs per frame saved by each action (A,), relative to the
            dense pass (which runs every alternative on every frame).
        per_module: MACs per video of every counted module, for reports.
    """

    num_segments: int
    dense_macs: float
    fusion: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    gated: dict[str, float] = field(default_factory=dict)
    choice: dict[str, torch.Tensor] = field(default_factory=dict)
    per_module: dict[str, float] = field(default_factory=dict)

    @property
    def dense_gmacs(self) -> float:
        """Dense GMACs ("GFLOPs" in the paper's tables) per video."""
        return self.dense_macs / 1e9

    def to(self, device: torch.device | str) -> CostTable:
        """This table with its per-group costs on ``device``: a training step on a GPU then costs its masks without
        copying the table there (a host-to-device copy from pageable memory waits for the GPU) on every step."""
        fusion = {name: (up.to(device), down.to(device)) for name, (up, down) in self.fusion.items()}
        return dataclasses.replace(self, fusion=fusion)


_COUNTED = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM, nn.LSTMCell, BatchMatMul)


def _module_macs(module: nn.Module, inputs: tuple, output) -> float:
    if isinstance(module, ChannelGatedConv2d) and isinstance(output, tuple):
        output = output[0]  # (output, gate)
    if isinstance(module, nn.modules.conv._ConvNd):  # 1D, 2D and 3D: every output element, one kernel window
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        out = output[0]  # LSTM: (output, (h, c)); LSTMCell: (h, c)
        steps = out.numel() // module.hidden_size
        return steps * 4 * (module.input_size * module.hidden_size + module.hidden_size**2)
    if isinstance(module, BatchMatMul):  # (B, n, k) @ (B, k, m): n·m·k per batch item
        return output.numel() * inputs[0].shape[-1]
    return 0.0


def _meta_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device: no weights are copied, tied
    parameters stay tied (the shared policy FCs), and the caller's model is left exactly as it was."""
    memo: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def profile(model: nn.Module, *, input_size: int | tuple[int, int] = 224) -> CostTable:
    """Count the dense cost of a recognizer on one video (1, T, 3, H, W) at its own T (``model.num_segments``),
    the per-group costs of every fusion slot and the per-action savings of every frame choice. Runs a meta-device
    twin: instant, and ``model`` is untouched.

    ``model`` is a recognizer whose modules may expose ``fusion_cost_links()`` (channel fusions) and
    ``choice_cost_links()`` (frame choices: the policy module, and per action the modules its frames run).
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    num_segments = int(model.num_segments)
    twin = _meta_twin(model).eval()
    names = {m: n for n, m in twin.named_modules()}
    macs: dict[str, float] = {}

    def hook(module, inputs, output):
        macs[names[module]] = macs.get(names[module], 0.0) + _module_macs(module, inputs, output)

    for m in twin.modules():
        if isinstance(m, _COUNTED):
            m.register_forward_hook(hook)
    with torch.no_grad():
        twin(torch.empty(1, num_segments, 3, h, w, device="meta"))

    table = CostTable(num_segments=num_segments, dense_macs=float(sum(macs.values())), per_module=macs)
    per_frame = {name: value / num_segments for name, value in macs.items()}
    for module in twin.modules():
        for fusion, producers, consumers in getattr(module, "fusion_cost_links", lambda: ())():
            up = torch.zeros(fusion.channels, device="cpu")  # also under a meta default device
            for conv, offset in producers:
                up[offset : offset + conv.out_channels] = per_frame[names[conv]] / conv.out_channels
            down = torch.zeros(fusion.channels, device="cpu")
            for conv in consumers:
                down += per_frame[names[conv]] / conv.in_channels
            g = fusion.decisions
            table.fusion[names[fusion]] = (up.view(g, -1).sum(1), down.view(g, -1).sum(1))
    for name, m in twin.named_modules():
        if isinstance(m, ChannelGatedConv2d):
            table.gated[name] = per_frame[name] * (1 - 1 / m.partitions)

    def spent(modules: list[nn.Module]) -> float:  # MACs per frame of the counted layers under ``modules``
        leaves = {names[leaf] for m in modules for leaf in m.modules()}
        return sum(per_frame.get(leaf, 0.0) for leaf in leaves)

    for module in twin.modules():
        for policy, per_action in getattr(module, "choice_cost_links", lambda: ())():
            dense = spent([m for modules in per_action for m in modules])
            table.choice[names[policy]] = torch.tensor([dense - spent(m) for m in per_action], device="cpu")
    return table


def upstream_saving(mask: torch.Tensor, *, last_frame: str = "correct") -> torch.Tensor:
    """Share of the producing conv not computed: mask (N, T, G, 3) -> (N, T, G) in {0, 1} for hard masks.

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
    """MACs per video saved by one fusion slot: mask (N, T, G, 3), up/down (G,) per frame -> (N,).

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
    policies: Mapping[str, torch.Tensor],
    table: CostTable,
    *,
    batch_size: int,
    mode: str = "real",
    last_frame: str = "correct",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Policy-aware MACs per video (N,) of N = ``batch_size`` videos (Eq. 5), from the ``policies`` a forward pass
    returned (fusion masks (N, T, G, 3); CGNet gated-off shares (N·T,); frame choices (N, T, A), one-hot over the
    actions, each saving ``table.choice[name][a]`` MACs at that frame) and the model's cost table; on ``device``
    (default: the policies', else the host).

    Equals ``table.dense_macs`` for all-keep policies and for models without policies; differentiable in the
    masks for the efficiency loss. Every policy slot of the table must be given, with the table's T and G, and
    nothing else: a mismatch is a ``ValueError`` (a table made for another model, T or group size).
    """
    expected = set(table.fusion) | set(table.gated) | set(table.choice)
    if set(policies) != expected:
        missing, extra = sorted(expected - set(policies)), sorted(set(policies) - expected)
        raise ValueError(f"policies do not match the cost table: missing {missing or 'none'}, "
                         f"unknown {extra or 'none'}")
    if device is None and policies:
        device = next(iter(policies.values())).device
    cost = torch.full((batch_size,), table.dense_macs, device=device)  # made where the masks are: no copy, no sync
    t = table.num_segments
    for name, value in policies.items():
        if name in table.fusion:
            up, down = table.fusion[name]
            if tuple(value.shape) != (batch_size, t, up.numel(), 3):
                raise ValueError(f"policy {name} has shape {tuple(value.shape)}, the cost table expects "
                                 f"({batch_size}, {t}, {up.numel()}, 3) (N videos, T frames, G groups, 3 actions)")
            saved = fusion_saving(value, up, down, mode=mode, last_frame=last_frame)
        elif name in table.choice:
            savings = table.choice[name]
            if tuple(value.shape) != (batch_size, t, savings.numel()):
                raise ValueError(f"policy {name} has shape {tuple(value.shape)}, the cost table expects "
                                 f"({batch_size}, {t}, {savings.numel()}) (N videos, T frames, A actions)")
            saved = (value.float() * savings.to(value.device)).sum(dim=(1, 2))
        else:
            if value.numel() != batch_size * t:
                raise ValueError(f"channel gate {name} has {value.numel()} frames, expected {batch_size} x {t}")
            saved = value.float().view(batch_size, t).sum(dim=1) * table.gated[name]
        cost = cost.to(saved) - saved
    return cost
