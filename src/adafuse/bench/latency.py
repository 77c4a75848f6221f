"""Latency of sparse AdaFuse against the dense engines a user would deploy (``adafuse bench latency``).

Every path does the same work per call: a whole clip of T frames (``mode="clip"``, the paper's evaluation) or one
frame of a stream at batch 1 (``mode="stream"``). All paths run in one interleaved run: each round calls every path
once, in a shuffled order, so that load on a shared machine hits them alike; the report keeps the median and the
minimum over the rounds.

Dense TSN paths (the same backbone weights), the candidates for the denominator ``best_dense``:

- ``eager``: the TSN recognizer as trained (eager PyTorch, eval mode, ``inference_mode``);
- ``executor``: :class:`~adafuse.inference.SparseRecognizer` on the TSN model (BatchNorm folded, NHWC, weights
  pre-packed for oneDNN, ReLU and residual fused; clip mode batches all frames through each layer);
- ``onnxruntime``: the TSN model exported with ``torch.onnx.export`` (opset 18, fixed shapes) on ONNX Runtime's CPU
  execution provider, all graph optimisations, ``intra_op_num_threads`` = threads, no spinning between calls;
- ``compile``: ``torch.compile`` (inductor) with ``freezing`` (weights folded and pre-packed as constants).

AdaFuse paths, per policy: ``masked:<policy>`` (the AdaFuse recognizer eager, every channel computed and the
masks multiplied in: the paper's execution) and ``sparse:<policy>`` (the executor on the AdaFuse model). Policies
are forced exact-share masks (every block, every frame: ``round(share·G)`` groups of each action at random
positions, new positions every round, the same masks on both paths; the policy nets still run), or a trained
checkpoint's own (``"trained"``). ``mac_ratio`` is Eq. 5 of those masks over the dense TSN MACs of the same work;
``executed_mac_ratio`` is the executor's own count of what it ran.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adafuse.errors import UserError
from adafuse.flops import adaptive_macs, profile
from adafuse.inference.sparse import SparseRecognizer
from adafuse.layers.actions import KEEP, NUM_ACTIONS, REUSE, SKIP, actions_to_mask
from adafuse.models import build_from_config, build_model
from adafuse.models.recognizer import Recognizer

DENSE_PATHS = ("eager", "executor", "onnxruntime", "compile")
MODES = ("clip", "stream")
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
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
    """Exact-share random masks: in every block and frame, ``round(share·G)`` groups of each action at random
    positions. ``masks(frames)`` gives one video's masks (1, frames, G, 3) by fusion name of ``executor``."""

    def __init__(self, executor: SparseRecognizer, shares: Sequence[tuple[float, float, float]], *, seed: int = 0):
        self.groups = [(b.fusion_name, b.stage, b.groups) for b in executor.blocks if b.policy is not None]
        self.shares = shares
        self.rng = np.random.default_rng(seed)

    def masks(self, frames: int) -> dict[str, torch.Tensor]:
        out = {}
        for name, stage, g in self.groups:
            keep, reuse, _ = self.shares[stage]
            n_keep, n_reuse = round(keep * g), round(reuse * g)
            ids = np.full((frames, g), int(SKIP), dtype=np.int64)
            for row in ids:
                order = self.rng.permutation(g)
                row[order[:n_keep]] = int(KEEP)
                row[order[n_keep : n_keep + n_reuse]] = int(REUSE)
            out[name] = actions_to_mask(torch.from_numpy(ids[None]))
        return out


