"""Per-frame latency of the exported dense TSN under ONNX Runtime next to our eager and folded paths (docs/deploy.md).

    .venv/bin/python benchmarks/onnx_latency.py --out runs/onnx_latency      # ResNet-50, 224 px: ~4 min on 2 cores

One frame of one stream at a time (batch 1), one thread everywhere, random weights (time does not depend on them).
Paths, all on the same frames, in a freshly shuffled order every frame so that load on a shared machine hits them
alike:

- ``eager``: the TSN recognizer in PyTorch, eval mode, NCHW; ``eager_channels_last``: the same, NHWC;
- ``folded``: :class:`~adafuse.inference.SparseRecognizer` on the TSN model (BatchNorm folded, weights pre-packed,
  fused ReLU / residual): our dense engine, the reference of the ratios;
- ``onnxruntime``: the TSN streaming step written by :func:`adafuse.inference.export.export_onnx` (batch 1), CPU
  execution provider, all graph optimizations, one intra-op thread;
- ``onnxruntime_adafuse``: the same for AdaFuse-TSN (``--policy-hidden``): masked-dense, every channel computed and
  the policy nets on top: what an export of AdaFuse costs.

Prints the markdown table and writes ``onnx_latency.json`` and ``onnx_latency.md`` (with the machine and the
command) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from _machine import describe_machine
from adafuse.inference import SparseRecognizer
from adafuse.inference.export import export_onnx
from adafuse.models import build_model


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, sequential, all graph optimizations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # as torch.set_flush_denormal below
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_stream(session: ort.InferenceSession) -> Callable[[np.ndarray], np.ndarray]:
    """The deployment loop of an exported streaming step: ``step(frames) -> logits``, carrying the state itself."""
    state = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()[1:]}  # fixed batch: concrete shapes

    def step(frames: np.ndarray) -> np.ndarray:
        logits, *rest = session.run(None, {"frames": frames, **state})
        state.update(zip(state, rest[len(rest) - len(state) :], strict=True))  # next_state.* last, in state.* order
        return logits

    return step


def measure(*, backbone: str, input_size: int, threads: int, frames: int, warmup: int, policy_hidden: int,
            num_classes: int, seed: int) -> dict:  # fmt: skip
    """Per-frame times (ms) of every path, min and median, and each median over the folded engine's."""
    torch.manual_seed(seed)
    tsn = build_model(backbone=backbone, method="tsn", num_classes=num_classes, num_segments=1,
                      input_size=input_size).eval()  # fmt: skip
    ada = build_model(backbone=backbone, method="adafuse_tsn", num_classes=num_classes, num_segments=1,
                      input_size=input_size, policy_hidden=policy_hidden).eval()  # fmt: skip
    export_seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, model in (("onnxruntime", tsn), ("onnxruntime_adafuse", ada)):
            result = export_onnx(model, Path(tmp) / f"{name}.onnx", mode="stream", batch_size=1)
            export_seconds[name] = round(result.seconds, 1)
            sessions[name] = ort_stream(ort_session(result.path, threads))
        channels_last = build_model(backbone=backbone, method="tsn", num_classes=num_classes, num_segments=1,
                                    input_size=input_size).eval()  # fmt: skip
        channels_last.load_state_dict(tsn.state_dict())
        channels_last = channels_last.to(memory_format=torch.channels_last)
        folded = SparseRecognizer.from_model(tsn, input_size=input_size)
        state = folded.init_state(1)
        clip = torch.randn(warmup + frames, 1, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed))

        runs: dict[str, Callable[[torch.Tensor], object]] = {
            "eager": lambda x: tsn(x[None]),
            "eager_channels_last": lambda x: channels_last(x.contiguous(memory_format=torch.channels_last)[None]),
            "folded": lambda x: folded.step(x, state),
            **{name: (lambda x, step=step: step(x.numpy())) for name, step in sessions.items()},
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        order = list(runs)
        rng = random.Random(seed)
        load = os.getloadavg()[0]
        with torch.inference_mode():
            for i in range(warmup + frames):
                rng.shuffle(order)
                for name in order:
                    start = time.perf_counter()
                    runs[name](clip[i])
                    if i >= warmup:
                        times[name].append((time.perf_counter() - start) * 1e3)
        load = (load + os.getloadavg()[0]) / 2
    with torch.inference_mode():  # the graphs compute what PyTorch computes (a quick check on the last frame)
        x = clip[-1]
        difference = float(np.abs(sessions["onnxruntime"](x.numpy()) - tsn(x[None]).numpy()).max())
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "backbone": backbone, "input_size": input_size, "threads": threads, "frames": frames,
        "policy_hidden": policy_hidden, "onnxruntime_version": ort.__version__, "torch_version": torch.__version__,
        "median_ms": {k: round(v, 2) for k, v in median.items()},
        "min_ms": {name: round(min(t), 2) for name, t in times.items()},
        "ratio_to_folded": {name: round(m / median["folded"], 3) for name, m in median.items()},
        "export_seconds": export_seconds, "max_abs_difference_onnxruntime_vs_eager": difference,
        "load_average": round(load, 1),
    }  # fmt: skip


LABELS = {
    "eager": "eager PyTorch, NCHW",
    "eager_channels_last": "eager PyTorch, channels_last",
    "folded": "our folded dense engine (`SparseRecognizer` on TSN)",
    "onnxruntime": "ONNX Runtime, exported TSN step (`adafuse export --mode stream`)",
    "onnxruntime_adafuse": "ONNX Runtime, exported AdaFuse-TSN step (masked-dense)",
}


def markdown_table(result: dict) -> str:
    """One row per path: median and min ms per frame, median over the folded engine's."""
    rows = ["| path (TSN unless said) | median ms / frame | min ms | median / folded |", "|---|---|---|---|"]
    for name, label in LABELS.items():
        rows.append(f"| {label} | {result['median_ms'][name]:.1f} | {result['min_ms'][name]:.1f} | "
                    f"{result['ratio_to_folded'][name]:.2f} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--policy-hidden", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=174)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/onnx_latency"))
    args = p.parse_args()

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    try:
        result = measure(backbone=args.backbone, input_size=args.input_size, threads=args.threads,
                         frames=args.frames, warmup=args.warmup, policy_hidden=args.policy_hidden,
                         num_classes=args.num_classes, seed=args.seed)  # fmt: skip
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous)
    machine = f"{describe_machine()}; onnxruntime {ort.__version__}; load average {result['load_average']}"
    command = " ".join(["python benchmarks/onnx_latency.py", *sys.argv[1:]])
    table = markdown_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "onnx_latency.json").write_text(json.dumps({"machine": machine, "command": command,
                                                            "result": result}, indent=1))  # fmt: skip
    (args.out / "onnx_latency.md").write_text(f"{table}\n\nMachine: {machine}\nCommand: `{command}`\n")
    print(json.dumps(result))
    print(f"\n{table}\n\nMachine: {machine}\nCommand: `{command}`")


if __name__ == "__main__":
    main()
