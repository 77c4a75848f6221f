"""Sparse execution of AdaFuse ResNets: the policy's skipped channels are never computed.

The policy of a block decides from the pooled block input, *before* the block's first conv, so a frame needs::

    conv1 on x_t       for the channels KEPT at t                       (output-channel slice)
    conv1 on x_{t-1}   for the channels REUSED at t that t-1 did not compute ("lazy reuse": x_{t-1} is cached)
    conv2              on the kept and reused channels only             (input-channel slice)

Reused channels that t−1 did compute come from its cached conv1 output. Summed over a clip this computes exactly
the conv1 channels Eq. 5 charges (kept at t, or reused at t+1: the same channels, some of them one frame later,
which is what a causal engine must do) and the conv2 inputs it charges. Two deviations: REUSE on a stream's first
frame copies the zero history, so it is executed as SKIP (Eq. 5 still charges its conv2 input); and a layer the
cost model (:mod:`adafuse.inference.cost_model`) runs densely computes all its channels.

Outputs equal those of the masked dense model (:class:`~adafuse.models.Recognizer` in eval mode) within float32
rounding: BatchNorm is folded into the convolutions (and the policy's BatchNorm1d into its first FC), and the
deterministic arg-max policy is evaluated on the same pooled inputs. ResNet backbones only, CPU only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from adafuse.errors import UserError
from adafuse.inference.cost_model import CostModel, DynamicLayer
from adafuse.inference.kernels import FoldedConv, gather_units, to_channels_last
from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE, actions_to_mask, mask_to_actions
from adafuse.layers.adaptive_fusion import AdaptiveFusion
from adafuse.layers.temporal_shift import TemporalShift
from adafuse.models.recognizer import Recognizer
from adafuse.models.resnet import BasicBlock, Bottleneck, ResNet

_NONE = np.empty(0, dtype=np.int64)


class FoldedPolicy:
    """An :class:`~adafuse.layers.AdaptiveFusion`'s policy net with its BatchNorm1d folded into the first FC.

    ``(v_prev (B, C_in), v (B, C_in)) -> actions (B, G)``: deterministic arg-max, as int ids of
    :class:`~adafuse.layers.Action` (KEEP / REUSE / SKIP), one per decision (a group of ``group_size`` channels).
    """

    def __init__(self, fusion: AdaptiveFusion) -> None:
        net = fusion.policy
        bn = net.bn
        scale = torch.rsqrt(bn.running_var.detach() + bn.eps)
        shift = -bn.running_mean.detach() * scale
        if bn.affine:
            scale, shift = scale * bn.weight.detach(), shift * bn.weight.detach() + bn.bias.detach()
        self.w0 = (net.fc0.weight.detach() * scale[:, None]).float().cpu()
        self.b0 = (net.fc0.bias.detach() * scale + shift).float().cpu()
        self.w1, self.b1 = net.fc1.weight.detach().float().cpu(), net.fc1.bias.detach().float().cpu()
        self.history = fusion.history
        self.decisions = fusion.decisions
        self.action_ids = np.array([int(a) for a in fusion.actions], dtype=np.int64)
        self.macs_per_frame = self.w0.numel() + self.w1.numel()
        self.executed_macs = 0

    def __call__(self, v_prev: torch.Tensor, v: torch.Tensor) -> np.ndarray:
        features = torch.cat([v_prev, v], dim=1) if self.history else v
        hidden = torch.addmm(self.b0, features, self.w0.t()).relu_()
        logits = torch.addmm(self.b1, hidden, self.w1.t()).view(v.shape[0], self.decisions, -1)
        self.executed_macs += v.shape[0] * self.macs_per_frame
        return self.action_ids[logits.argmax(dim=-1).numpy()]


@dataclass
class _BlockState:
    v_prev: torch.Tensor | None = None  # (B, C_in) pooled input of the previous frame; None: zeros
    x_prev: torch.Tensor | None = None  # (B, C_in, H, W) previous (shifted) input, for lazy reuse
    shift_prev: torch.Tensor | None = None  # (B, fold, H, W) previous input's first channels (causal TSM)
    # Per stream: the previous frame's conv1 output units that were computed, and unit -> position in it
    # (-1: not computed); a position array of None means there is no previous frame (start or reset).
    y_prev: list[torch.Tensor | None] = field(default_factory=list)
    pos_prev: list[np.ndarray | None] = field(default_factory=list)


@dataclass
class SparseState:
    """Everything a :class:`SparseRecognizer` carries from one frame to the next, for B independent streams.

    Attributes:
        batch_size: B.
        blocks: per residual block: previous pooled input (policy history), previous block input (lazy reuse),
            previous conv1 output (reuse), shifted-in channels (causal TSM).
        frames: (B,) frames seen by each stream since its last reset.
    """

    batch_size: int
    blocks: list[_BlockState]
    frames: np.ndarray


@dataclass
class ExecutionStats:
    """What the executor did since the last :meth:`SparseRecognizer.reset_stats`.

    Attributes:
        frames: frames processed, summed over streams.
        actions: (3,) channels kept / reused / skipped by the policies, over all fused blocks and frames.
        sliced: dynamic convolutions run channel-sliced; dense: run densely by the cost model's choice.
    """

    frames: int = 0
    actions: np.ndarray = field(default_factory=lambda: np.zeros(NUM_ACTIONS, dtype=np.int64))
    sliced: int = 0
    dense: int = 0

    def shares(self) -> dict[str, float]:
        """Keep / reuse / skip shares of the decided channels (zeros when no policy ran)."""
        total = max(int(self.actions.sum()), 1)
        return {name: float(n) / total for name, n in zip(("keep", "reuse", "skip"), self.actions, strict=True)}


_POOL_WEIGHTS: dict[int, torch.Tensor] = {}


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of an NHWC tensor, (B, C, H, W) -> (B, C), as one GEMV per frame: about 1.6× faster
    than ``mean`` over the two strided spatial dims at batch 1."""
    b, c, h, w = x.shape
    if h * w not in _POOL_WEIGHTS:
        _POOL_WEIGHTS[h * w] = torch.full((1, h * w), 1.0 / (h * w))
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    if b == 1:  # mm, not matmul: a broadcast batched product is a slower kernel
        return torch.mm(_POOL_WEIGHTS[h * w], rows[0])
    return torch.matmul(_POOL_WEIGHTS[h * w], rows).view(b, c)


