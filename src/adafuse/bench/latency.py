"""Per-frame latency of dense TSN, masked AdaFuse and sparse AdaFuse, streaming at batch 1 (``adafuse bench latency``).

Four paths process the same frames, interleaved frame by frame so that load on a shared machine hits them alike:

- ``dense``: the TSN recognizer as trained and evaluated (eager PyTorch, eval mode): the baseline of the ratios;
- ``masked``: the AdaFuse recognizer the same way, every channel computed and the policy's masks multiplied in
  (what the paper ran);
- ``sparse``: :class:`~adafuse.inference.SparseRecognizer` on the AdaFuse model (skipped channels not computed);
- ``dense_engine``: the same executor on the TSN model: BatchNorm folded, weights pre-packed, no policy. It shows
  how much of the sparse path's gain is inference engineering rather than skipping.

The policy is either forced (a fixed random generator gives every block, at every frame, exactly the requested
keep / reuse / skip shares, the same masks on the masked and sparse paths; the sparse executor still runs its policy
nets, the masked model takes the masks as its ``actions`` input) or a trained checkpoint's own. ``mac_ratio`` is
the Eq. 5 cost of those masks over the dense TSN cost, ``executed_mac_ratio`` the sparse executor's own count of
what it ran (more than Eq. 5 where the cost model chose dense layers).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.flops import CostTable, adaptive_macs, profile
from adafuse.inference.sparse import SparseRecognizer
from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE, SKIP, actions_to_mask
from adafuse.layers.adaptive_fusion import AdaptiveFusion
from adafuse.models import build_from_config, build_model

# Per-stage (keep, reuse, skip) shares of a trained AdaFuse ResNet-50, read off the project page's bar chart
# (Something-V1): mostly skipping early, more keeping and reusing late.
PAPER_SHARES = ((0.07, 0.02, 0.91), (0.12, 0.02, 0.86), (0.25, 0.07, 0.68), (0.28, 0.30, 0.42))


def parse_policy(spec: str) -> tuple[tuple[float, float, float], ...]:
    """Per-stage (keep, reuse, skip) shares: ``"0.5,0.25,0.25"`` (every stage), ``"keep"`` (1, 0, 0) or ``"paper"``."""
    if spec == "keep":
        return ((1.0, 0.0, 0.0),) * 4
    if spec == "paper":
        return PAPER_SHARES
    try:
        shares = tuple(float(v) for v in spec.split(","))
    except ValueError:
        shares = ()
    if len(shares) != NUM_ACTIONS or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
        raise UserError(f"policy must be 'keep', 'paper', 'trained' or keep,reuse,skip shares summing to 1: {spec!r}")
    return (shares,) * 4


class ForcedPolicy:
    """Exact-share random actions: every block, every frame, ``round(share·G)`` decisions of each action, at random
    positions. ``next_frame()`` returns the policy masks (1, G, 3) of one frame, by fusion name of ``engine``."""

    def __init__(self, engine: SparseRecognizer, shares: Sequence[tuple[float, float, float]], *, seed: int = 0):
        self.groups = [(b.fusion_name, b.stage, b.units) for b in engine.blocks if b.policy is not None]
        self.shares = shares
        self.rng = np.random.default_rng(seed)

    def next_frame(self) -> dict[str, torch.Tensor]:
        masks = {}
        for name, stage, g in self.groups:
            keep, reuse, _ = self.shares[stage]
            n_keep, n_reuse = round(keep * g), round(reuse * g)
            a = np.full(g, int(SKIP), dtype=np.int64)
            order = self.rng.permutation(g)
            a[order[:n_keep]] = int(KEEP)
            a[order[n_keep : n_keep + n_reuse]] = int(REUSE)
            masks[name] = actions_to_mask(torch.from_numpy(a[None]))
        return masks


def _frames(count: int, size: int, normalization: str, seed: int) -> torch.Tensor:
    """Synthetic video frames (count, 1, 3, size, size): a moving object on a textured background."""
    from PIL import Image

    from adafuse.data.synthetic import render_video
    from adafuse.data.transforms import EvalTransform

    video = render_video(kind="temporal", label=0, seed=seed, size=size * 256 // 224 + 1, frames=count)
    clip = EvalTransform(input_size=size, normalization=normalization)([[Image.fromarray(f) for f in video]])
    return clip[0].unsqueeze(1)


def measure_latency(
    *,
    backbone: str = "resnet50",
    threads: int = 1,
    policy: str = "0.5,0.25,0.25",
    checkpoint: str | Path | None = None,
    frames: int = 20,
    warmup: int = 5,
    input_size: int = 224,
    policy_hidden: int = 64,
    policy_group_size: int = 1,
    num_classes: int = 174,
    seed: int = 0,
) -> dict[str, Any]:
    """Median per-frame latency (ms) of the four paths at batch 1, and the MAC and time ratios.

    Args:
        backbone: a ResNet (ignored with ``checkpoint``).
        threads: ``torch.set_num_threads`` during the measurement (the cost model is measured at it too); the
            previous thread count is restored afterwards, and flushing of denormals is switched off again.
        policy: forced shares (:func:`parse_policy`), or ``"trained"`` for the checkpoint's own policy.
        checkpoint: a trained AdaFuse checkpoint (required by ``policy="trained"``): its weights are timed.
        frames / warmup: timed frames and untimed frames before them.
        input_size: frame side.
        policy_hidden / policy_group_size: policy hidden size and channels per decision of the random-weight AdaFuse
            model (without ``checkpoint``); groups make every gather move contiguous blocks.
        num_classes: classifier size of the random-weight models.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # random-weight activations can underflow; denormals would slow every path alike
    try:
        return _measure(
            backbone=backbone, threads=threads, policy=policy, checkpoint=checkpoint, frames=frames, warmup=warmup,
            input_size=input_size, policy_hidden=policy_hidden, policy_group_size=policy_group_size,
            num_classes=num_classes, seed=seed,
        )  # fmt: skip
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous_threads)


