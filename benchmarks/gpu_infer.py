"""Batched sparse AdaFuse inference on a GPU against the best dense TSN on the same GPU.

    python benchmarks/gpu_infer.py --out DIR          # ResNet-50, 224 px, 16 clips x 8 frames and 1 x 8, groups of 32
    TRITON_INTERPRET=1 python benchmarks/gpu_infer.py --backbone resnet10_mini --input-size 32 --num-segments 2 \\
        --batch-sizes 1 --group-size 16 --rounds 1 --iters 1 --out DIR                            # CPU smoke

Random weights, BatchNorm statistics set by one training-mode pass over random clips (so activations keep their
scale in float16); the AdaFuse model is the TSN one plus policy nets (hidden ``--policy-hidden``), same backbone
weights. Policies (``--policies``): ``paper`` forces masks whose every group draws keep / reuse / skip independently
with its stage's shares in :data:`adafuse.bench.latency.PAPER_SHARES` (per-sample masks, the paper's shares on
average); ``keep`` keeps everything. Paths, all float16 under ``inference_mode`` with ``cudnn.benchmark``:

- dense TSN: ``eager`` (NCHW), ``eager_cl`` (channels_last), ``compile`` (torch.compile of the channels_last model),
  ``graph`` (the channels_last model captured in a CUDA graph), ``engine`` / ``engine_graph`` (the GPU executor on
  the TSN model: BatchNorm folded, cuDNN): the best of them is the baseline;
- ``masked``: the AdaFuse recognizer with the masks multiplied in (what the paper ran);
- ``sparse`` / ``sparse_graph``: :class:`~adafuse.inference.gpu_executor.GpuSparseRecognizer` with the forced masks
  (the policy nets do not run);
- ``budget_graph`` (``paper`` only): the executor deciding with its own policy nets under the group budget of the
  paper's shares (exactly the paper's number of unskipped groups per frame; keep vs reuse by the random policy).

Timing: paths interleaved in shuffled rounds, ``--iters`` calls per round between two synchronisations; median per
call. ``mac_ratio``: Eq. 5 MACs of the masks as executed (:func:`executed_policies`) over the dense TSN's, policy
nets included; the target is ``time / best dense ≤ 1.2 × mac_ratio``.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from _machine import write_report
from adafuse.bench.latency import PAPER_SHARES
from adafuse.flops import adaptive_macs, profile
from adafuse.inference.gpu_executor import GpuSparseRecognizer, budget_from_shares, executed_policies
from adafuse.layers.actions import NUM_ACTIONS
from adafuse.models import build_model

DENSE = ("eager", "eager_cl", "compile", "graph", "engine", "engine_graph")


def forced_masks(model, shares, *, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Masks (N, T, G, 3): every group of every frame draws its action independently with its stage's shares, so
    each sample has its own masks (as under a real policy) and the shares hold on average."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, fusion in model.fusions().items():
        p = torch.tensor(shares[int(name.split(".")[1][len("layer"):]) - 1])
        ids = torch.multinomial(p, batch * model.num_segments * fusion.decisions, replacement=True, generator=gen)
        ids = ids.view(batch, model.num_segments, fusion.decisions)
        masks[name] = torch.zeros(*ids.shape, NUM_ACTIONS).scatter_(-1, ids.unsqueeze(-1), 1.0)
    return masks


def calibrate(model, clips: torch.Tensor) -> None:
    """BatchNorm running statistics from one training-mode pass (cumulative average: exactly this batch's)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(clips)
    model.eval()


def cuda_graph(fn: Callable, example: torch.Tensor) -> Callable:
    """``fn`` captured in a CUDA graph for inputs shaped like ``example`` (three warm-up calls first)."""
    static = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        out = fn(static)

    def run(x):
        static.copy_(x)
        graph.replay()
        return out

    return run


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(args: argparse.Namespace, batch: int, deadline: float) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    dtype = torch.float16 if gpu else torch.float32
    torch.manual_seed(0)
    t = args.num_segments
    common = {"backbone": args.backbone, "num_classes": 174, "num_segments": t}
    tsn = build_model(method="tsn", **common)
    ada = build_model(method="adafuse_tsn", policy_hidden=args.policy_hidden, policy_group_size=args.group_size,
                      **common)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    clips = torch.randn(batch, t, 3, args.input_size, args.input_size, generator=gen)
    calibrate(tsn.to(device), clips[: max(batch, 2)].to(device))
    ada.load_state_dict(tsn.state_dict(), strict=False)
    ada.eval()
    tsn_table, ada_table = profile(tsn, input_size=args.input_size), profile(ada, input_size=args.input_size)
    x = clips.to(device=device, dtype=dtype)
    nchw = copy.deepcopy(tsn).to(device=device, dtype=dtype).eval()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    ada_half = copy.deepcopy(ada).to(device=device, dtype=dtype).to(memory_format=torch.channels_last).eval()
    reference_model = copy.deepcopy(ada).to(device)  # float32, for the exactness check
    engine_tsn = GpuSparseRecognizer.from_model(tsn, dtype=dtype, device=device)
    engine = GpuSparseRecognizer.from_model(ada, dtype=dtype, device=device)
    dense: dict[str, Callable] = {}  # built once per batch size (one compilation, one capture), timed with each policy
    if "eager" in args.dense:
        dense["eager"] = lambda x: nchw(x)
    if "eager_cl" in args.dense:
        dense["eager_cl"] = lambda x: nhwc(x)
    if "compile" in args.dense and gpu and time.perf_counter() < deadline:
        compiled = torch.compile(nhwc)
        dense["compile"] = lambda x: compiled(x)
    if "graph" in args.dense and gpu:
        dense["graph"] = cuda_graph(lambda x: nhwc(x), x)
    if "engine" in args.dense:
        dense["engine"] = lambda x: engine_tsn.forward_with_policies(x)[0]
    if "engine_graph" in args.dense and gpu:
        dense["engine_graph"] = engine_tsn.graphed(x)
    rows = []
    for policy in args.policies:
        shares = PAPER_SHARES if policy == "paper" else ((1.0, 0.0, 0.0),) * 4
        masks = {k: v.to(device) for k, v in forced_masks(ada, shares, batch=batch, seed=2).items()}
        paths = dict(dense)
        paths["masked"] = lambda x, m=masks: ada_half.forward_with_policies(x, actions=m)[0]
        paths["sparse"] = lambda x, m=masks: engine.forward_with_policies(x, actions=m)[0]
        if gpu:
            paths["sparse_graph"] = cuda_graph(lambda x, m=masks: engine.forward_with_policies(x, actions=m)[0], x)
        budget_masks = None
        if policy == "paper":
            budgeted = GpuSparseRecognizer.from_model(ada, dtype=dtype, device=device,
                                                      budget=budget_from_shares(ada, PAPER_SHARES))  # fmt: skip
            budget_masks = budgeted.forward_with_policies(x)[1]
            name = "budget_graph" if gpu else "budget"
            paths[name] = budgeted.graphed(x) if gpu else (lambda x, b=budgeted: b.forward_with_policies(x)[0])
        with torch.inference_mode():
            for fn in paths.values():  # warm-up: compilation, kernel tuning, cuDNN plans
                fn(x)
            sync(device)
            reference = reference_model.forward_with_policies(clips.to(device), actions=masks)[0]
            error = (engine.forward_with_policies(x, actions=masks)[0].float() - reference).abs().max() / \
                reference.abs().max()  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in paths}
            order = list(paths)
            for r in range(args.rounds):
                random.Random(r).shuffle(order)
                for name in order:
                    sync(device)
                    start = time.perf_counter()
                    for _ in range(args.iters):
                        paths[name](x)
                    sync(device)
                    times[name].append((time.perf_counter() - start) / args.iters)
        ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        dense_ms = {k: v for k, v in ms.items() if k in DENSE}
        best = min(dense_ms, key=dense_ms.get)

        def ratio(m):
            return float(adaptive_macs(executed_policies(m), ada_table, batch_size=batch).mean()) / tsn_table.dense_macs

        share = torch.cat([m.reshape(-1, NUM_ACTIONS) for m in masks.values()]).mean(0).tolist()
        row = {"batch": batch, "frames": t, "policy": policy, "shares": share, "ms": ms, "best_dense": best,
               "mac_ratio": ratio(masks), "logit_error": float(error)}  # fmt: skip
        sparse = "sparse_graph" if "sparse_graph" in ms else "sparse"
        row["time_ratio"] = ms[sparse] / ms[best]
        row["time_over_mac"] = row["time_ratio"] / row["mac_ratio"]
        if budget_masks is not None:
            name = "budget_graph" if gpu else "budget"
            row["budget_mac_ratio"] = ratio(budget_masks)
            row["budget_time_ratio"] = ms[name] / ms[best]
            row["budget_time_over_mac"] = row["budget_time_ratio"] / row["budget_mac_ratio"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """One table row per (batch, policy): every path's ms, the best dense path, the ratios."""
    names = sorted({k for r in rows for k in r["ms"]}, key=lambda k: (k not in DENSE, k))
    lines = ["| batch × T | policy | " + " | ".join(f"{n} ms" for n in names)
             + " | best dense | MAC ratio | time ratio | time / MAC (≤ 1.2) | budget: MAC, time, time/MAC |",
             "|---|---|" + "---:|" * len(names) + "---|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{r['ms'][n]:.2f}" if n in r["ms"] else "-" for n in names)
        budget = (f"{r['budget_mac_ratio']:.3f}, {r['budget_time_ratio']:.3f}, {r['budget_time_over_mac']:.2f}"
                  if "budget_mac_ratio" in r else "-")  # fmt: skip
        shares = "/".join(f"{v:.2f}" for v in r["shares"])
        lines.append(f"| {r['batch']} × {r['frames']} | {r['policy']} ({shares}) | {cells} | {r['best_dense']} | "
                     f"{r['mac_ratio']:.3f} | {r['time_ratio']:.3f} | {r['time_over_mac']:.2f} | {budget} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every batch size, print JSON and the markdown table, write both to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--policy-hidden", type=int, default=64)
    parser.add_argument("--policies", nargs="+", choices=["paper", "keep"], default=["paper", "keep"])
    parser.add_argument("--dense", nargs="+", choices=DENSE, default=list(DENSE))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=1e9, help="torch.compile is skipped once it is spent")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_infer"))
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    rows = [row for b in args.batch_sizes for row in measure(args, b, deadline=start + args.budget_s)]
    report = {"rows": rows, "seconds": time.perf_counter() - start}
    write_report(args.out, "gpu_infer", report, markdown(rows), argv=argv, gpu=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
