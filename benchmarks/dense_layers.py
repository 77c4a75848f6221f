"""Where the fastest dense engine wins: ONNX Runtime's own per-layer times inside the dense TSN graph, next to the
same convolutions inside our executor and alone on the engines the sparse executor can use (docs/speed.md).

    .venv/bin/python benchmarks/dense_layers.py --out runs/dense_layers     # ResNet-50, clip of 8, 224 px: ~2 min

The dense TSN (random weights) runs a clip of ``--frames`` frames:

- ``onnxruntime``: exported to ONNX, on ONNX Runtime's CPU provider with profiling on (its optimizer moves the graph
  into its blocked NCHWc layout and fuses ReLU and the residual add into the convolutions): each convolution's
  kernel time in the graph;
- ``executor``: :class:`~adafuse.inference.SparseRecognizer` on the same model (channels_last, BatchNorm folded,
  ReLU / residual fused: the 1×1 convolutions on the compiled 1×1 kernel, conv3 in place into its residual, the
  stem on the compiled row kernel with its max pool fused (so its time includes the pool), the others on oneDNN
  with pre-packed weights), each convolution's time in the network from PyTorch's profiler.

Both run in the same interleaved, shuffled rounds (profiled and not: the whole network's time is that of the
runs without a profiler), medians over ``--rounds``. Every distinct convolution is then also timed alone
(interleaved shuffled rounds, median, after one warm-up call) on:

- ``executor_alone``: :meth:`~adafuse.inference.kernels.FoldedConv.dense`, the executor's dense call (not in
  place);
- ``onednn_nhwc_alone``: the same call on oneDNN (what it runs without the compiled kernels, ``ADAFUSE_KERNELS=torch``);
- ``onednn_blocked_alone``: oneDNN on its own blocked layout (``to_mkldnn`` tensors, nChw8c on AVX2, pre-packed
  weights), the convolution alone (no ReLU, no residual: a lower bound of that layout);
- ``group_kernel_alone``: the executor's group-sparse kernel (groups of ``--group-size``) with every group active,
  ReLU / residual in its epilogue (1×1 and 3×3 only).

A layer alone runs with warm caches; in a network its input comes from the layer before and its weights from
memory, so only the in-network columns add up to a network's time. Layers are summed by kind (stem, 1×1 reducing,
3×3, 1×1 expanding with the residual, 1×1 projection shortcut). Prints the markdown table and writes
``dense_layers.json`` and ``dense_layers.md`` (with the machine and the command) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _machine import write_report
from adafuse.inference import SparseRecognizer
from adafuse.inference.extension import ENV
from adafuse.inference.group_conv import GroupSparseConv
from adafuse.inference.kernels import FoldedConv, to_channels_last
from adafuse.models import build_model

ENGINES = ("onnxruntime", "executor", "executor_alone", "onednn_nhwc_alone", "onednn_blocked_alone",
           "group_kernel_alone")  # fmt: skip
CONV_OPS = ("mkldnn::_convolution_pointwise", "adafuse_cpu::conv1x1", "adafuse_cpu::conv_rows")  # dense convs
HEADERS = (
    "ONNX Runtime ms",
    "executor ms",
    "executor alone",
    "oneDNN NHWC alone",
    "oneDNN blocked alone (conv only)",
    "group kernel alone",
)


def layer_kind(conv: dict) -> str:
    """The role of a convolution in a ResNet from its shapes: ``conv`` holds c_in, c_out, k, stride, residual."""
    if conv["k"] == 7:
        return "stem 7×7"
    if conv["k"] == 3:
        return "3×3 + residual" if conv["residual"] else "3×3"
    if conv["residual"]:
        return "1×1 expanding + residual"
    return "1×1 projection shortcut" if conv["c_out"] > conv["c_in"] else "1×1 reducing"


def in_network(model: nn.Module, clips: torch.Tensor, *, threads: int, rounds: int) -> tuple[list[dict], list, dict]:
    """ONNX Runtime and the executor on the dense ``model``, in interleaved shuffled rounds: each round runs both,
    profiled and plain. Returns ONNX Runtime's convolutions in execution order with their median kernel time (dicts
    with c_in, c_out, k, stride, size (input H), residual, ms), the executor's median time per convolution in its
    order (:func:`executor_order`) and the median whole-network milliseconds of the plain runs."""
    import onnxruntime as ort
    from torch.autograd.profiler import profile as torch_profile

    executor = SparseRecognizer.from_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tsn.onnx"
        torch.onnx.export(model, (clips,), str(path), dynamo=True, opset_version=18, input_names=["clips"],
                          verbose=False)  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "profile")
        profiled = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {"clips": clips.numpy()}
        executor_runs: list[list[float]] = []

        def executor_profiled() -> None:
            with torch_profile(use_kineto=False) as prof:  # the CPU-only profiler
                executor(clips)
            convs = [e for e in prof.function_events if e.cpu_parent is None and e.name.startswith(CONV_OPS)]
            executor_runs.append([e.cpu_time_total / 1e3 for e in convs])

        profiled.run(None, feeds)  # warm-ups (ONNX Runtime's is dropped from its profile below)
        executor(clips)
        network = _median_ms({"onnxruntime": lambda: plain.run(None, feeds), "executor": lambda: executor(clips),
                              "onnxruntime_profiled": lambda: profiled.run(None, feeds),
                              "executor_profiled": executor_profiled}, rounds)  # fmt: skip
        events = json.loads(Path(profiled.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
             and e["args"].get("op_name") in ("Conv", "FusedConv")]  # fmt: skip
    runs = len(executor_runs) - 1  # _median_ms's own warm-up call ran each path once more
    per_run = len(nodes) // (runs + 2)
    layers = []
    for i in range(per_run):
        times = [nodes[(r + 2) * per_run + i] for r in range(runs)]
        shapes = [next(iter(s.values())) for s in times[0]["args"]["input_type_shape"]]
        out = next(iter(times[0]["args"]["output_type_shape"][0].values()))
        (_, c_in, h, _), (c_out, _, k, _) = shapes[0], shapes[1]
        layers.append({"c_in": c_in, "c_out": c_out, "k": k, "stride": h // out[2], "size": h,
                       "residual": len(shapes) > 3 or (len(shapes) == 3 and shapes[2] == out),
                       "ms": statistics.median(e["dur"] for e in times) / 1000})  # fmt: skip
    executor_ms = [statistics.median(t) for t in zip(*executor_runs[1:], strict=True)]
    return layers, executor_ms, {k: network[k] for k in ("onnxruntime", "executor")}


def executor_order(model: nn.Module) -> list[dict]:
    """The convolutions of a ResNet TSN in the executor's order: c_in, c_out, k, stride, residual."""
    net = model.backbone

    def conv(c: nn.Conv2d, residual: bool) -> dict:
        return {"c_in": c.in_channels, "c_out": c.out_channels, "k": c.kernel_size[0], "stride": c.stride[0],
                "residual": residual}  # fmt: skip

    order = [conv(net.conv1, False)]
    for block in net.blocks():
        if block.downsample is not None:
            order.append(conv(block.downsample[0], False))
        last = getattr(block, "conv3", None) or block.conv2
        order += [conv(c, c is last) for c in (block.conv1, block.conv2, getattr(block, "conv3", None)) if c]
    return order


