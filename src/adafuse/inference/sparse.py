"""The executor: AdaFuse ResNets run so that the channel groups a policy skips are never computed.

Two ways to run a model, on the same folded weights and kernels:

- **clip mode** (:meth:`SparseRecognizer.forward_with_policies`, the paper's evaluation: a clip of T frames): block
  by block over all N·T frames. A block pools its input, runs its policy for all frames as one GEMM, then::

      conv1   computes, for frame t, exactly the groups kept at t or reused at t+1     (output-sparse)
      conv2   reads group g of frame t from frame t's conv1 output (KEEP), frame t−1's (REUSE), or not at all (SKIP)

  which are the channels Eq. 5 charges (:func:`adafuse.flops.adaptive_macs`). The stem, conv3, the shortcuts and
  the head run dense, batched over the clip. Any shift runs, the bidirectional TSM included.
- **streaming** (:meth:`SparseRecognizer.step`, one frame of B streams at a time, causal): the conv1 outputs of
  the previous and the current frame share a 2-row ring buffer that conv2 reads from. A group reused at t that
  frame t−1 did not compute is computed at t from the cached block input of t−1 (*lazy reuse*: frame t−1 could
  not know t's policy), so a stream computes the same channels as the clip, some of them one frame later.

The policy-controlled convolutions run on :class:`~adafuse.inference.group_conv.GroupSparseConv` (weights packed
once per group, REUSE a pointer one row up, SKIP never in the reduction); everything else on oneDNN with
pre-packed weights (:class:`~adafuse.inference.kernels.FoldedConv`). ``dispatch`` chooses, per block:

- ``"auto"`` (default): the group kernels, except that a conv whose groups are all active in the call (conv1:
  every group computed; conv2: every group KEEP) runs dense on oneDNN, and that policies over groups of fewer than
  :data:`MIN_KERNEL_GROUP` channels run dense with the masks applied (per-channel decisions do not pay: the
  kernel's inner GEMMs would be a few channels wide);
- ``"kernel"``: the group kernels always (what the exactness tests and Eq. 5 accounting check);
- ``"dense"``: oneDNN for every conv, skipped channels zeroed and reused ones copied (the masked model, folded).

Outputs equal those of the masked dense model (:meth:`adafuse.models.Recognizer.forward_with_policies` in eval
mode) within float32 rounding: BatchNorm is folded into the convolutions (and the policy's BatchNorm1d into its
first FC) and the deterministic arg-max policy sees the same pooled inputs. :attr:`ExecutionStats.macs` counts
what really ran. With the group kernels it equals Eq. 5 on the same masks except for one point: REUSE at a clip's
(or stream's) first frame copies the zero history, so it is executed as SKIP, while Eq. 5 still charges that
group as a conv2 input. ResNet backbones only, CPU only, float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from adafuse.errors import UserError
from adafuse.inference.extension import extension_ops
from adafuse.inference.heap import retain_freed_memory
from adafuse.inference.kernels import FoldedConv, global_avg_pool
from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE, mask_to_actions
from adafuse.layers.adaptive_fusion import AdaptiveFusion
from adafuse.layers.fusion import Policies
from adafuse.layers.temporal_shift import TemporalShift
from adafuse.models.recognizer import Recognizer
from adafuse.models.resnet import BasicBlock, Bottleneck, ResNet

DISPATCH = ("auto", "kernel", "dense")
# Below this group size "auto" runs a block dense with masks: the group kernel's GEMMs are group_size channels wide,
# and at 4 channels they run slower than the whole dense convolution (docs/speed.md).
MIN_KERNEL_GROUP = 8
# Action id -> its one-hot policy mask row. The per-block masks and indices of a frame are a few dozen values: they
# are built with NumPy, whose calls cost a small fraction of a PyTorch operator's dispatch (docs/speed.md).
_ONE_HOT = np.eye(NUM_ACTIONS, dtype=np.float32)
# The action ids as plain ints: NumPy compares an array with an IntEnum member through Python-level attribute lookups.
_KEEP, _REUSE = int(KEEP), int(REUSE)


def _policy_mask(ids: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Action ids (..., G) -> the one-hot policy mask, viewed as ``shape`` (..., G, 3): what
    :func:`~adafuse.layers.actions.actions_to_mask` builds, for ids the executor made itself (no validation pass)."""
    return torch.from_numpy(_ONE_HOT[ids]).view(shape)


def _panels(weight: torch.Tensor) -> torch.Tensor:
    """A linear layer's weight (N, K) -> the compiled kernels' (N'/16, K, 16) panels, N padded to N' (a multiple
    of 16) with zero rows."""
    padded = F.pad(weight, (0, 0, 0, -weight.shape[0] % 16))
    return padded.view(-1, 16, weight.shape[1]).transpose(1, 2).contiguous()


