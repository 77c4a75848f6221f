"""Training step time and peak memory of AdaFuse vs its baselines, eager / channels_last / compiled, and where a step's
time goes (torch.profiler, by part: convolutions, BatchNorm, policy nets, Gumbel/straight-through, mask arithmetic).

    python benchmarks/gpu_train.py --out DIR                                  # GPU: ResNet-50, 224 px, T 8, batch 16
    python benchmarks/gpu_train.py --backbone resnet10_mini --input-size 32 --num-segments 2 --batch-size 2 \\
        --steps 1 --rounds 1 --modes eager channels_last --out DIR           # CPU smoke

Each model is the paper's Something-V1 config (``sthv1_r50_<method>``: its policy sizes, its loss), with random weights
and random clips already on the device (data loading is not timed). A step is exactly the library's training step
without Lightning's loop around it: :meth:`RecognitionModule.training_terms` (forward, Eq. 6, the logged statistics;
through ``torch.compile`` in the compiled modes) under autocast, the scaled backward, unscale, gradient clipping at
the config's value, SGD, scaler update — what ``precision: 16-mixed`` runs. Variants are warmed up (compiled) first,
then timed in interleaved, shuffled rounds of ``--steps`` steps (synchronised once per round, so the host runs ahead
as in training); ``step_s`` is the median over rounds, ``min_s`` the best. Peak memory: the most allocated during one
step above what was allocated before it, plus the variant's own weights and momentum.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from _machine import write_report
from adafuse.engine.config import load_config, model_kwargs, resolve_config
from adafuse.engine.module import RecognitionModule
from adafuse.flops import profile
from adafuse.layers import fusion as fusion_module
from adafuse.layers.adaptive_fusion import AdaptiveFusion
from adafuse.layers.policy import PolicyNet
from adafuse.models import build_model

MODES = {  # name -> (compile, channels_last)
    "eager": (False, False),
    "channels_last": (False, True),
    "compile": (True, False),
    "compile_cl": (True, True),
}
BASELINE = {"adafuse_tsn": "tsn", "adafuse_tsm_last": "tsm", "adafuse_tsm": "tsm"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Variant:
    """One (method, mode): a recognizer, its training module, optimizer and grad scaler on the device."""

    def __init__(self, method: str, mode: str, args: argparse.Namespace, device: torch.device) -> None:
        self.method, self.mode = method, mode
        compile, channels_last = MODES[mode]
        config = load_config(resolve_config(f"sthv1_r50_{method}"), [
            f"model.backbone={args.backbone}", f"model.num_segments={args.num_segments}", "model.pretrained=null",
            f"data.input_size={args.input_size}",
        ])  # fmt: skip
        torch.manual_seed(0)
        model = build_model(**model_kwargs(config), num_classes=174, input_size=args.input_size)
        table = profile(model, input_size=args.input_size)
        self.module = RecognitionModule(model.to(device), table=table, config=config, meta={}, compile=compile,
                                        channels_last=channels_last).train()  # fmt: skip
        self.module.table = table.to(device)  # what on_fit_start does
        self.optimizer = self.module.configure_optimizers()["optimizer"]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.clip = config["optim"]["clip_grad"]
        self.weight = config["loss"]["efficiency_weight"]
        self.amp = args.precision == "16-mixed" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.device = device
        self.resident_bytes = 2 * sum(p.numel() * p.element_size() for p in self.params)  # weights + momentum
        self.gflops = table.dense_gmacs
        self.params_count = sum(p.numel() for p in model.parameters())

    @property
    def name(self) -> str:
        return f"{self.method}/{self.mode}"

    def step(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        self.optimize(self.backward(self.loss(clips, labels)))

    def loss(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            return self.module._terms(clips, labels, efficiency_weight=self.weight)[0]

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def optimize(self, _: None = None) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def peak_bytes(self, clips: torch.Tensor, labels: torch.Tensor) -> int | None:
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.step(clips, labels)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before + self.resident_bytes


# -- per-part profile ---------------------------------------------------------------------------------------------

PARTS = ("convolutions", "batchnorm", "other model ops", "policy nets", "gumbel / straight-through", "mask arithmetic",
         "loss and cost", "optimizer")  # fmt: skip


def _labelled(variant: Variant) -> Callable[[], None]:
    """Put profiler ranges around the parts of the forward pass (module hooks; the recognizer's forward and the fusion
    function wrapped): returns the function that removes them."""
    rf = torch.profiler.record_function
    handles, ranges = [], {}

    def enter(label):
        def hook(module, args):
            ranges[id(module)] = rf(label).__enter__()
        return hook

    def leave(module, args, output):
        ranges.pop(id(module)).__exit__(None, None, None)

    for m in variant.module.model.modules():
        label = "part::policy nets" if isinstance(m, PolicyNet) else "part::decide" if isinstance(m, AdaptiveFusion) \
            else None  # fmt: skip
        if label:
            handles += [m.register_forward_pre_hook(enter(label)), m.register_forward_hook(leave)]
    original, model = fusion_module.fuse, variant.module.model
    forward = model.forward_with_policies

    def fuse(y, mask):
        with rf("part::mask arithmetic"):
            return original(y, mask)

    def forward_with_policies(*args, **kwargs):
        with rf("part::model"):
            return forward(*args, **kwargs)

    fusion_module.fuse, model.forward_with_policies = fuse, forward_with_policies

    def remove():
        fusion_module.fuse = original
        del model.forward_with_policies
        for h in handles:
            h.remove()

    return remove


def _forward_label(event) -> tuple[str | None, int | None]:
    """(innermost ``part::`` range around an op, the autograd sequence number of the backward node it runs in)."""
    label = backward = None
    node = event.cpu_parent
    while node is not None:
        if label is None and node.name.startswith("part::"):
            label = node.name[len("part::"):]
        if backward is None and node.name.startswith("autograd::engine::evaluate_function"):
            backward = node.sequence_nr
        node = node.cpu_parent
    return label, backward


def profile_step(variant: Variant, clips: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Device time (CPU time without a GPU) of one training step by part, in ms. Backward ops belong to the part of
    the forward op whose gradient they compute (matched by autograd sequence number)."""
    from torch.profiler import ProfilerActivity

    cuda = variant.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    remove = _labelled(variant)
    rf = torch.profiler.record_function
    try:
        variant.step(clips, labels)
        sync(variant.device)
        with torch.profiler.profile(activities=activities) as prof:
            loss = variant.loss(clips, labels)
            variant.backward(loss)
            with rf("part::optimizer"):
                variant.optimize()
            sync(variant.device)
    finally:
        remove()
    events = [e for e in prof.events() if not e.name.startswith(("part::", "autograd::", "ProfilerStep"))]
    labelled = [(e, *_forward_label(e)) for e in events]
    by_sequence = {e.sequence_nr: label for e, label, backward in labelled if backward is None and e.sequence_nr >= 0}
    totals: dict[str, float] = defaultdict(float)
    for e, label, backward in labelled:
        us = getattr(e, "self_device_time_total", None) if cuda else e.self_cpu_time_total
        if us is None:
            us = e.self_cuda_time_total
        if not us:
            continue
        if backward is not None:
            label = by_sequence.get(backward, "model")
        part = {"policy nets": "policy nets", "decide": "gumbel / straight-through", "optimizer": "optimizer",
                "mask arithmetic": "mask arithmetic", None: "loss and cost"}.get(label)  # fmt: skip
        if part is None:  # the rest of the model
            part = "convolutions" if "conv" in e.name else "batchnorm" if "batch_norm" in e.name else "other model ops"
        totals[part] += us / 1e3
    return {part: round(totals.get(part, 0.0), 3) for part in PARTS}