def _frames(count: int, size: int, normalization: str, seed: int) -> torch.Tensor:
    """Synthetic video frames (count, 3, size, size): a moving object on a textured background."""
    from PIL import Image

    from adafuse.data.synthetic import render_video
    from adafuse.data.transforms import EvalTransform

    video = render_video(kind="temporal", label=0, seed=seed, size=size * 256 // 224 + 1, frames=count)
    return EvalTransform(input_size=size, normalization=normalization)([[Image.fromarray(f) for f in video]])[0]


def _onnx_session(model: Recognizer, example: torch.Tensor, threads: int) -> Callable[[torch.Tensor], Any]:
    """``model`` exported to ONNX at ``example``'s shape, on ONNX Runtime's CPU provider: x -> outputs."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        path = Path(tmp) / "tsn.onnx"
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=18, input_names=["clips"],
                          output_names=["logits"], external_data=False, verbose=False)  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning pool threads would burn the core the next path of the round runs on; denormals flushed as the
        # PyTorch paths do.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"clips": x.numpy()})


def _compiled(model: Recognizer, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` (inductor) with freezing, compiled now on ``example``."""
    import torch._inductor.config as inductor

    compiled = torch.compile(model)
    with inductor.patch(freezing=True), torch.inference_mode():  # the mode the timed calls run in
        compiled(example)
    return compiled


def _dense_paths(
    tsn: Recognizer, example: torch.Tensor, threads: int, baselines: Sequence[str], mode: str
) -> tuple[dict[str, Callable[[torch.Tensor], Any]], dict[str, str], SparseRecognizer]:
    """The dense TSN paths (x -> output), the ones that could not be set up (name -> why), and the executor."""
    executor = SparseRecognizer.from_model(tsn)
    paths: dict[str, Callable[[torch.Tensor], Any]] = {}
    unavailable = {}
    if "eager" in baselines:
        paths["eager"] = tsn
    if "executor" in baselines:
        if mode == "clip":
            paths["executor"] = executor
        else:
            state = executor.init_state(1)
            paths["executor"] = lambda x: executor.step(x[:, 0], state)
    if "onnxruntime" in baselines:
        try:
            paths["onnxruntime"] = _onnx_session(tsn, example, threads)
        except ImportError:
            unavailable["onnxruntime"] = "onnxruntime is not installed (pip install 'adafuse[bench]')"
    if "compile" in baselines:
        try:
            paths["compile"] = _compiled(tsn, example)
        except Exception as e:  # no C++ compiler for inductor, an unsupported platform, ...
            unavailable["compile"] = f"torch.compile failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return paths, unavailable, executor


def measure_latency(
    *,
    backbone: str = "resnet50",
    threads: int = 1,
    policies: Sequence[str] = ("paper",),
    mode: str = "clip",
    num_segments: int = 8,
    rounds: int = 20,
    warmup: int = 3,
    input_size: int = 224,
    policy_hidden: int = 64,
    policy_group_size: int = 32,
    num_classes: int = 174,
    baselines: Sequence[str] = DENSE_PATHS,
    clock: str = "wall",
    checkpoint: str | Path | None = None,
    profile_paths: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One interleaved run of the dense TSN paths and, per policy, the masked and sparse AdaFuse paths.

    Args:
        backbone: a ResNet (ignored with ``checkpoint``).
        threads: ``torch.set_num_threads`` (and ONNX Runtime's) during the run; restored afterwards.
        policies: forced shares (:func:`parse_policy`), or ``"trained"`` (the checkpoint's own policy).
        mode: ``"clip"`` (a call is one clip of ``num_segments`` frames) or ``"stream"`` (one frame, batch 1).
        rounds / warmup: timed rounds, and untimed ones before them (kernel JIT, compilation, packing).
        input_size: frame side.
        policy_hidden / policy_group_size: policy hidden size and channels per decision of the random-weight
            AdaFuse model (without ``checkpoint``).
        num_classes: classifier size of the random-weight models.
        baselines: which of :data:`DENSE_PATHS` to run.
        clock: ``"wall"`` (``perf_counter``) or ``"cpu"`` (the calling thread's CPU time: robust on a loaded
            machine, meaningful at one thread only).
        checkpoint: a trained AdaFuse checkpoint: its weights are timed (its backbone and group size are used).
        profile_paths: also profile the sparse paths and the executor by category (:func:`profile_categories`).

    Returns:
        One row per policy (see ``docs/speed.md`` for the keys): every path's median and minimum milliseconds
        per call, ``best_dense`` / ``best_dense_ms``, ``time_ratio_best_dense``, ``mac_ratio``, ...
    """
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if clock not in CLOCKS:
        raise UserError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise UserError("--clock cpu measures the calling thread only: use it with --threads 1")
    unknown = sorted(set(baselines) - set(DENSE_PATHS))
    if unknown or not baselines:
        raise UserError(f"baselines must be among {', '.join(DENSE_PATHS)}, got {', '.join(baselines) or 'none'}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # random-weight activations can underflow; denormals would slow every path alike
    try:
        return _measure(
            backbone=backbone, threads=threads, policies=policies, mode=mode, num_segments=num_segments,
            rounds=rounds, warmup=warmup, input_size=input_size, policy_hidden=policy_hidden,
            policy_group_size=policy_group_size, num_classes=num_classes, baselines=baselines, clock=clock,
            checkpoint=checkpoint, profile_paths=profile_paths, seed=seed,
        )  # fmt: skip
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous_threads)


def _models(checkpoint, backbone, num_classes, t, policy_hidden, policy_group_size) -> tuple[Recognizer, Recognizer]:
    """(AdaFuse, TSN) recognizers for clips of ``t`` frames with the same backbone weights."""
    if checkpoint is not None:
        from adafuse.checkpoint import load_model

        ada, _ = load_model(checkpoint, num_segments=t)
    else:
        ada = build_model(backbone=backbone, method="adafuse_tsn", num_classes=num_classes, num_segments=t,
                          policy_hidden=policy_hidden, policy_group_size=policy_group_size)  # fmt: skip
    if not ada.fusions():
        raise UserError(f"{ada.config.method} has no fusion policy to time; give an AdaFuse checkpoint")
    tsn = build_model(backbone=ada.config.backbone, method="tsn", num_classes=ada.num_classes, num_segments=t)
    tsn.load_state_dict({k: v for k, v in ada.state_dict().items() if ".fusion." not in k})
    return ada.eval(), tsn.eval()


def _measure(
    *, backbone, threads, policies, mode, num_segments, rounds, warmup, input_size, policy_hidden, policy_group_size,
    num_classes, baselines, clock, checkpoint, profile_paths, seed,
) -> list[dict[str, Any]]:  # fmt: skip
    if "trained" in policies and checkpoint is None:
        raise UserError("policy 'trained' needs --checkpoint (a trained AdaFuse model)")
    torch.manual_seed(seed)
    t = num_segments if mode == "clip" else 1
    ada, tsn = _models(checkpoint, backbone, num_classes, t, policy_hidden, policy_group_size)
    config = ada.config
    frames = _frames(num_segments if mode == "clip" else warmup + rounds, input_size, config.normalization, seed)
    inputs = [frames[None]] if mode == "clip" else [f[None, None] for f in frames]  # (1, T, 3, S, S) per call
    example = inputs[0]

    calls, unavailable, dense_executor = _dense_paths(tsn, example, threads, baselines, mode)
    current: dict[str, dict[str, torch.Tensor] | None] = {}  # this round's masks per policy
    sparse: dict[str, SparseRecognizer] = {}
    forced: dict[str, ForcedPolicy | None] = {}
    decided: dict[str, list[dict[str, torch.Tensor]]] = {p: [] for p in policies}  # masks of the counted calls
    for p in policies:
        sparse[p] = SparseRecognizer.from_model(ada)
        forced[p] = None if p == "trained" else ForcedPolicy(sparse[p], parse_policy(p), seed=seed)
        calls[f"masked:{p}"] = lambda x, p=p: ada.forward_with_policies(x, actions=current[p])
        if mode == "clip":
            calls[f"sparse:{p}"] = lambda x, p=p: _record(decided[p], sparse[p].forward_with_policies(
                x, actions=current[p])[1])  # fmt: skip
        else:
            state = sparse[p].init_state(1)
            calls[f"sparse:{p}"] = lambda x, p=p, state=state: _record(decided[p], sparse[p].step(
                x[:, 0], state, actions=current[p])[1])  # fmt: skip

    now = CLOCKS[clock]
    times: dict[str, list[float]] = {name: [] for name in calls}
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for r in range(warmup + rounds):
            if r == warmup and mode == "clip":  # a stream's counts run from its first frame
                dense_executor.reset_stats()
                for p in policies:
                    sparse[p].reset_stats()
                    decided[p].clear()
            for p in policies:
                current[p] = None if forced[p] is None else forced[p].masks(t)
            x = inputs[r % len(inputs)]
            order = list(calls)
            random.Random(seed * 100_003 + r).shuffle(order)
            for name in order:
                start = now()
                calls[name](x)
                if r >= warmup:
                    times[name].append(now() - start)
    load = (load_before + os.getloadavg()[0]) / 2  # other processes on the machine, 1-minute mean

    median = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    minimum = {name: min(v) * 1e3 for name, v in times.items()}
    dense_names = [n for n in DENSE_PATHS if n in median]
    best = min(dense_names, key=median.get)
    best_min = min(dense_names, key=minimum.get)
    with torch.device("meta"):  # cost tables for the work counted: one clip, or the whole stream
        work = num_segments if mode == "clip" else warmup + rounds
        table = profile(build_from_config(config.replace(num_segments=work)), input_size=input_size)
        tsn_macs = profile(build_from_config(tsn.config.replace(num_segments=work)), input_size=input_size).dense_macs
    rows = []
    for p in policies:
        s, m = f"sparse:{p}", f"masked:{p}"
        row = {
            "mode": mode, "backbone": config.backbone, "threads": threads, "num_segments": t, "policy": p,
            "policy_group_size": next(iter(ada.fusions().values())).group_size, "policy_hidden": policy_hidden
            if checkpoint is None else None, "input_size": input_size, "rounds": rounds, "warmup": warmup,
            "clock": clock, "paths_ms": {k: median[k] for k in (*dense_names, m, s)},
            "paths_min_ms": {k: minimum[k] for k in (*dense_names, m, s)}, "unavailable": unavailable,
            "dense_ms": median.get("eager"), "masked_ms": median[m], "sparse_ms": median[s],
            **{f"{k}_ms": median[k] for k in dense_names if k != "eager"},
            "best_dense": best, "best_dense_ms": median[best], "time_ratio_best_dense": median[s] / median[best],
            "best_dense_min": best_min, "time_ratio_best_dense_min": minimum[s] / minimum[best_min],
            "time_ratio": median[s] / median["eager"] if "eager" in median else None,
            "time_ratio_executor": median[s] / median["executor"] if "executor" in median else None,
            "mac_ratio": _eq5_ratio(decided[p], table, tsn_macs, mode),
            "executed_mac_ratio": sparse[p].stats.macs / dense_executor.stats.macs if "executor" in median else None,
            "shares": sparse[p].stats.shares(), "load_average": load,
        }  # fmt: skip
        row["time_over_mac"] = row["time_ratio_best_dense"] / row["mac_ratio"]
        rows.append(row)
    if profile_paths:  # after the counts above: profiling runs the paths again
        x = inputs[-1]
        with torch.inference_mode():
            executor = profile_categories(lambda: calls["executor"](x)) if "executor" in calls else None
            for p, row in zip(policies, rows, strict=True):
                current[p] = None if forced[p] is None else forced[p].masks(t)
                row["profile_ms"] = {"sparse": profile_categories(lambda p=p: calls[f"sparse:{p}"](x)),
                                     "executor": executor}  # fmt: skip
    return rows


def _record(store: list, policies: dict[str, torch.Tensor]) -> None:
    store.append(policies)


def _eq5_ratio(decided: list[dict[str, torch.Tensor]], table, tsn_macs: float, mode: str) -> float:
    """Eq. 5 MACs of the masks the sparse path ran over the dense TSN MACs of the same work: the mean over the
    timed clips (clip mode) or one video of all the frames of the stream, warm-up included (stream mode)."""
    if mode == "stream":
        decided = [{name: torch.cat([d[name] for d in decided], dim=1) for name in decided[0]}]
    return float(np.mean([float(adaptive_macs(d, table, batch_size=1)[0]) for d in decided])) / tsn_macs


# Categories of the operators a path calls directly (top-level profiler events), for the time profile.
_CATEGORIES = {
    "adafuse_cpu::group_conv": "group kernels", "adafuse_cpu::conv1x1": "dense convs",
    "adafuse_cpu::conv_rows": "stem (+ max pool)",
    "mkldnn::_convolution_pointwise": "dense convs", "aten::mkldnn_convolution": "dense convs",
    "aten::conv2d": "dense convs", "aten::convolution": "dense convs",
    "aten::addmm": "policy + head GEMMs", "aten::argmax": "policy + head GEMMs", "aten::index": "policy + head GEMMs",
    "adafuse_cpu::policy": "policy + head GEMMs", "adafuse_cpu::mean_hw": "pooling",
    "aten::max_pool2d": "max pool",
}  # fmt: skip


def profile_categories(fn: Callable[[], Any], *, repeats: int = 3) -> dict[str, float]:
    """Milliseconds per call of ``fn`` by category, from PyTorch's profiler (the median call of ``repeats``):
    dense convs (the 1×1 kernel and oneDNN), the stem (+ max pool, fused in the row kernel), group kernels, pooling
    (the policies' global average pools), policy + head GEMMs,
    other operators (masks, buffers, shifts, copies), and Python (the call's wall time not inside an operator).
    The profiler's own per-operator cost lands mostly in "other" and "Python"."""
    from torch.autograd.profiler import profile as torch_profile

    results = []
    for _ in range(repeats):
        with torch_profile(record_shapes=True, use_kineto=False) as prof:  # the CPU-only profiler: no kineto logs
            start = time.perf_counter()
            fn()
            wall = (time.perf_counter() - start) * 1e3
        out: dict[str, float] = {}
        for e in prof.function_events:
            if e.cpu_parent is not None:
                continue
            name = e.name.split(".")[0]
            if name == "aten::sum" and e.input_shapes and len(e.input_shapes[0]) == 3:
                category = "pooling"  # the (B, H·W, C) view of an activation
            else:
                category = _CATEGORIES.get(name, "other operators")
            out[category] = out.get(category, 0.0) + e.cpu_time_total / 1e3
        out["Python"] = max(wall - sum(out.values()), 0.0)
        out["total"] = wall
        results.append(out)
    results.sort(key=lambda r: r["total"])
    return results[len(results) // 2]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table, one row per measurement (median ms per call; ratios to the best dense)."""
    lines = [
        "| backbone | mode | threads | group | policy (keep/reuse/skip) | eager | executor | ORT | compile "
        "| masked | sparse | best dense | MAC ratio | time / best dense (min) | time / MAC | vs executor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, ms = r["shares"], r["paths_ms"]

        def cell(name: str, ms: dict[str, float] = ms) -> str:
            return f"{ms[name]:.1f}" if name in ms else "–"

        vs_executor = f"{r['time_ratio_executor']:.3f}" if r["time_ratio_executor"] is not None else "–"
        lines.append(
            f"| {r['backbone']} | {r['mode']} | {r['threads']} | {r['policy_group_size']} | {r['policy']} "
            f"({s['keep']:.2f}/{s['reuse']:.2f}/{s['skip']:.2f}) | {cell('eager')} | {cell('executor')} "
            f"| {cell('onnxruntime')} | {cell('compile')} | {r['masked_ms']:.1f} | {r['sparse_ms']:.1f} "
            f"| {r['best_dense']} | {r['mac_ratio']:.3f} | {r['time_ratio_best_dense']:.3f} "
            f"({r['time_ratio_best_dense_min']:.3f}) | {r['time_over_mac']:.2f} | {vs_executor} |"
        )
    return "\n".join(lines)
