"""Resume and checkpoints: a SIGKILL mid-epoch under the cosine schedule resumes bit-exactly, ``last.ckpt`` is
the final state, the metrics history survives, a finished run is left alone, a run is resumed from its own
config and cannot be changed into another one, stale temporaries are removed."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adafuse.cli import main
from adafuse.data.synthetic import generate_synthetic
from adafuse.engine.config import load_config
from adafuse.engine.train import fit
from adafuse.errors import UserError

# The demo's schedule (AdamW + cosine per step) on a tiny model: 24 training videos, 6 batches per epoch.
FAST = [
    "model.backbone=resnet10_mini", "model.num_segments=3", "model.policy_hidden=8", "data.input_size=32",
    "data.batch_size=4", "data.workers=0", "optim.optimizer=adamw", "optim.schedule=cosine", "optim.lr=0.003",
    "optim.epochs=2", "trainer.progress=false", "trainer.tensorboard=false", "trainer.log_every_steps=1",
    "trainer.checkpoint_every_steps=5", "trainer.threads=1",
]
STEPS = 12

# Run in a separate process and killed there with SIGKILL at step 11 (mid-epoch 1; last.ckpt is from step 10).
KILLED = """
import os, signal, sys
import lightning as L
from adafuse.engine.config import load_config
from adafuse.engine.train import fit

class Kill(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 11:
            os.kill(os.getpid(), signal.SIGKILL)

fit(load_config(None, sys.argv[1:]), callbacks=[Kill()])
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(kind="temporal", out=out, num_videos=32, size=32, frames=6, seed=0)
    return out / "dataset.yaml"


def overrides(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [*FAST, f"data.dataset={dataset}", f"trainer.out={out}", *extra]


@pytest.fixture(scope="module")
def full(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return fit(load_config(None, overrides(dataset, out)))


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_last_checkpoint_is_the_final_state(full):
    # every 5 steps would stop at step 10 of 12: last.ckpt is also written after every epoch and at the end
    ckpt = torch.load(full["last"], weights_only=False)
    assert ckpt["global_step"] == STEPS
    final = full["module"].state_dict()
    assert ckpt["state_dict"].keys() == final.keys()
    for key, value in final.items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    assert ckpt["adafuse"]["frame_stride"] == 2  # 6 frames per training video / T = 3
    assert not list(Path(full["last"]).parent.glob(".*.tmp"))


def test_sigkill_mid_epoch_resume_under_cosine_is_bit_exact_and_keeps_the_history(dataset, full, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    killed = subprocess.run([sys.executable, "-c", KILLED, *overrides(dataset, run)], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    ckpt_dir = run / "checkpoints"
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=False)["global_step"] == 10  # 4 of epoch 1's 6 batches
    (ckpt_dir / ".last.ckpt.dead0001.tmp").write_bytes(b"half a checkpoint")  # as a SIGKILL during a save leaves

    resumed = fit(load_config(None, overrides(dataset, run)), resume=True)
    assert not list(ckpt_dir.glob(".*.tmp"))
    a = torch.load(full["last"], weights_only=False)
    b = torch.load(resumed["last"], weights_only=False)
    assert a["global_step"] == b["global_step"] == STEPS
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(),
                                b["optimizer_states"][0]["state"].values(), strict=True):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert full["validation"]["top1"] == resumed["validation"]["top1"]

    # metrics.csv: every row of the uninterrupted run, identical, except the training averages of the epoch the
    # run was resumed in (Lightning's running means and the per-block policy shares restart at the resume): they
    # cover its last 2 batches only.
    rows_a, rows_b = _rows(Path(full["out"]) / "metrics.csv"), _rows(run / "metrics.csv")
    assert len(rows_a) == len(rows_b) == STEPS + 2 + 2  # step rows, one epoch row and one validation row per epoch
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        resumed_epoch_average = row_a["epoch"] == "1" and row_a["train/loss_epoch"]
        per_epoch = [k for k in row_a if k.endswith("_epoch") or k.count("/") == 2 or k == "train/alive_min"]
        keys = [k for k in row_a if not (resumed_epoch_average and k in per_epoch)]
        assert {k: row_a[k] for k in keys} == {k: row_b[k] for k in keys}


def test_finished_run_resume_is_a_no_op_and_the_run_keeps_its_config(dataset, tmp_path, capsys):
    run = tmp_path / "short"
    short = fit(load_config(None, overrides(dataset, run, "trainer.max_steps=3")))
    # shorter than trainer.checkpoint_every_steps: last.ckpt still holds the end of training
    assert torch.load(short["last"], weights_only=False)["global_step"] == 3
    metrics = (run / "metrics.csv").read_bytes()

    # resumed from its own config.yaml: no --config, no data.dataset
    assert main(["train", "--resume", f"trainer.out={run}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {run} was already finished: nothing to resume")
    assert (run / "metrics.csv").read_bytes() == metrics
    assert main(["train", "--resume", f"trainer.out={run}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["already_finished"] is True

    # an override that changes what the run is: one line, exit 2
    for override, message in [
        ("model.method=tsn", "is a run with model.method='adafuse_tsn': --resume cannot change it to 'tsn'"),
        (f"data.dataset={tmp_path}/other.yaml", "is a run with data.dataset="),
        ("optim.lr=0.1", "is a run with optim.lr=0.003: --resume cannot change it to 0.1"),
    ]:
        assert main(["train", "--resume", f"trainer.out={run}", override]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    # the preset's values must agree with the run too (demo samples 8 segments, this run 3)
    assert main(["train", "--config", "demo", f"trainer.out={run}", "--resume"]) == 2
    assert "model.num_segments=3: --resume cannot change it to 8" in capsys.readouterr().err
    assert main(["train", "--resume", f"trainer.out={tmp_path}/nothing"]) == 2
    assert "nothing to resume in" in capsys.readouterr().err
    # the API too: fit(config, resume=True) with another λ must not hand back the finished run as if it were it
    with pytest.raises(UserError, match="is a run with loss.efficiency_weight=0.1: --resume cannot change it to 5.0"):
        fit(load_config(None, overrides(dataset, run, "trainer.max_steps=3", "loss.efficiency_weight=5")),
            resume=True)  # fmt: skip
    assert fit(load_config(None, overrides(dataset, run, "trainer.max_steps=3", "trainer.progress=false")),
               resume=True)["already_finished"]  # fmt: skip