# -- the run ------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(0)
    clips = torch.randn(args.batch_size, args.num_segments, 3, args.input_size, args.input_size, generator=gen)
    clips, labels = clips.to(device), torch.randint(0, 174, (args.batch_size,), generator=gen).to(device)
    variants, warmup_s, skipped = [], {}, []
    for mode in args.modes:
        for method in args.models:
            # a variant whose warm-up (its compilation) would end past 80% of the budget is not started
            expected = max(warmup_s.values(), default=0.0)
            if time.perf_counter() - start + expected > 0.8 * args.budget_s:
                skipped.append(f"{method}/{mode}")
                continue
            t0 = time.perf_counter()
            v = Variant(method, mode, args, device)
            for _ in range(args.warmup):
                v.step(clips, labels)
            sync(device)
            warmup_s[v.name] = time.perf_counter() - t0
            variants.append(v)
    times: dict[str, list[float]] = defaultdict(list)
    order = list(variants)
    for r in range(args.rounds):
        random.Random(r).shuffle(order)
        for v in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                v.step(clips, labels)
            sync(device)
            times[v.name].append((time.perf_counter() - t0) / args.steps)
        if time.perf_counter() - start > args.budget_s and r + 1 >= 2:
            break
    rows = []
    for v in variants:
        peak = v.peak_bytes(clips, labels)
        rows.append({
            "method": v.method, "mode": v.mode, "step_s": statistics.median(times[v.name]),
            "min_s": min(times[v.name]), "rounds": len(times[v.name]), "warmup_s": warmup_s[v.name],
            "peak_gib": None if peak is None else peak / 2**30, "gflops_dense": v.gflops, "params": v.params_count,
        })  # fmt: skip
    by_key = {(r["method"], r["mode"]): r for r in rows}
    for r in rows:
        base = by_key.get((BASELINE.get(r["method"]), r["mode"]))
        r["vs_baseline"] = r["step_s"] / base["step_s"] if base else None
    best = {}
    for r in rows:
        if r["method"] not in best or r["step_s"] < best[r["method"]]["step_s"]:
            best[r["method"]] = r
    best_ratio = {m: best[m]["step_s"] / best[BASELINE[m]]["step_s"] for m in best if BASELINE.get(m) in best}
    profiles = {}
    if args.profile:
        for v in variants:
            if v.mode in ("eager", "channels_last"):
                profiles[v.name] = profile_step(v, clips, labels)
    return {"rows": rows, "best": {m: r["mode"] for m, r in best.items()}, "best_ratio": best_ratio,
            "profiles": profiles, "skipped": skipped, "seconds": time.perf_counter() - start}  # fmt: skip


