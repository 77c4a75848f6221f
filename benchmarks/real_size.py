"""Real-size sanity: the paper's Something-V1 configs trained and evaluated at 224 px, T = 8, timed per step.

    python benchmarks/real_size.py --out runs/real_size                       # CPU (or the GPU, if there is one)
    python benchmarks/real_size.py --configs sthv1_r50_adafuse_tsm_last sthv1_r50_tsm --batch-size 2 16

We cannot ship Something-Something, so this writes a dataset in its exact layout (``<id>/00001.jpg`` frame folders,
``id num_frames label`` lists, preset ``something_v1`` with its 174 packaged class names) holding random frames, and
runs each config through the same code a user runs: ``fit`` (Lightning, the config's loss, optimizer and precision
— 16-mixed on a GPU) for ``--steps`` training steps, then ``evaluate_checkpoint`` over the validation list. Random
weights (``model.pretrained=null``: nothing is downloaded). Accuracy is meaningless here; what is measured is that a
step runs at real size, its time and peak GPU memory. Prints JSON and a markdown table; writes both to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

from _machine import write_report
from adafuse.data.spec import save_dataset_yaml
from adafuse.engine.config import load_config, resolve_config
from adafuse.engine.evaluate import evaluate_checkpoint
from adafuse.engine.train import fit, resolve_precision


def write_something_v1(root: Path, *, num_videos: int, num_frames: int = 24, height: int = 240,
                       width: int = 320) -> Path:
    """A Something-V1-layout dataset of random JPEG frames (H × W), half train and half val; its dataset.yaml."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(num_videos):
        folder = root / "frames" / str(100000 + i)
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(1, num_frames + 1):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{f:05d}.jpg", quality=90)
        lines.append(f"{100000 + i} {num_frames} {int(rng.integers(0, 174))}\n")
    half = num_videos // 2
    (root / "train.txt").write_text("".join(lines[:half]))
    (root / "val.txt").write_text("".join(lines[half:]))
    return save_dataset_yaml(root / "dataset.yaml", preset="something_v1", root="frames", train_list="train.txt",
                             val_list="val.txt")


class StepTimer(L.Callback):
    """Wall time of each training step (forward, backward, optimizer), synchronised with the GPU."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, *args) -> None:  # noqa: D102
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:  # noqa: D102
        self._sync()
        self.seconds.append(time.perf_counter() - self._start)


def measure(name: str, *, data: Path, out: Path, batch_size: int, steps: int, workers: int) -> dict:
    """Train ``steps`` steps of a config, then evaluate it on the validation list; times and memory."""
    run = out / "runs" / f"{name}_b{batch_size}"
    config = load_config(resolve_config(name), [
        f"data.dataset={data}", f"data.batch_size={batch_size}", f"data.workers={workers}", "model.pretrained=null",
        f"trainer.out={run}", "trainer.devices=1", "trainer.strategy=auto", f"trainer.max_steps={steps}",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.checkpoint_every_steps=0",
        "trainer.limit_val_batches=0",
    ])
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    trained = fit(config, callbacks=[timer])
    train_memory = torch.cuda.max_memory_allocated() / 2**30 if gpu else None
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = evaluate_checkpoint(trained["last"], batch_size=batch_size, workers=workers,
                                 device="cuda" if gpu else "cpu", progress=False)
    eval_seconds = time.perf_counter() - start
    step = statistics.median(timer.seconds[1:] or timer.seconds)  # the first step also pays for autotuning
    precision = resolve_precision(config["trainer"]["precision"], config["trainer"]["accelerator"])
    return {
        "config": name, "batch_size": batch_size, "num_segments": config["model"]["num_segments"],
        "input_size": config["data"]["input_size"], "precision": precision,  # of training; evaluation runs in fp32
        "step_seconds": timer.seconds, "first_step_s": timer.seconds[0], "step_s": step,
        "clips_per_s_train": batch_size / step, "eval_seconds": eval_seconds,
        "eval_clips": result["videos"], "gflops": result["gflops"], "gflops_dense": result["gflops_dense"],
        "params": result["params"], "train_peak_gib": train_memory,
        "eval_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }


def markdown(rows: list[dict]) -> str:
    """The measurements as a markdown table."""
    lines = ["| config | batch | precision | first step s | step s (median) | train clips/s | eval s (clips) "
             "| GFLOPs/video | params | peak GiB train/eval |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        memory = f"{r['train_peak_gib']:.1f} / {r['eval_peak_gib']:.1f}" if r["train_peak_gib"] is not None else "-"
        lines.append(f"| {r['config']} | {r['batch_size']} | {r['precision']} | {r['first_step_s']:.2f} | "
                     f"{r['step_s']:.3f} | {r['clips_per_s_train']:.1f} | {r['eval_seconds']:.1f} ({r['eval_clips']}) "
                     f"| {r['gflops']:.1f} | {r['params']:,} | {memory} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the dataset, measure each (config, batch size), print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["sthv1_r50_adafuse_tsm_last"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=3, help="training steps per config (the first is warm-up)")
    parser.add_argument("--num-videos", type=int, default=16, help="half train, half validation")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/real_size"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*could not find the monitored key")  # no validation here, on purpose
    data = args.out / "data" / "dataset.yaml"
    if not data.is_file():
        write_something_v1(args.out / "data", num_videos=args.num_videos)
    rows = [measure(name, data=data, out=args.out, batch_size=b, steps=args.steps, workers=args.workers)
            for name in args.configs for b in args.batch_size]
    write_report(args.out, "real_size", {"rows": rows}, markdown(rows), argv=argv, gpu=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