class FoldedPolicy:
    """An :class:`~adafuse.layers.AdaptiveFusion`'s policy net with its BatchNorm1d folded into the first FC.

    ``(v_prev (B, C_in) or None, v (B, C_in)) -> action ids (B, G)`` (int64 values of
    :class:`~adafuse.layers.Action`): deterministic arg-max, one decision per group of ``group_size`` channels.
    With ``clip_len`` T and no ``v_prev``, the rows of v are clips of T frames and each row's previous frame is the
    row above (zeros at a clip's first frame). On the compiled ``policy`` op (``csrc/policy.cpp``: both layers and
    the arg-max in one call) when the extension is built and ``cpu_kernel`` is set, on two ``addmm`` otherwise
    (``cpu_kernel=False``: only the folded weights are wanted, e.g. to move them to a GPU).
    """

    def __init__(self, fusion: AdaptiveFusion, *, cpu_kernel: bool = True) -> None:
        net = fusion.policy
        bn = net.bn
        scale = torch.rsqrt(bn.running_var.detach() + bn.eps)
        shift = -bn.running_mean.detach() * scale
        if bn.affine:
            scale, shift = scale * bn.weight.detach(), shift * bn.weight.detach() + bn.bias.detach()
        self.w0 = (net.fc0.weight.detach() * scale[:, None]).float().cpu()
        self.b0 = (net.fc0.bias.detach() * scale + shift).float().cpu()
        self.w1, self.b1 = net.fc1.weight.detach().float().cpu(), net.fc1.bias.detach().float().cpu()
        self.w0t, self.w1t = self.w0.t(), self.w1.t()  # the GEMMs' (in, out) operands, transposed views made once
        self.history = fusion.history
        self.decisions = fusion.decisions
        self.action_ids = torch.tensor([int(a) for a in fusion.actions], dtype=torch.int64)
        # the full action set in Action order: the arg-max is the id (no lookup)
        self.ids_are_choices = self.action_ids.tolist() == list(range(NUM_ACTIONS))
        self.macs_per_frame = self.w0.numel() + self.w1.numel()  # in·out per linear layer, as adafuse.flops counts
        self._ops = extension_ops() if cpu_kernel else None
        if self._ops is not None:  # fc1's input is fc0's output padded to whole panels: zero rows, zero weights
            w1 = F.pad(self.w1, (0, -self.w1.shape[1] % 16))
            self._packed = (_panels(self.w0), F.pad(self.b0, (0, -self.b0.numel() % 16)), _panels(w1),
                            F.pad(self.b1, (0, -self.b1.numel() % 16)))  # fmt: skip

    def __call__(self, v_prev: torch.Tensor | None, v: torch.Tensor, *, clip_len: int = 0) -> torch.Tensor:
        if self._ops is not None:
            choice = torch.empty(v.shape[0], self.decisions, dtype=torch.int64)
            self._ops.policy(v.contiguous(), v_prev, clip_len, *self._packed, self.decisions,
                             self.w1.shape[0] // self.decisions, choice)  # fmt: skip
        else:
            if self.history and v_prev is None and clip_len > 0:  # the row above within each clip, zeros first
                v3 = v.view(-1, clip_len, v.shape[1])
                v_prev = torch.cat([torch.zeros_like(v3[:, :1]), v3[:, :-1]], dim=1).view_as(v)
            features = torch.cat([torch.zeros_like(v) if v_prev is None else v_prev, v], dim=1) if self.history else v
            hidden = torch.addmm(self.b0, features, self.w0t).relu_()
            choice = torch.addmm(self.b1, hidden, self.w1t).view(v.shape[0], self.decisions, -1).argmax(dim=-1)
        return choice if self.ids_are_choices else self.action_ids[choice]


@dataclass
class ExecutionStats:
    """What the executor did since the last :meth:`SparseRecognizer.reset_stats`.

    Attributes:
        frames: frames processed, summed over clips and streams.
        macs: multiply-accumulates really executed: every conv from the channels it ran, the policy nets and the
            classifier (``in·out`` per linear layer, as :mod:`adafuse.flops` counts).
        actions: (3,) channels kept / reused / skipped by the policies, over all fused blocks and frames.
        kernel_calls / dense_calls: policy-controlled convolutions run on the group kernels / densely on oneDNN (a
            conv1 none of whose groups is needed is not run, and counts in neither).
    """

    frames: int = 0
    macs: int = 0
    actions: np.ndarray = field(default_factory=lambda: np.zeros(NUM_ACTIONS, dtype=np.int64))
    kernel_calls: int = 0
    dense_calls: int = 0

    def shares(self) -> dict[str, float]:
        """Keep / reuse / skip shares of the decided channels (zeros when no policy ran)."""
        total = max(int(self.actions.sum()), 1)
        return {name: float(n) / total for name, n in zip(("keep", "reuse", "skip"), self.actions, strict=True)}


def _empty_like_output(conv: FoldedConv, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """An uninitialised NHWC output buffer of ``conv`` for input x: (rows or B, C_out, H', W')."""
    h, w = conv.output_size(*x.shape[2:])
    return torch.empty(rows or x.shape[0], h, w, conv.out_channels).permute(0, 3, 1, 2)


@dataclass
class _BlockState:
    """A fused block's carry-over between frames of B streams (streaming)."""

    v_prev: torch.Tensor | None = None  # (B, C_in) pooled input of the previous frame; None: zeros
    shift_prev: torch.Tensor | None = None  # (B, fold, H, W) previous input's first channels (causal TSM)
    x_prev: torch.Tensor | None = None  # (B, C_in, H, W) previous shifted input, for lazy reuse
    ring: torch.Tensor | None = None  # (2B, C1, H1, W1) conv1 outputs: rows [slot·B, slot·B + B) hold frame t−1's
    slot: int = 0
    computed: np.ndarray | None = None  # (B, G) bool: the groups of frame t−1 in the ring (None: nothing)
    y_prev: torch.Tensor | None = None  # (B, C1, H1, W1) previous conv1 output, dense dispatch


@dataclass
class SparseState:
    """Everything a :class:`SparseRecognizer` carries from one frame to the next, for B independent streams.

    Attributes:
        batch_size: B.
        blocks: per residual block: the previous pooled input (policy history), the previous block input (lazy
            reuse), the conv1 ring buffer (reuse), the shifted-in channels (causal TSM).
        frames: (B,) frames seen by each stream since its last reset.
    """

    batch_size: int
    blocks: list[_BlockState]
    frames: np.ndarray


class _Block:
    """One residual block, folded: :meth:`clip` runs all frames of N clips, :meth:`step` one frame of B streams.

    ``pool_output``: whatever reads this block's output pools it (the next block's policy, or the head), so a
    bottleneck returns that pool with its output, summed by the conv3 kernel as it writes the output."""

    def __init__(
        self, block: BasicBlock | Bottleneck, name: str, stage: int, dispatch: str, *, pool_output: bool
    ) -> None:
        self.name, self.stage = name, stage
        self.pool_output = pool_output
        self.fusion_name = f"backbone.{name}.fusion"  # the key of its policy, as the recognizer names it
        self.bottleneck = isinstance(block, Bottleneck)
        self.conv1 = FoldedConv(block.conv1, block.bn1)
        self.conv2 = FoldedConv(block.conv2, block.bn2)
        self.conv3 = FoldedConv(block.conv3, block.bn3) if self.bottleneck else None
        self.downsample = FoldedConv(block.downsample[0], block.downsample[1]) if block.downsample is not None else None
        shift = block.shift if isinstance(block.shift, TemporalShift) else None
        self.fold = block.conv1.in_channels // shift.shift_div if shift is not None else 0
        self.causal = shift is None or shift.causal
        fusion = block.fusion
        self.shifted_shortcut = block.shifted_shortcut  # the projection shortcut takes the shifted input (BateNet)
        self.policy = FoldedPolicy(fusion) if fusion is not None else None
        self.group_size = fusion.group_size if fusion is not None else 0
        self.groups = block.conv1.out_channels // self.group_size if fusion is not None else 0
        self.dispatch = dispatch
        if self.policy is not None and dispatch != "dense":
            try:
                self.sparse1 = self.conv1.group_sparse(self.group_size, sparse_input=False)  # output groups only
                self.sparse2 = self.conv2.group_sparse(self.group_size)
            except ValueError:  # e.g. a group size above the kernel's 64 channels
                if dispatch == "kernel":
                    raise
                self.dispatch = "dense"
            if dispatch == "auto" and self.group_size < MIN_KERNEL_GROUP:
                self.dispatch = "dense"

    def _residual_branch_end(
        self, out2: torch.Tensor, identity: torch.Tensor, stats: ExecutionStats, *, in_place: bool,
        mean2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A bottleneck's conv3 + residual + ReLU (a BasicBlock's residual is already in ``out2``, and ``mean2`` is
        its pool when conv2 summed it) -> (block output, its global average pool (B, C) with ``pool_output``, or
        None). ``in_place``: the output may overwrite ``identity`` (nothing reads it afterwards)."""
        if not self.bottleneck:
            return out2, mean2
        if self.pool_output:
            out, mean = self.conv3.dense_and_mean(out2, relu=True, residual=identity, in_place=in_place)
        else:
            out, mean = self.conv3.dense(out2, relu=True, residual=identity, in_place=in_place), None
        return self._count_dense(stats, self.conv3, out), mean

    def _count_dense(self, stats: ExecutionStats, conv: FoldedConv, out: torch.Tensor) -> torch.Tensor:
        stats.macs += conv.macs(out.shape)
        return out

    def _identity(self, x: torch.Tensor, xs: torch.Tensor, stats: ExecutionStats) -> torch.Tensor:
        """The shortcut: x, or the projection of x (of the shifted input xs with ``shifted_shortcut``, BateNet)."""
        if self.downsample is None:
            return x
        return self._count_dense(stats, self.downsample, self.downsample.dense(xs if self.shifted_shortcut else x,
                                                                               relu=False))  # fmt: skip

    def _dense_pair(self, xs: torch.Tensor, identity: torch.Tensor, stats: ExecutionStats) -> torch.Tensor:
        """conv1 and conv2 (with a BasicBlock's residual, into its buffer: a block without a policy is never read by
        a lazy reuse, so nothing reads its input afterwards) dense, no policy."""
        y1 = self._count_dense(stats, self.conv1, self.conv1.dense(xs, relu=True))
        residual = None if self.bottleneck else identity
        return self._count_dense(stats, self.conv2, self.conv2.dense(y1, relu=True, residual=residual, in_place=True))

    # --- clip mode ------------------------------------------------------------------------------------------------

    def clip(
        self, x: torch.Tensor, v: torch.Tensor | None, n: int, t: int, forced: torch.Tensor | None, stats
    ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None]:
        """x (N·T, C_in, H, W) NHWC, rows ordered (clip, frame), and its global average pool v (N·T, C_in) or None
        -> (block output, its pool or None, action ids (N·T, G) as a NumPy int64 array, or None)."""
        xs = self._shift_clip(x, n, t)
        identity = self._identity(x, xs, stats)
        if self.policy is None:  # clip mode: nothing reads the block input (or its projection) after conv3
            out, mean = self._residual_branch_end(self._dense_pair(xs, identity, stats), identity, stats,
                                                  in_place=True)  # fmt: skip
            return out, mean, None
        rows = xs.shape[0]
        # the pool of the shifted input is the shifted pool (the shift moves whole channel planes between frames)
        v = global_avg_pool(xs) if v is None else self._shift_clip(v, n, t)
        ids = self.policy(None, v, clip_len=t)  # [v_{t-1}, v_t], v_{-1} = 0, for all frames of the clip at once
        stats.macs += rows * self.policy.macs_per_frame
        ids = (ids if forced is None else forced).numpy()
        stats.actions += np.bincount(ids.reshape(-1), minlength=NUM_ACTIONS) * self.group_size
        keep = ids == _KEEP
        reuse = ids == _REUSE
        reuse[0::t] = False  # REUSE at a clip's first frame copies y_{-1} = 0: executed as SKIP
        if self.dispatch == "dense":
            out2, mean2 = self._masked_dense_clip(xs, identity, keep, reuse, n, t, stats), None
        else:
            need = keep.copy()  # conv1 at t: kept at t or reused at t+1 (reuse at a first frame is already off)
            need[:-1] |= reuse[1:]
            row = np.arange(rows)[:, None]
            source = np.where(keep, row, np.where(reuse, row - 1, -1))  # the conv1 row conv2 reads per group
            y1 = self._sparse_conv1(xs, None, need, np.count_nonzero(need), stats)
            n_keep = np.count_nonzero(keep)
            # clip mode: nothing reads the block input (or its projection) after conv2, which may write over it
            out2, mean2 = self._sparse_conv2(y1, source, n_keep, n_keep + np.count_nonzero(reuse), identity, stats,
                                             in_place=True)  # fmt: skip
        out, mean = self._residual_branch_end(out2, identity, stats, in_place=True, mean2=mean2)
        return out, mean, ids

    def _shift_clip(self, x: torch.Tensor, n: int, t: int) -> torch.Tensor:
        """The temporal shift over whole clips (bidirectional or causal), zeros at the clip ends: x (N·T, C, ...)
        (activations, or their pools)."""
        if not self.fold:
            return x
        f = self.fold
        xs = x.clone()  # keeps NHWC
        x5, xs5 = x.view(n, t, *x.shape[1:]), xs.view(n, t, *x.shape[1:])
        if self.causal:  # channels [0, f) from t-1
            xs5[:, 1:, :f] = x5[:, :-1, :f]
            xs5[:, 0, :f] = 0.0
        else:  # channels [0, f) from t+1, [f, 2f) from t-1
            xs5[:, :-1, :f] = x5[:, 1:, :f]
            xs5[:, -1, :f] = 0.0
            xs5[:, 1:, f : 2 * f] = x5[:, :-1, f : 2 * f]
            xs5[:, 0, f : 2 * f] = 0.0
        return xs

    def _masked_dense_clip(self, xs, identity, keep, reuse, n, t, stats) -> torch.Tensor:
        y1 = self._count_dense(stats, self.conv1, self.conv1.dense(xs, relu=True))
        fused = torch.empty_like(y1)
        torch.mul(y1, self._channel_mask(keep), out=fused)
        if reuse.any():
            f5, y5 = fused.view(n, t, *y1.shape[1:]), y1.view(n, t, *y1.shape[1:])
            r5 = self._channel_mask(reuse).view(n, t, -1, 1, 1)
            f5[:, 1:] += y5[:, :-1] * r5[:, 1:]
        stats.dense_calls += 2
        residual = None if self.bottleneck else identity
        # into a BasicBlock's residual buffer: the masked path never reads a block input again (no lazy reuse)
        out = self.conv2.dense(fused, relu=True, residual=residual, in_place=True)
        return self._count_dense(stats, self.conv2, out)

    def _channel_mask(self, groups: np.ndarray) -> torch.Tensor:
        """(B, G) bool -> (B, C, 1, 1) float, each group's value over its channels."""
        return torch.from_numpy(np.repeat(groups, self.group_size, axis=1).astype(np.float32))[:, :, None, None]

    def _sparse_conv1(self, xs, out: torch.Tensor | None, need: np.ndarray, n_need: int, stats) -> torch.Tensor:
        """conv1's ``need`` (B, G) bool groups of xs (``n_need`` of them), written into ``out`` (a fresh buffer when
        None); dense on oneDNN when every group is needed (``"auto"``), nothing run when none is."""
        if self.dispatch == "auto" and n_need == need.size:
            stats.dense_calls += 1
            y = self._count_dense(stats, self.conv1, self.conv1.dense(xs, relu=True))
            return y if out is None else out.copy_(y)
        out = _empty_like_output(self.conv1, xs) if out is None else out
        if n_need == 0:  # conv2 reads no group of it (a whole stage skipped: the paper's early stages at 32 channels)
            return out
        stats.kernel_calls += 1
        self.sparse1(xs, out=out, out_groups=torch.from_numpy(need), in_source=None, relu=True)
        stats.macs += n_need * out.shape[2] * out.shape[3] * self.group_size * self._taps_macs(self.conv1)
        return out

    def _sparse_conv2(
        self, y1, source: np.ndarray, n_keep: int, n_read: int, identity, stats, *, rows=None, in_place: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """conv2 reading group g of sample b from row ``source[b, g]`` (int64) of y1 (-1: skipped; ``n_read`` groups
        are read, ``n_keep`` of them from the sample's own row); a BasicBlock adds the residual. Dense on oneDNN when
        every group of every sample is kept (``"auto"``); ``rows`` (B rows of y1 that the samples own) are then its
        input. ``in_place``: a BasicBlock's conv2 may write its output over the residual ``identity``.
        -> (output, its global average pool when the group kernel ran a BasicBlock's last conv with ``pool_output``,
        else None)."""
        residual = None if self.bottleneck else identity
        if self.dispatch == "auto" and n_keep == source.size:
            stats.dense_calls += 1
            x2 = y1 if rows is None else y1[rows]
            out = self.conv2.dense(x2, relu=True, residual=residual, in_place=in_place)
            return self._count_dense(stats, self.conv2, out), None
        stats.kernel_calls += 1
        if in_place and residual is not None:
            out = residual  # each element of the residual is read by the kernel just before it is overwritten
        else:
            out = _empty_like_output(self.conv2, y1, rows=source.shape[0])
        mean = torch.empty(out.shape[:2]) if self.pool_output and not self.bottleneck else None
        self.sparse2(y1, out=out, out_groups=None, in_source=torch.from_numpy(source), relu=True, residual=residual,
                     mean=mean)  # fmt: skip
        stats.macs += n_read * out.shape[2] * out.shape[3] * self.group_size * self._taps_macs(self.conv2, per="in")
        return out, mean

    @staticmethod
    def _taps_macs(conv: FoldedConv, per: str = "out") -> int:
        """MACs per output pixel of one group of output (``per="out"``) or input channels, over the taps."""
        other = conv.in_channels if per == "out" else conv.out_channels
        return other * conv.kernel_size[0] * conv.kernel_size[1]

    # --- streaming ------------------------------------------------------------------------------------------------

    def step(
        self, x: torch.Tensor, v: torch.Tensor | None, st: _BlockState, first: np.ndarray | None, forced, stats
    ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None]:
        """One frame of B streams: x (B, C_in, H, W) NHWC, its pool v (B, C_in) or None, ``first`` (B,) bool (a
        stream's first frame; None when no stream is at its first) -> (block output, its pool or None, action ids
        (B, G) as NumPy int64, or None)."""
        xs = x
        if self.fold:  # causal TSM: the first channels come from the previous frame (zeros at the start)
            xs = x.clone()
            xs[:, : self.fold] = 0.0 if st.shift_prev is None else st.shift_prev
            if first is not None:
                xs[torch.from_numpy(first), : self.fold] = 0.0
            st.shift_prev = x[:, : self.fold].clone()
        identity = self._identity(x, xs, stats)
        if self.policy is None:
            out, mean = self._residual_branch_end(self._dense_pair(xs, identity, stats), identity, stats,
                                                  in_place=True)  # fmt: skip
            return out, mean, None
        b = xs.shape[0]
        v = global_avg_pool(xs) if v is None or self.fold else v
        v_prev = st.v_prev
        if v_prev is not None and first is not None:
            v_prev = torch.where(torch.from_numpy(first)[:, None], 0.0, v_prev)
        ids = self.policy(v_prev, v)
        stats.macs += b * self.policy.macs_per_frame
        st.v_prev = v
        ids = (ids if forced is None else forced).numpy()
        stats.actions += np.bincount(ids.reshape(-1), minlength=NUM_ACTIONS) * self.group_size
        keep = ids == _KEEP
        reuse = ids == _REUSE
        if first is not None:
            reuse &= ~first[:, None]  # REUSE at a first frame copies zeros: executed as SKIP
        if self.dispatch == "dense":
            out2, mean2 = self._masked_dense_step(xs, identity, st, keep, reuse, stats), None
        else:
            out2, mean2 = self._sparse_step(xs, identity, st, keep, reuse, stats)
        # the next frame's lazy reuse reads this block input (st.x_prev) again: it must not be overwritten
        out, mean = self._residual_branch_end(out2, identity, stats, in_place=identity is not st.x_prev,
                                              mean2=mean2)  # fmt: skip
        return out, mean, ids

    def _sparse_step(
        self, xs, identity, st: _BlockState, keep, reuse, stats
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """conv1 (lazy reuse included) and conv2 of one frame -> (conv2's output, its pool or None)."""
        b = xs.shape[0]
        h, w = self.conv1.output_size(*xs.shape[2:])
        if st.ring is None or st.ring.shape != (2 * b, self.conv1.out_channels, h, w):
            st.ring, st.slot, st.computed = _empty_like_output(self.conv1, xs, rows=2 * b), 0, None
        prev, cur = st.slot, 1 - st.slot
        prev_rows, cur_rows = slice(prev * b, prev * b + b), slice(cur * b, cur * b + b)
        if st.computed is not None:  # lazy reuse: groups reused now that frame t-1 did not compute (often none)
            lazy = reuse & ~st.computed
            self._sparse_conv1(st.x_prev, st.ring[prev_rows], lazy, np.count_nonzero(lazy), stats)
        n_keep = np.count_nonzero(keep)
        self._sparse_conv1(xs, st.ring[cur_rows], keep, n_keep, stats)
        row = np.arange(b)[:, None]
        source = np.where(keep, row + cur * b, np.where(reuse, row + prev * b, -1))
        # the next frame's lazy reuse reads this block input (xs) again: conv2 writes over identity only if it is not xs
        out2_and_mean = self._sparse_conv2(st.ring, source, n_keep, n_keep + np.count_nonzero(reuse), identity, stats,
                                           rows=cur_rows, in_place=identity is not xs)  # fmt: skip
        st.computed, st.x_prev, st.slot = keep, xs, cur
        return out2_and_mean

    def _masked_dense_step(self, xs, identity, st: _BlockState, keep, reuse, stats) -> torch.Tensor:
        y1 = self._count_dense(stats, self.conv1, self.conv1.dense(xs, relu=True))
        fused = torch.empty_like(y1)
        torch.mul(y1, self._channel_mask(keep), out=fused)
        if bool(reuse.any()):
            fused += st.y_prev * self._channel_mask(reuse)
        st.y_prev = y1
        stats.dense_calls += 2
        residual = None if self.bottleneck else identity
        # into a BasicBlock's residual buffer: the masked path never reads a block input again (no lazy reuse)
        out = self.conv2.dense(fused, relu=True, residual=residual, in_place=True)
        return self._count_dense(stats, self.conv2, out)


class SparseRecognizer:
    """Inference-only AdaFuse ResNet that really skips the channel groups its policies skip.

    Build it from a trained :class:`~adafuse.models.Recognizer` with :meth:`from_model`; run whole clips with
    :meth:`forward_with_policies` / :meth:`frame_logits` (clip mode), or frames of B independent streams with
    :meth:`step` and an explicit :class:`SparseState` (streaming). Supported models: ResNet backbones; no shift,
    TSM (bidirectional in clip mode only) or causal TSM; no fusion, or :class:`~adafuse.layers.AdaptiveFusion`
    with deterministic evaluation; average consensus.

    Building one calls :func:`~adafuse.inference.heap.retain_freed_memory` (process-wide: glibc keeps freed memory
    instead of returning it to the system, so activations are not page-faulted in again on every call).
    """

    def __init__(self, *, stem: FoldedConv, blocks: list[_Block], head: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.stem = stem
        self.blocks = blocks
        self.head_weight, self.head_bias = head
        self.num_classes = self.head_weight.shape[0]
        self.causal = all(b.causal for b in blocks)
        self.stats = ExecutionStats()
        # a clip's activations would otherwise be returned to the system and page-faulted in again on every call
        retain_freed_memory()

    @classmethod
    def from_model(cls, model: Recognizer, *, dispatch: str = "auto") -> SparseRecognizer:
        """Fold a trained recognizer into an executor (its weights are copied, eval semantics).

        Args:
            model: a ResNet AdaFuse / TSN / TSM recognizer.
            dispatch: ``"auto"``, ``"kernel"`` or ``"dense"``: which kernels run the policy-controlled convolutions
                (see the module documentation).
        """
        if dispatch not in DISPATCH:
            raise ValueError(f"dispatch must be one of {', '.join(DISPATCH)}, got {dispatch!r}")
        check_supported(model)
        net: ResNet = model.backbone
        layers = [(stage, j, block) for stage in range(net.num_stages)
                  for j, block in enumerate(getattr(net, f"layer{stage + 1}"))]  # fmt: skip
        blocks = []
        for i, (stage, j, block) in enumerate(layers):
            pooled = i + 1 == len(layers) or layers[i + 1][2].fusion is not None  # the head, or a policy, pools it
            blocks.append(_Block(block, f"layer{stage + 1}.{j}", stage, dispatch, pool_output=pooled))
        head = (model.head.weight.detach().float().cpu(), model.head.bias.detach().float().cpu())
        return cls(stem=FoldedConv(net.conv1, net.bn1), blocks=blocks, head=head)

    @property
    def fusion_names(self) -> list[str]:
        """Policy names of the fused blocks, in order, as the recognizer names them (``backbone.layer1.0.fusion``)."""
        return [b.fusion_name for b in self.blocks if b.policy is not None]

    def reset_stats(self) -> None:
        """Zero :attr:`stats`."""
        self.stats = ExecutionStats()

    def _forced(self, actions: Mapping[str, torch.Tensor] | None, n: int, t: int) -> dict[str, torch.Tensor]:
        """Forced masks (n, t, G, 3) by fusion name -> action ids (n·t, G)."""
        if actions is None:
            return {}
        unknown = sorted(set(actions) - set(self.fusion_names))
        if unknown:
            raise ValueError(f"forced actions for modules without a policy: {', '.join(unknown)}")
        ids = {}
        for b in self.blocks:
            if b.fusion_name in actions:
                mask = actions[b.fusion_name]
                if tuple(mask.shape) != (n, t, b.groups, NUM_ACTIONS):
                    raise ValueError(f"forced actions for {b.fusion_name} must be a policy mask of shape "
                                     f"{(n, t, b.groups, NUM_ACTIONS)}, got {tuple(mask.shape)}")  # fmt: skip
                ids[b.fusion_name] = mask_to_actions(mask.cpu()).reshape(n * t, b.groups)
        return ids

    def _stem(self, frames: torch.Tensor) -> torch.Tensor:
        b, _, h, w = frames.shape
        self.stats.macs += self.stem.macs((b, self.stem.out_channels, *self.stem.output_size(h, w)))
        return self.stem.dense_max_pool(frames.float())

    def _head(self, x: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        """Logits from the last block's output x or its pool v (None: pooled here)."""
        self.stats.macs += self.head_weight.numel() * x.shape[0]
        return torch.addmm(self.head_bias, global_avg_pool(x) if v is None else v, self.head_weight.t())

    def forward_with_policies(
        self, clips: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None, per_frame: bool = False
    ) -> tuple[torch.Tensor, Policies]:
        """Clip mode: logits of N clips and the policies that produced them, like the model's method.

        Args:
            clips: (N, T, 3, H, W), normalised like the training data; any T.
            actions: forced policy masks (N, T, G, 3) by fusion name (:attr:`fusion_names`); the policy nets still
                run, so their cost is measured.
            per_frame: return frame logits (N, T, K) instead of the video logits (N, K).

        Returns:
            (logits, policies): ``policies[name]`` is the (N, T, G, 3) one-hot mask of fusion ``name`` as decided
            (or forced).
        """
        if clips.dim() != 5:
            raise ValueError(f"clips must be (N, T, 3, H, W), got shape {tuple(clips.shape)}")
        n, t = clips.shape[:2]
        forced = self._forced(actions, n, t)
        policies = {}
        with torch.inference_mode():
            x, v = self._stem(clips.flatten(0, 1)), None
            for block in self.blocks:
                x, v, ids = block.clip(x, v, n, t, forced.get(block.fusion_name), self.stats)
                if ids is not None:
                    policies[block.fusion_name] = _policy_mask(ids, (n, t, block.groups, NUM_ACTIONS))
            logits = self._head(x, v).view(n, t, -1)
        self.stats.frames += n * t
        return (logits if per_frame else logits.mean(dim=1)), policies

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """Video logits of N clips: (N, T, 3, H, W) -> (N, K)."""
        return self.forward_with_policies(clips)[0]

    def frame_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-frame logits of N clips: (N, T, 3, H, W) -> (N, T, K)."""
        return self.forward_with_policies(clips, per_frame=True)[0]

    def init_state(self, batch_size: int = 1) -> SparseState:
        """A fresh streaming state for ``batch_size`` independent streams (every stream at its first frame)."""
        if not self.causal:
            raise UserError(_BIDIRECTIONAL)
        return SparseState(batch_size=batch_size, blocks=[_BlockState() for _ in self.blocks],
                           frames=np.zeros(batch_size, dtype=np.int64))  # fmt: skip

    def reset_state(self, state: SparseState, index: int | None = None) -> None:
        """Restart stream ``index`` (all streams when None): its next frame is a first frame."""
        state.frames[slice(None) if index is None else index] = 0

    def step(
        self, frames: torch.Tensor, state: SparseState, *, actions: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, Policies]:
        """Streaming: logits of the next frame of every stream and the policies of that frame.

        Args:
            frames: (B, 3, H, W) for the B streams of ``state``.
            state: the streams' state (:meth:`init_state`), updated in place.
            actions: forced policy masks (B, 1, G, 3) by fusion name.

        Returns:
            (logits (B, K), policies {fusion name: (B, 1, G, 3)}): a frame's logits depend on earlier frames only,
            and equal the model's frame logits (``frame_logits``) at that frame of the stream.
        """
        b = state.batch_size
        if frames.dim() != 4 or frames.shape[0] != b:
            raise ValueError(f"frames must be ({b}, 3, H, W) for {b} streams, got shape {tuple(frames.shape)}")
        forced = self._forced(actions, b, 1)
        first = state.frames == 0
        first = first if first.any() else None  # the blocks skip the first-frame masking when no stream is new
        policies = {}
        with torch.inference_mode():
            x, v = self._stem(frames), None
            for block, st in zip(self.blocks, state.blocks, strict=True):
                x, v, ids = block.step(x, v, st, first, forced.get(block.fusion_name), self.stats)
                if ids is not None:
                    policies[block.fusion_name] = _policy_mask(ids, (b, 1, block.groups, NUM_ACTIONS))
            logits = self._head(x, v)
        self.stats.frames += b
        state.frames += 1
        return logits, policies


_BIDIRECTIONAL = (
    "this model uses the bidirectional (offline) temporal shift, which looks one frame ahead: it runs on whole "
    "clips, but streaming needs a causal model (build_model(..., causal_shift=True))"
)


def check_supported(model: Recognizer, *, streaming: bool = False) -> None:
    """Raise :class:`~adafuse.errors.UserError` (one line) unless the executor can run ``model`` (``streaming``:
    frame by frame, causally)."""
    name = model.config.backbone
    if not isinstance(getattr(model, "backbone", None), ResNet):
        raise UserError(f"sparse execution supports 2D resnet* backbones only, got {name} ({model.config.method})")
    if model.consensus != "avg":
        raise UserError(f"sparse execution supports the average consensus only, not {model.config.method}")
    for block in model.backbone.blocks():
        if type(block.conv1) is not torch.nn.Conv2d:
            raise UserError(f"sparse execution does not support {type(block.conv1).__name__} (e.g. CGNet) convs")
        if streaming and isinstance(block.shift, TemporalShift) and not block.shift.causal:
            raise UserError(_BIDIRECTIONAL)
        fusion = block.fusion
        if fusion is not None and not isinstance(fusion, AdaptiveFusion):
            raise UserError(f"sparse execution supports learned AdaFuse policies only, not {type(fusion).__name__}")