def _measure(
    *,
    backbone: str,
    threads: int,
    policy: str,
    checkpoint: str | Path | None,
    frames: int,
    warmup: int,
    input_size: int,
    policy_hidden: int,
    policy_group_size: int,
    num_classes: int,
    seed: int,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    if checkpoint is not None:
        from adafuse.checkpoint import load_model

        ada, _ = load_model(checkpoint, num_segments=1)
        backbone, num_classes = ada.config.backbone, ada.num_classes
    elif policy == "trained":
        raise UserError("policy 'trained' needs --checkpoint (a trained AdaFuse model)")
    else:
        ada = build_model(
            backbone=backbone, method="adafuse_tsn", num_classes=num_classes, num_segments=1,
            policy_hidden=policy_hidden, policy_group_size=policy_group_size,
        ).eval()  # fmt: skip
    if not ada.fusions():
        raise UserError(f"{ada.config.method} has no fusion policy to time; give an AdaFuse checkpoint")
    tsn = build_model(backbone=backbone, method="tsn", num_classes=num_classes, num_segments=1).eval()
    tsn.load_state_dict({k: v for k, v in ada.state_dict().items() if ".fusion." not in k})  # same backbone weights
    sparse = SparseRecognizer.from_model(ada, input_size=input_size)
    dense_engine = SparseRecognizer.from_model(tsn, input_size=input_size)
    with torch.device("meta"):  # cost tables for one video of all the timed frames
        tables = tuple(profile(build_from_config(m.config.replace(num_segments=frames)), input_size=input_size)
                       for m in (ada, tsn))  # fmt: skip
    forced = None if policy == "trained" else ForcedPolicy(sparse, parse_policy(policy), seed=seed)
    clip = _frames(warmup + frames, input_size, ada.config.normalization, seed)

    states = {"sparse": sparse.init_state(1), "dense_engine": dense_engine.init_state(1)}
    times: dict[str, list[float]] = {"dense": [], "masked": [], "sparse": [], "dense_engine": []}
    masks: list[dict[str, torch.Tensor]] = []
    runs = {
        "dense": lambda x, a: tsn(x[None]),
        "masked": lambda x, a: ada.forward_with_policies(
            x[None], actions=None if a is None else {k: v[:, None] for k, v in a.items()}
        ),
        "sparse": lambda x, a: sparse.step(x, states["sparse"], actions=a),
        "dense_engine": lambda x, a: dense_engine.step(x, states["dense_engine"]),
    }
    order = list(runs)
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for i in range(warmup + frames):
            if i == warmup:
                sparse.reset_stats()
                dense_engine.reset_stats()
            actions = forced.next_frame() if forced is not None else None
            for name in order[i % 4 :] + order[: i % 4]:  # rotate who runs first: cache and load effects even out
                start = time.perf_counter()
                runs[name](clip[i], actions)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
            if i >= warmup:
                masks.append(actions if actions is not None else sparse.last_policies)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    mac_ratio = _eq5_ratio(*tables, masks)
    executed_ratio = sparse.executed_macs / dense_engine.executed_macs
    shares = sparse.stats.shares()
    return {
        "backbone": backbone,
        "threads": threads,
        "policy": policy,
        "input_size": input_size,
        "frames": frames,
        "policy_hidden": _policy_hidden(ada),
        "policy_group_size": next(iter(ada.fusions().values())).group_size,
        "dense_ms": ms["dense"],
        "masked_ms": ms["masked"],
        "sparse_ms": ms["sparse"],
        "dense_engine_ms": ms["dense_engine"],
        "mac_ratio": mac_ratio,
        "executed_mac_ratio": executed_ratio,
        "time_ratio": ms["sparse"] / ms["dense"],
        "time_ratio_engine": ms["sparse"] / ms["dense_engine"],
        "masked_ratio": ms["masked"] / ms["dense"],
        "time_over_mac": ms["sparse"] / ms["dense"] / mac_ratio,
        "shares": shares,
        "sliced_share": sparse.stats.sliced / max(sparse.stats.sliced + sparse.stats.dense, 1),
        "load_average": (load_before + os.getloadavg()[0]) / 2,  # other processes on the machine, 1-minute mean
    }


def _policy_hidden(model: nn.Module) -> int:
    fusion = next(m for m in model.modules() if isinstance(m, AdaptiveFusion))
    return fusion.policy.fc0.out_features


def _eq5_ratio(table: CostTable, tsn_table: CostTable, masks: list[dict[str, torch.Tensor]]) -> float:
    """Eq. 5 MACs of the AdaFuse model under ``masks`` (per frame: (1, G, 3) masks by fusion name), one video of all
    the timed frames, over the dense TSN MACs of as many frames (``table``s made for that many frames)."""
    policies = {name: torch.stack([frame[name] for frame in masks], dim=1) for name in masks[0]}  # (1, T, G, 3)
    return float(adaptive_macs(policies, table, batch_size=1)[0]) / tsn_table.dense_macs


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table, one row per measurement."""
    lines = [
        "| backbone | threads | policy (keep/reuse/skip) | dense TSN ms | masked ms | sparse ms | dense engine ms "
        "| MAC ratio | time ratio | time / MAC | vs dense engine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["shares"]
        lines.append(
            f"| {r['backbone']} | {r['threads']} | {r['policy']} ({s['keep']:.2f}/{s['reuse']:.2f}/{s['skip']:.2f}) "
            f"| {r['dense_ms']:.1f} | {r['masked_ms']:.1f} | {r['sparse_ms']:.1f} | {r['dense_engine_ms']:.1f} "
            f"| {r['mac_ratio']:.3f} | {r['time_ratio']:.3f} | {r['time_over_mac']:.2f} "
            f"| {r['time_ratio_engine']:.3f} |"
        )
    return "\n".join(lines)