def markdown(report: dict) -> str:
    """The step-time table, the best-vs-best ratios, and the per-part profiles."""
    lines = ["| method | mode | step s (median) | min s | vs baseline, same mode | peak GiB | warm-up s |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in report["rows"]:
        ratio = f"{r['vs_baseline']:.3f}" if r["vs_baseline"] is not None else "-"
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        lines.append(f"| {r['method']} | {r['mode']} | {r['step_s']:.4f} | {r['min_s']:.4f} | {ratio} | {peak} "
                     f"| {r['warmup_s']:.1f} |")  # fmt: skip
    lines.append("")
    for method, ratio in report["best_ratio"].items():
        lines.append(f"- best {method} ({report['best'][method]}) / best {BASELINE[method]} "
                     f"({report['best'][BASELINE[method]]}): **{ratio:.3f}** (target ≤ 1.10)")  # fmt: skip
    if report["skipped"]:
        lines.append(f"- not run (time budget): {', '.join(report['skipped'])}")
    if report["profiles"]:
        lines += ["", "Per-part time of one step (ms, device time; CPU time without a GPU):", "",
                  "| variant | " + " | ".join(PARTS) + " |", "|---|" + "---:|" * len(PARTS)]  # fmt: skip
        for name, parts in report["profiles"].items():
            lines.append(f"| {name} | " + " | ".join(f"{parts[p]:.2f}" for p in PARTS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print JSON and the markdown table, write both to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tsn", "adafuse_tsn", "tsm", "adafuse_tsm_last"])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["eager", "channels_last", "compile_cl"])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", choices=["16-mixed", "32"], default="16-mixed", help="16-mixed on a GPU only")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compilation happens here)")
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="per-part profile of one step of every eager variant")
    parser.add_argument("--budget-s", type=float, default=1e9,
                        help="seconds: variants whose warm-up would end past 80%% of it are skipped, rounds stop at it")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_train"))
    args = parser.parse_args(argv)
    report = run(args)
    write_report(args.out, "gpu_train", report, markdown(report), argv=argv, gpu=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
