"""Batched sparse execution of AdaFuse ResNets on a GPU, whole clips at a time (clip mode).

A batch of N clips of T frames runs block by block over all N·T frames, so every policy decision of a block is known
before its first conv runs. Per fused block (ResNet: ``conv1 → BN → ReLU → fusion → conv2 → ...``)::

    policy   pooled block input [v_{t-1}, v_t] -> one decision per (frame, group of 32 channels): KEEP / REUSE / SKIP
    conv1    computes, for frame t, exactly the groups kept at t or reused at t+1 (the set Eq. 5 charges); the other
             groups of its output buffer are never written and never read
    conv2    reads group g of frame t from frame t's conv1 output (KEEP), from frame t−1's (REUSE: the row above in
             the same buffer, no copy) or not at all (SKIP: the group never enters the reduction)

Both are :class:`~adafuse.inference.triton_group_conv.TritonGroupConv` launches with static grids; conv3, the
shortcut, the stem and blocks without a policy run densely on cuDNN. BatchNorm is folded into every conv (the
policy's BatchNorm1d into its first FC), activations are channels_last in float16 (or bfloat16), accumulation in
float32. The forward pass never waits for the GPU and has no data-dependent shapes: :meth:`GpuSparseRecognizer.graphed`
captures it in a CUDA graph.

Decisions: the policy's arg-max (the model's own evaluation, exact), forced masks (``actions=``), or a fixed
**budget** per layer (:func:`adafuse.layers.gumbel.budget_onehot`): exactly k non-skipped groups per frame, chosen by
the policy's keep/reuse-vs-skip margin. The budget makes every sample's reduction equally long (no stragglers in a
wave of programs) and the cost predictable; it changes the semantics wherever the arg-max would have computed
another number of groups. Either way the masks come back with the logits, and their Eq. 5 cost is
:func:`adafuse.flops.adaptive_macs` of them (:func:`executed_policies`: what ran).

Outputs equal the masked dense model's (:class:`~adafuse.models.Recognizer` in eval mode, given the same masks) to
the precision used; in float32 under ``TRITON_INTERPRET=1`` they are checked on the CPU. Supported: ResNet
backbones, ``tsn``, ``tsm`` (both shifts), ``adafuse_tsn``, ``ada_skip``, ``ada_reuse``, ``adafuse_tsm``,
``adafuse_tsm_last``; policy groups of 16, 32 or 64 channels; average consensus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from adafuse.errors import UserError
from adafuse.flops import upstream_saving
from adafuse.inference.kernels import fold_batchnorm
from adafuse.inference.sparse import FoldedPolicy
from adafuse.inference.triton_group_conv import TritonGroupConv, check_available, compact_sources
from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE, SKIP, Action
from adafuse.layers.adaptive_fusion import AdaptiveFusion
from adafuse.layers.gumbel import budget_onehot
from adafuse.layers.temporal_shift import TemporalShift
from adafuse.models.recognizer import Recognizer
from adafuse.models.resnet import BasicBlock, Bottleneck, ResNet

Policies = dict[str, torch.Tensor]
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, Policies]]  # clips (N, T, 3, H, W) -> (logits, policies)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _like(x: torch.Tensor) -> dict:
    return {"dtype": x.dtype, "device": x.device, "memory_format": torch.channels_last}


class _DenseConv:
    """A conv + BatchNorm folded into one biased conv (cuDNN, channels_last): ``x -> act(conv(x) (+ residual))``."""

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | None, *, dtype, device) -> None:
        weight, bias = fold_batchnorm(conv, bn)
        self.weight = _channels_last(weight.to(device=device, dtype=dtype))
        self.bias = bias.to(device=device, dtype=dtype)
        self.stride, self.padding = conv.stride, conv.padding
        self.folded = (weight, bias)  # float32, for the group-sparse kernel of the same conv

    def __call__(self, x: torch.Tensor, *, relu: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if residual is not None:
            y = y.add_(residual)
        return y.relu_() if relu or residual is not None else y


class _Policy:
    """An AdaFuse policy net, BatchNorm folded, on the device: pooled block inputs of N·T frames -> masks."""

    def __init__(self, fusion: AdaptiveFusion, *, num_segments: int, budget: int | None, device) -> None:
        folded = FoldedPolicy(fusion, cpu_kernel=False)
        self.w0, self.b0 = folded.w0.to(device), folded.b0.to(device)
        self.w1, self.b1 = folded.w1.to(device), folded.b1.to(device)
        self.history, self.decisions, self.num_segments = fusion.history, fusion.decisions, num_segments
        self.action_ids = torch.tensor([int(a) for a in fusion.actions], device=device)
        self.budget = budget
        if budget is not None and Action.SKIP not in fusion.actions:
            raise UserError("a group budget needs a policy that can skip (this one keeps or reuses every group)")
        self.skip = fusion.actions.index(Action.SKIP) if Action.SKIP in fusion.actions else None

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        """Masks (N, T, G, 3) float32 from the (shifted) block input xs (N·T, C_in, H, W)."""
        v = xs.float().mean(dim=(2, 3))
        if self.history:
            v3 = v.view(-1, self.num_segments, v.shape[1])
            v = torch.cat([torch.cat([torch.zeros_like(v3[:, :1]), v3[:, :-1]], dim=1), v3], dim=2).flatten(0, 1)
        hidden = torch.addmm(self.b0, v, self.w0.t()).relu_()
        logits = torch.addmm(self.b1, hidden, self.w1.t()).view(v.shape[0], self.decisions, -1)
        if self.budget is None:
            choice = logits.argmax(dim=-1)
        else:
            choice = budget_onehot(logits, budget=self.budget, skip=self.skip).argmax(dim=-1)
        ids = self.action_ids[choice].view(-1, self.num_segments, self.decisions)
        return torch.zeros(*ids.shape, NUM_ACTIONS, device=ids.device).scatter_(-1, ids.unsqueeze(-1), 1.0)


class _Block:
    """One residual block, folded; fused blocks run their two first convs group-sparse."""

    def __init__(self, block: BasicBlock | Bottleneck, name: str, *, num_segments: int, budget: int | None,
                 dtype, device) -> None:  # fmt: skip
        self.fusion_name = f"backbone.{name}.fusion"
        self.bottleneck = isinstance(block, Bottleneck)
        self.shift = block.shift if isinstance(block.shift, TemporalShift) else None
        self.num_segments = num_segments
        dense = {"dtype": dtype, "device": device}
        self.conv1 = _DenseConv(block.conv1, block.bn1, **dense)
        self.conv2 = _DenseConv(block.conv2, block.bn2, **dense)
        self.conv3 = _DenseConv(block.conv3, block.bn3, **dense) if self.bottleneck else None
        ds = block.downsample
        self.downsample = _DenseConv(ds[0], ds[1], **dense) if ds is not None else None
        self.policy = None
        if block.fusion is not None:
            self.policy = _Policy(block.fusion, num_segments=num_segments, budget=budget, device=device)
            g = block.fusion.group_size
            self.sparse1 = self._sparse(self.conv1, block.conv1, g, dtype, device)
            self.sparse2 = self._sparse(self.conv2, block.conv2, g, dtype, device)

    @staticmethod
    def _sparse(folded: _DenseConv, conv: torch.nn.Conv2d, group_size: int, dtype, device) -> TritonGroupConv:
        weight, bias = folded.folded
        return TritonGroupConv(weight.to(device), bias.to(device), stride=conv.stride[0], group_size=group_size,
                               dtype=dtype)  # fmt: skip

    def __call__(self, x: torch.Tensor, forced: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        identity = x if self.downsample is None else self.downsample(x, relu=False)
        xs = self.shift(x) if self.shift is not None else x
        if self.policy is None:
            y = self.conv1(xs, relu=True)
            y = self.conv2(y, relu=True, residual=None if self.bottleneck else identity)
            mask = None
        else:
            mask = self.policy(xs) if forced is None else forced.to(device=x.device, dtype=torch.float32)
            y = self._fused(xs, identity, mask)
        if self.bottleneck:
            y = self.conv3(y, relu=True, residual=identity)
        return y, mask

    def _fused(self, xs: torch.Tensor, identity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, t, g, _ = mask.shape
        rows = n * t
        # conv1: for frame t the groups kept at t or reused at t+1 — exactly what Eq. 5 does not save.
        needed = (upstream_saving(mask) < 0.5).view(rows, g)
        h1, w1 = self.sparse1.output_size(*xs.shape[2:])
        y = torch.empty(rows, self.sparse1.out_channels, h1, w1, **_like(xs))
        self.sparse1(xs, out=y, out_groups=needed, relu=True)
        # conv2: group g of frame t from row t (KEEP), row t−1 (REUSE; zero history on a clip's first frame) or none.
        row = torch.arange(rows, device=xs.device).view(n, t, 1)
        first = torch.arange(t, device=xs.device).view(1, t, 1) == 0
        keep, reuse = mask[..., KEEP] > 0.5, (mask[..., REUSE] > 0.5) & ~first
        source = torch.where(keep, row, torch.where(reuse, row - 1, -1)).view(rows, g)
        h2, w2 = self.sparse2.output_size(h1, w1)
        out = torch.empty(rows, self.sparse2.out_channels, h2, w2, **_like(xs))
        residual = None if self.bottleneck else identity
        return self.sparse2(y, out=out, sources=compact_sources(source), relu=True, residual=residual)


class GpuSparseRecognizer:
    """Inference-only AdaFuse ResNet that runs a batch of clips block by block, computing only what its policies
    keep (Triton group-sparse convolutions for the fused convs, cuDNN for the rest).

    Build it with :meth:`from_model`; :meth:`forward_with_policies` takes (N, T, 3, H, W) clips like the recognizer.
    """

    def __init__(self, *, stem: _DenseConv, blocks: list[_Block], head: tuple[torch.Tensor, torch.Tensor],
                 num_segments: int, dtype: torch.dtype, device: torch.device) -> None:  # fmt: skip
        self.stem, self.blocks = stem, blocks
        self.head_weight, self.head_bias = head
        self.num_segments, self.dtype, self.device = num_segments, dtype, device

    @classmethod
    def from_model(
        cls,
        model: Recognizer,
        *,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
        budget: Mapping[str, int] | None = None,
    ) -> GpuSparseRecognizer:
        """Fold a trained recognizer into an executor (its weights are copied, eval semantics).

        Args:
            model: a ResNet recognizer (see the module docstring for the methods).
            dtype: activations and weights: float16 (default), bfloat16, or float32 (IEEE; for checks).
            device: default ``cuda`` (``cpu`` under ``TRITON_INTERPRET=1`` without a GPU).
            budget: non-skipped groups per frame, by fusion name (:attr:`fusion_names`; every fused block), instead
                of the policies' arg-max; :func:`budget_from_shares` makes one from per-stage shares.
        """
        check_available()
        check_gpu_supported(model)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net: ResNet = model.backbone
        names = [f"backbone.{name}.fusion" for name, b in net.named_blocks() if b.fusion is not None]
        if budget is not None and set(budget) != set(names):
            missing, extra = sorted(set(names) - set(budget)), sorted(set(budget) - set(names))
            raise UserError(f"budget must name every fused block: missing {missing or 'none'}, "
                            f"unknown {extra or 'none'}")  # fmt: skip
        t = model.num_segments
        blocks = [_Block(block, name, num_segments=t, budget=(budget or {}).get(f"backbone.{name}.fusion"),
                         dtype=dtype, device=device) for name, block in net.named_blocks()]  # fmt: skip
        head = (model.head.weight.detach().float().to(device), model.head.bias.detach().float().to(device))
        stem = _DenseConv(net.conv1, net.bn1, dtype=dtype, device=device)
        return cls(stem=stem, blocks=blocks, head=head, num_segments=t, dtype=dtype, device=device)

    @property
    def fusion_names(self) -> list[str]:
        """Policy names of the fused blocks, in order, as the recognizer names them (``backbone.layer1.0.fusion``)."""
        return [b.fusion_name for b in self.blocks if b.policy is not None]

    def forward_with_policies(
        self, clips: torch.Tensor, *, actions: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, Policies]:
        """Video logits (N, K) float32 and the masks (N, T, G, 3) that produced them, by fusion name.

        ``actions`` forces the masks of the named fusions ((N, T, G, 3), as :meth:`Recognizer.forward_with_policies`
        takes them); the others decide with their policy (arg-max, or the budget).
        """
        n, t = clips.shape[:2]
        if t != self.num_segments:
            raise ValueError(f"the executor was built for num_segments={self.num_segments} frames per clip, got {t}")
        unknown = sorted(set(actions or ()) - set(self.fusion_names))
        if unknown:
            raise ValueError(f"forced actions for modules without a policy: {', '.join(unknown)}")
        policies: Policies = {}
        with torch.no_grad():  # not inference_mode: the masks may go on into a model that trains
            x = _channels_last(clips.flatten(0, 1).to(device=self.device, dtype=self.dtype))
            x = F.max_pool2d(self.stem(x, relu=True), 3, 2, 1)
            for block in self.blocks:
                x, mask = block(x, (actions or {}).get(block.fusion_name))
                if mask is not None:
                    policies[block.fusion_name] = mask
            features = x.float().mean(dim=(2, 3))
            logits = torch.addmm(self.head_bias, features, self.head_weight.t()).view(n, t, -1).mean(dim=1)
        return logits, policies

    def graphed(self, example: torch.Tensor, *, warmup: int = 3) -> Forward:
        """The forward pass for clips shaped like ``example``, captured in a CUDA graph (kernel tuning and cuDNN
        set-up happen in the warm-up calls first). The returned function copies its input into the graph's buffer
        and replays it; its outputs are the graph's own tensors, overwritten by the next call."""
        static = example.to(device=self.device).clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self.forward_with_policies(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.forward_with_policies(static)

        def run(clips: torch.Tensor) -> tuple[torch.Tensor, Policies]:
            static.copy_(clips)
            graph.replay()
            return out

        return run


def executed_policies(policies: Mapping[str, torch.Tensor]) -> Policies:
    """The masks as the executor ran them: REUSE on a clip's first frame copies the zero history, so it runs as SKIP
    (Eq. 5 still charges its conv2 input); costing these with :func:`adafuse.flops.adaptive_macs` gives what ran."""
    out = {}
    for name, mask in policies.items():
        mask = mask.clone()
        mask[:, 0, :, SKIP] += mask[:, 0, :, REUSE]
        mask[:, 0, :, REUSE] = 0.0
        out[name] = mask
    return out


def budget_from_shares(model: Recognizer, shares: Sequence[tuple[float, float, float]]) -> dict[str, int]:
    """A group budget from per-stage (keep, reuse, skip) shares: ``round((keep + reuse) · G)`` non-skipped groups per
    frame in every fused block of stage s (e.g. :data:`adafuse.bench.latency.PAPER_SHARES`)."""
    net = model.backbone
    budget = {}
    for name, block in net.named_blocks():
        if block.fusion is not None:
            keep, reuse, _ = shares[int(name[len("layer")]) - 1]
            budget[f"backbone.{name}.fusion"] = round((keep + reuse) * block.fusion.decisions)
    return budget


def check_gpu_supported(model: Recognizer) -> None:
    """Raise :class:`~adafuse.errors.UserError` (one line) unless the GPU executor can run ``model``."""
    if not isinstance(model.backbone, ResNet):
        raise UserError(f"GPU sparse execution supports resnet* backbones only, got {model.config.backbone}")
    if model.lstm is not None:
        raise UserError("GPU sparse execution supports the average consensus only, not an LSTM")
    for block in model.backbone.blocks():
        if type(block.conv1) is not torch.nn.Conv2d:
            raise UserError(f"GPU sparse execution does not support {type(block.conv1).__name__} (e.g. CGNet) convs")
        fusion = block.fusion
        if fusion is not None and not isinstance(fusion, AdaptiveFusion):
            raise UserError(f"GPU sparse execution supports learned AdaFuse policies only, not {type(fusion).__name__}")