def _median_ms(fns: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # oneDNN creates its primitives (and the brgemm kernels) on a shape's first call
        fn()
    for _ in range(rounds):
        order = list(fns)
        random.shuffle(order)
        for k in order:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


@contextlib.contextmanager
def _environment(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def time_layer(conv: dict, *, batch: int, rounds: int, group_size: int) -> dict[str, float]:
    """Milliseconds of one convolution alone on the executor's engines (median of interleaved rounds)."""
    k, s = conv["k"], conv["stride"]
    layer = nn.Conv2d(conv["c_in"], conv["c_out"], k, s, k // 2)
    folded = FoldedConv(layer, None)
    with _environment(ENV, "torch"):  # the same folded conv on oneDNN
        onednn = FoldedConv(layer, None)
    x = to_channels_last(torch.randn(batch, conv["c_in"], conv["size"], conv["size"]))
    ho, wo = folded.output_size(conv["size"], conv["size"])
    residual = to_channels_last(torch.randn(batch, conv["c_out"], ho, wo)) if conv["residual"] else None
    relu = layer_kind(conv) != "1×1 projection shortcut"
    fns = {"executor_alone": lambda: folded.dense(x, relu=relu, residual=residual),
           "onednn_nhwc_alone": lambda: onednn.dense(x, relu=relu, residual=residual)}  # fmt: skip
    blocked_x = x.contiguous().to_mkldnn()
    pad, stride, dil = [k // 2] * 2, [s] * 2, [1, 1]
    blocked_w = torch._C._nn.mkldnn_reorder_conv2d_weight(folded.weight.to_mkldnn(), pad, stride, dil, 1,
                                                          list(x.shape))  # fmt: skip
    fns["onednn_blocked_alone"] = lambda: torch.mkldnn_convolution(
        blocked_x, blocked_w, folded.bias, pad, stride, dil, 1
    )
    if k in (1, 3) and conv["c_in"] % group_size == 0 and conv["c_out"] % group_size == 0:
        kernel = GroupSparseConv(folded.weight, folded.bias, stride=s, padding=k // 2, group_size=group_size)
        out = torch.empty(batch, ho, wo, conv["c_out"]).permute(0, 3, 1, 2)
        fns["group_kernel_alone"] = lambda: kernel(x, out=out, out_groups=None, in_source=None, relu=relu,
                                             residual=residual)  # fmt: skip
    return _median_ms(fns, rounds)


def summarize(layers: list[dict]) -> list[dict]:
    """Per layer kind: count, GMACs and each engine's summed milliseconds (engines missing for a kind: absent)."""
    rows: dict[str, dict] = {}
    for layer in layers:
        kind = layer_kind(layer)
        row = rows.setdefault(kind, {"kind": kind, "count": 0, "gmacs": 0.0, **{e: 0.0 for e in ENGINES}})
        row["count"] += 1
        row["gmacs"] += layer["macs"] / 1e9
        for e in ENGINES:
            if row.get(e) is not None:
                row[e] = row[e] + layer[e] if e in layer else None
    total = {"kind": "all convolutions", "count": sum(r["count"] for r in rows.values()),
             "gmacs": sum(r["gmacs"] for r in rows.values())}  # fmt: skip
    for e in ENGINES:
        values = [r[e] for r in rows.values()]
        total[e] = sum(values) if all(v is not None for v in values) else None
    return [*rows.values(), total]


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table (ms, and each engine's time over ONNX Runtime's)."""
    lines = ["| layers | count | GMACs | " + " | ".join(HEADERS) + " |", "|---|---:|---:|" + "---:|" * len(HEADERS)]
    for r in rows:
        cells = []
        for e in ENGINES:
            v = r[e]
            ratio = "" if v is None or e == "onnxruntime" else f" ({v / r['onnxruntime']:.2f})"
            cells.append("–" if v is None else f"{v:.1f}{ratio}")
        lines.append(f"| {r['kind']} | {r['count']} | {r['gmacs']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dense_layers"))
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--frames", type=int, default=8, help="frames of the clip: the batch of every layer")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--group-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(backbone=args.backbone, method="tsn", num_classes=174, num_segments=args.frames).eval()
    clips = torch.randn(1, args.frames, 3, args.size, args.size)
    layers, executor_ms, network = in_network(model, clips, threads=args.threads, rounds=args.rounds)
    by_kind: dict[str, list[float]] = {}  # the executor's times by kind, in its order
    for conv, ms in zip(executor_order(model), executor_ms, strict=True):
        by_kind.setdefault(layer_kind(conv), []).append(ms)
    measured: dict[tuple, dict[str, float]] = {}
    for layer in layers:  # ONNX Runtime's order within a kind is the network's too (stage by stage)
        key = tuple(layer[k] for k in ("c_in", "c_out", "k", "stride", "size", "residual"))
        if key not in measured:
            measured[key] = time_layer(layer, batch=args.frames, rounds=args.rounds, group_size=args.group_size)
        out = (layer["size"] + 2 * (layer["k"] // 2) - layer["k"]) // layer["stride"] + 1
        layer.update(measured[key], onnxruntime=layer["ms"], executor=by_kind[layer_kind(layer)].pop(0),
                     macs=args.frames * out * out * layer["c_out"] * layer["c_in"] * layer["k"] ** 2)  # fmt: skip
    rows = summarize(layers)
    table = markdown(rows) + (
        f"\n\nWhole network, no profiler (median ms): ONNX Runtime {network['onnxruntime']:.1f}, executor "
        f"{network['executor']:.1f} ({network['executor'] / network['onnxruntime']:.2f}); {args.threads} torch / "
        "ONNX Runtime threads."
    )
    report = {"rows": rows, "layers": layers, "network_ms": network, "threads": args.threads,
              "backbone": args.backbone, "frames": args.frames, "size": args.size}  # fmt: skip
    write_report(args.out, "dense_layers", report, table, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