class _Block:
    """One residual block, folded; ``step`` runs a frame of B streams."""

    def __init__(self, block: BasicBlock | Bottleneck, name: str, stage: int) -> None:
        self.name, self.stage = name, stage
        self.fusion_name = f"backbone.{name}.fusion"  # the key of its policy, as the recognizer names it
        self.bottleneck = isinstance(block, Bottleneck)
        fusion = block.fusion
        unit = fusion.group_size if fusion is not None else 1
        self.conv1 = FoldedConv(block.conv1, block.bn1, unit=unit)
        self.conv2 = FoldedConv(block.conv2, block.bn2, unit=unit)
        self.conv3 = FoldedConv(block.conv3, block.bn3) if self.bottleneck else None
        self.downsample = FoldedConv(block.downsample[0], block.downsample[1]) if block.downsample is not None else None
        # causal TSM (check_supported refuses the bidirectional one): C_in / shift_div channels from t-1
        self.fold = block.conv1.in_channels // block.shift.shift_div if isinstance(block.shift, TemporalShift) else 0
        self.shifted_shortcut = block.shifted_shortcut  # the projection shortcut takes the shifted input (BateNet)
        self.policy = FoldedPolicy(fusion) if fusion is not None else None
        self.reuse = self.policy is not None and self.policy.history
        self.unit = unit
        self.units = self.conv1.out_channels // unit
        self.arange = np.arange(self.units)
        self.not_computed = np.full(self.units, -1)  # shared, never written
        self.theta1 = self.theta2 = 1.0
        self.last_actions: np.ndarray | None = None

    def convs(self) -> list[FoldedConv]:
        return [c for c in (self.conv1, self.conv2, self.conv3, self.downsample) if c is not None]

    def step(self, x: torch.Tensor, st: _BlockState, forced: np.ndarray | None, stats: ExecutionStats) -> torch.Tensor:
        xs = x
        if self.fold:  # causal TSM: the first channels come from the previous frame (zeros at the start)
            xs = x.clone()
            xs[:, : self.fold] = 0.0 if st.shift_prev is None else st.shift_prev
            st.shift_prev = x[:, : self.fold].clone()
        identity = x
        if self.downsample is not None:
            identity = self.downsample.dense(xs if self.shifted_shortcut else x, relu=False)
        if self.policy is None:
            out = self._conv2(self.conv1.dense(xs, relu=True), identity, units=None)
        else:
            out = self._fused(xs, identity, st, forced, stats)
        return self.conv3.dense(out, relu=True, residual=identity) if self.bottleneck else out

    def _fused(
        self, xs: torch.Tensor, identity: torch.Tensor, st: _BlockState, forced: np.ndarray | None, stats
    ) -> torch.Tensor:
        v = _pool(xs)
        actions = self.policy(torch.zeros_like(v) if st.v_prev is None else st.v_prev, v)
        if forced is not None:
            actions = forced
        stats.actions += np.bincount(actions.ravel(), minlength=NUM_ACTIONS) * self.unit
        self.last_actions = actions  # for last_policies: what the executor did, not state it depends on
        st.v_prev = v
        outs = [self._stream(xs[i : i + 1], identity[i : i + 1], i, actions[i], st, stats) for i in range(xs.shape[0])]
        if self.reuse:
            st.x_prev = xs
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _conv2(self, x2: torch.Tensor, identity: torch.Tensor, *, units: torch.Tensor | None) -> torch.Tensor:
        """conv2 on all its input channels (``units`` None) or on ``units`` only; a BasicBlock adds the residual."""
        residual = None if self.bottleneck else identity
        if units is None:
            return self.conv2.dense(x2, relu=True, residual=residual)
        return self.conv2.sliced_in(x2, units, relu=True, residual=residual)

    def _conv1(self, x: torch.Tensor, units: np.ndarray, stats: ExecutionStats) -> tuple[torch.Tensor, bool]:
        """conv1's ``units`` of x, sliced or (by the cost model) all of them: returns (output, all computed)."""
        if units.size < self.theta1 * self.units:
            stats.sliced += 1
            return self.conv1.sliced_out(x, torch.from_numpy(units), relu=True), False
        stats.dense += 1
        return self.conv1.dense(x, relu=True), True

    def _stream(
        self, xs: torch.Tensor, identity: torch.Tensor, i: int, actions: np.ndarray, st: _BlockState, stats
    ) -> torch.Tensor:
        """One stream: xs (1, C_in, H, W) shifted input, actions (G,) -> conv2's output (1, C2, H', W')
        (for a BasicBlock already with the residual added and ReLU applied)."""
        keep = np.flatnonzero(actions == KEEP)
        stored = stored_pos = lazy = _NONE
        pos_prev = st.pos_prev[i]
        if self.reuse and pos_prev is not None:  # no previous frame: REUSE copies zeros, i.e. skips
            reused = np.flatnonzero(actions == REUSE)
            where = pos_prev[reused]
            hit = where >= 0
            stored, stored_pos, lazy = reused[hit], where[hit], reused[~hit]

        # Sources of conv2's input channels: (tensor, the units it provides, their positions in it or None when
        # it holds exactly those units in that order).
        sources = []
        y, pos = None, self.not_computed
        if keep.size:
            y, full = self._conv1(xs, keep, stats)
            if full:
                pos = self.arange
                sources.append((y, keep, None if keep.size == self.units else keep))
            else:
                pos = np.full(self.units, -1)
                pos[keep] = np.arange(keep.size)
                sources.append((y, keep, None))
        if stored.size:
            whole = stored.size * self.unit == st.y_prev[i].shape[1]  # positions are increasing: all of it, in order
            sources.append((st.y_prev[i], stored, None if whole else stored_pos))
        if lazy.size:  # reused channels t-1 did not compute: compute them now from the cached x_{t-1}
            y_lazy, full = self._conv1(st.x_prev[i : i + 1], lazy, stats)
            sources.append((y_lazy, lazy, lazy if full else None))
        st.y_prev[i], st.pos_prev[i] = y, pos

        active = sum(units.size for _, units, _ in sources)
        if active < self.theta2 * self.units:
            stats.sliced += 1
            parts = [t if at is None else gather_units(t, torch.from_numpy(at), self.unit) for t, _, at in sources]
            if len(parts) == 1:
                x2 = parts[0]
            elif parts:
                x2 = torch.cat(parts, dim=1)
            else:
                x2 = to_channels_last(xs.new_empty(1, 0, *self.conv1.output_size(*xs.shape[2:])))
            order = np.concatenate([units for _, units, _ in sources]) if sources else _NONE
            return self._conv2(x2, identity, units=torch.from_numpy(order))
        stats.dense += 1
        if active == self.units and len(sources) == 1 and sources[0][2] is None:
            return self._conv2(sources[0][0], identity, units=None)  # every unit, in order: all kept
        # One gather from all sources and a zero unit puts every channel in place (skipped channels read zero).
        zero = xs.new_zeros(1, *self.conv1.output_size(*xs.shape[2:]), self.unit).permute(0, 3, 1, 2)  # NHWC
        tensors = [t for t, _, _ in sources]
        index = np.full(self.units, sum(t.shape[1] for t in tensors) // self.unit)  # default: the zero unit
        base = 0
        for t, units, at in sources:
            index[units] = base + (np.arange(units.size) if at is None else at)
            base += t.shape[1] // self.unit
        x2 = gather_units(torch.cat([*tensors, zero], dim=1), torch.from_numpy(index), self.unit)
        return self._conv2(x2, identity, units=None)


class SparseRecognizer:
    """Inference-only AdaFuse ResNet that really skips the channels its policies skip, frame by frame.

    Build it from a trained :class:`~adafuse.models.Recognizer` with :meth:`from_model`; then run frames of B
    independent streams with :meth:`step` and an explicit :class:`SparseState`, or whole clips with
    :meth:`frame_logits`. Supported models: ResNet backbones; TSN (no shift) or causal TSM; no fusion, or
    :class:`~adafuse.layers.AdaptiveFusion` with deterministic evaluation; average consensus.
    """

    def __init__(self, *, stem: FoldedConv, blocks: list[_Block], head: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.stem = stem
        self.blocks = blocks
        self.head_weight, self.head_bias = head
        self.num_classes = self.head_weight.shape[0]
        self.stats = ExecutionStats()
        self.head_macs = 0
        self.cost_model = CostModel.always_sparse()

    @classmethod
    def from_model(
        cls, model: Recognizer, *, input_size: int = 224, cost_model: CostModel | None = None
    ) -> SparseRecognizer:
        """Fold a trained recognizer into an executor.

        Args:
            model: a ResNet AdaFuse / TSN / causal-TSM recognizer; its weights are copied (eval semantics).
            input_size: frame side the cost model is measured at.
            cost_model: when to slice; by default measured now on this machine (:meth:`CostModel.measure`) at the
                current thread count. ``CostModel.always_sparse()`` slices every policy-controlled conv.
        """
        check_supported(model)
        net: ResNet = model.backbone
        blocks = []
        for stage in range(net.num_stages):
            for j, block in enumerate(getattr(net, f"layer{stage + 1}")):
                blocks.append(_Block(block, f"layer{stage + 1}.{j}", stage))
        head = (model.head.weight.detach().float().cpu(), model.head.bias.detach().float().cpu())
        engine = cls(stem=FoldedConv(net.conv1, net.bn1), blocks=blocks, head=head)
        engine.set_cost_model(cost_model or CostModel.measure(engine.dynamic_layers(input_size)))
        return engine

    def set_cost_model(self, cost_model: CostModel) -> None:
        """Use ``cost_model``'s thresholds from the next frame on."""
        self.cost_model = cost_model
        for b in self.blocks:
            b.theta1 = cost_model.threshold(f"{b.name}.conv1")
            b.theta2 = cost_model.threshold(f"{b.name}.conv2")

    def dynamic_layers(self, input_size: int) -> dict[str, DynamicLayer]:
        """The policy-controlled convolutions, by name, with their input shapes for ``input_size²`` frames."""
        h, w = self.stem.output_size(input_size, input_size)
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # max-pool 3×3, stride 2, padding 1
        layers = {}
        for b in self.blocks:
            if b.policy is not None:
                layers[f"{b.name}.conv1"] = DynamicLayer(b.conv1, "out", (b.conv1.in_channels, h, w), lazy=b.reuse)
                h1, w1 = b.conv1.output_size(h, w)
                layers[f"{b.name}.conv2"] = DynamicLayer(b.conv2, "in", (b.conv2.in_channels, h1, w1))
            last = b.conv3 or b.conv2
            h, w = last.output_size(*b.conv2.output_size(*b.conv1.output_size(h, w)))
        return layers

    @property
    def fusion_names(self) -> list[str]:
        """Policy names of the fused blocks, in order, as the recognizer names them (``backbone.layer1.0.fusion``)."""
        return [b.fusion_name for b in self.blocks if b.policy is not None]

    @property
    def last_policies(self) -> dict[str, torch.Tensor]:
        """Policy masks (B, G, 3) of the last frame, by fusion name, as executed."""
        return {b.fusion_name: actions_to_mask(torch.from_numpy(b.last_actions))
                for b in self.blocks if b.policy is not None and b.last_actions is not None}  # fmt: skip

    @property
    def executed_macs(self) -> int:
        """Multiply-accumulates really executed since :meth:`reset_stats`: every conv from the shapes it ran,
        policy nets and the classifier (``in·out`` per linear layer, as :mod:`adafuse.flops` counts)."""
        convs = [self.stem] + [c for b in self.blocks for c in b.convs()]
        policies = [b.policy for b in self.blocks if b.policy is not None]
        return sum(c.executed_macs for c in convs) + sum(p.executed_macs for p in policies) + self.head_macs

    def reset_stats(self) -> None:
        """Zero :attr:`stats` and :attr:`executed_macs`."""
        self.stats = ExecutionStats()
        self.head_macs = 0
        for b in self.blocks:
            for c in b.convs():
                c.executed_macs = 0
            if b.policy is not None:
                b.policy.executed_macs = 0
        self.stem.executed_macs = 0

    def init_state(self, batch_size: int = 1) -> SparseState:
        """A fresh state for ``batch_size`` independent streams (every stream at its first frame)."""
        blocks = [
            _BlockState(y_prev=[None] * batch_size, pos_prev=[None] * batch_size) for _ in range(len(self.blocks))
        ]
        return SparseState(batch_size=batch_size, blocks=blocks, frames=np.zeros(batch_size, dtype=np.int64))

    def reset_state(self, state: SparseState, index: int | None = None) -> None:
        """Restart stream ``index`` (all streams when None) as if its next frame were its first."""
        streams = list(range(state.batch_size)) if index is None else [index]
        with torch.inference_mode():  # the state's tensors were made in inference mode
            for st in state.blocks:
                for i in streams:
                    st.y_prev[i] = st.pos_prev[i] = None
                    if st.v_prev is not None:
                        st.v_prev[i] = 0.0
                    if st.shift_prev is not None:
                        st.shift_prev[i] = 0.0
        state.frames[streams] = 0

    def step(
        self, frames: torch.Tensor, state: SparseState, *, actions: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Per-frame logits of the next frame of every stream: frames (B, 3, H, W) -> (B, K).

        ``actions`` forces the decisions: policy masks (B, G, 3) by fusion name (:attr:`fusion_names`); the policy
        nets still run, so their cost is measured. REUSE on a stream's first frame is executed
        as SKIP (it copies the zero history).
        """
        if frames.shape[0] != state.batch_size:
            raise ValueError(f"got {frames.shape[0]} frames for {state.batch_size} streams")
        forced = {k: mask_to_actions(v).cpu().numpy() for k, v in actions.items()} if actions is not None else {}
        unknown = sorted(set(forced) - set(self.fusion_names))
        if unknown:
            raise ValueError(f"forced actions for modules without a policy: {', '.join(unknown)}")
        with torch.inference_mode():
            x = self.stem.dense(to_channels_last(frames.float()), relu=True)
            x = F.max_pool2d(x, 3, 2, 1)
            for block, st in zip(self.blocks, state.blocks, strict=True):
                x = block.step(x, st, forced.get(block.fusion_name), self.stats)
            features = x.mean(dim=(2, 3))
            logits = torch.addmm(self.head_bias, features, self.head_weight.t())
        self.head_macs += self.head_weight.numel() * frames.shape[0]
        self.stats.frames += frames.shape[0]
        state.frames += 1
        return logits

    def frame_logits(self, clip: torch.Tensor) -> torch.Tensor:
        """Offline use: per-frame logits of N clips, each from a fresh stream: (N, T, 3, H, W) -> (N, T, K)."""
        state = self.init_state(clip.shape[0])
        return torch.stack([self.step(clip[:, t], state) for t in range(clip.shape[1])], dim=1)


def check_supported(model: Recognizer) -> None:
    """Raise :class:`~adafuse.errors.UserError` (one line) unless ``model`` can run causally and sparsely."""
    name = model.config.backbone
    if not isinstance(getattr(model, "backbone", None), ResNet):
        raise UserError(f"sparse execution supports 2D resnet* backbones only, got {name} ({model.config.method})")
    if model.consensus != "avg":
        raise UserError(f"streaming supports the average consensus only, not {model.config.method}")
    for block in model.backbone.blocks():
        if type(block.conv1) is not torch.nn.Conv2d:
            raise UserError(f"sparse execution does not support {type(block.conv1).__name__} (e.g. CGNet) convs")
        if isinstance(block.shift, TemporalShift) and not block.shift.causal:
            raise UserError(
                "this model uses the bidirectional (offline) temporal shift, which looks one frame ahead; "
                "streaming needs a causal model (build_model(..., causal_shift=True))"
            )
        fusion = block.fusion
        if fusion is not None and not isinstance(fusion, AdaptiveFusion):
            raise UserError(f"sparse execution supports learned AdaFuse policies only, not {type(fusion).__name__}")
