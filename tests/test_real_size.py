"""The real-size benchmark runs end to end on its Something-V1-layout data (here with the tiny demo model)."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from adafuse.checkpoint import read_checkpoint

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "real_size.py"


def test_real_size_trains_times_and_evaluates(tmp_path):
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--configs", "demo", "--steps", "2",
               "--num-videos", "4", "--workers", "0"]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    (row,) = json.loads(out.stdout)["rows"]
    assert len(row["step_seconds"]) == 2 and all(s > 0 for s in row["step_seconds"])
    assert row["eval_clips"] == 2  # the validation half of the 4 videos
    assert row["input_size"] == 64 and row["num_segments"] == 8
    assert row["precision"] == ("16-mixed" if torch.cuda.is_available() else "32-true")
    assert row["gflops"] <= row["gflops_dense"]
    ckpt = read_checkpoint(tmp_path / "runs" / "demo_b2" / "checkpoints" / "last.ckpt")
    assert ckpt["adafuse"]["config"]["num_classes"] == 174  # the something_v1 preset's packaged class names
    assert json.loads((tmp_path / "real_size.json").read_text())["rows"] == [row]
