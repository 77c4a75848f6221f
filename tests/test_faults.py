"""Every mistake and I/O fault is one line with exit status 2: out-of-range values, runs that train nothing,
devices that are not there, read-only folders, a full disk; ``--json`` keeps stdout one JSON object; overrides
anywhere; Ctrl-C and skipped samples in the loader."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adafuse.checkpoint import atomic_save
from adafuse.cli import main
from adafuse.data.loader import build_loader
from adafuse.data.synthetic import generate_synthetic
from adafuse.engine import progress
from adafuse.engine.threads import default_threads
from adafuse.errors import UserError

FAST = [
    "model.backbone=resnet10_mini", "model.num_segments=3", "model.policy_hidden=8", "data.input_size=32",
    "data.batch_size=4", "data.workers=0", "optim.epochs=1", "trainer.tensorboard=false", "trainer.threads=1",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(kind="temporal", out=out, num_videos=32, size=32, frames=6, seed=0)
    return out / "dataset.yaml"


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
        ("data.batch_size=-3", "data.batch_size must be >= 1, got -3"),
        ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
        ("data.workers=-1", "data.workers must be >= 0, got -1"),
        ("data.input_size=0", "data.input_size must be >= 32, got 0"),
        ("data.input_size=16", "data.input_size must be >= 32, got 16"),
        ("trainer.precision=17", "trainer.precision must be one of auto, 32-true, 16-mixed"),
        ("optim.epochs=0", "optim.epochs must be >= 1, got 0"),
        ("optim.momentum=1.5", "optim.momentum must be in [0, 1), got 1.5"),
        ("optim.lr_steps=[10,x]", "optim.lr_steps must be a list of numbers, got [10, 'x']"),
        ("trainer.devices=tpu9", "trainer.devices must be int >= 1, auto, or a list of device indices, got 'tpu9'"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be int >= 0 (batches), float in [0, 1]"),
        ("trainer.accelerator=tpu", "trainer.accelerator must be one of auto, cpu, gpu, cuda, mps, got 'tpu'"),
    ],
)
def test_out_of_range_values_name_the_key(capsys, override, message):
    err = one_line_error(capsys, ["train", "--config", "demo", override])
    assert err.startswith(f"adafuse train: error: override {override!r}: {message}"), err


def test_out_of_range_in_a_file_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: resnet18\ndata:\n  input_size: 224\n  batch_size: 0\n")
    assert one_line_error(capsys, ["train", "--config", str(bad)]) == (
        f"adafuse train: error: {bad}:5: data.batch_size must be >= 1, got 0"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["data.batch_size=64"], "no full training batch: data.batch_size=64 but the training split has 24 videos "
                                 "(incomplete batches are dropped); lower data.batch_size"),
        (["trainer.accelerator=cpu", "trainer.devices=32", "trainer.strategy=ddp"],
         "no full training batch: data.batch_size=4 but the training split has 24 videos over 32 processes, 0 each"),
        (["trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
        (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 trains nothing"),
        (["trainer.strategy=nonsense"], "trainer settings: "),
    ],
)
def test_runs_that_train_nothing_are_refused_up_front(dataset, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--config", "demo", *FAST, f"data.dataset={dataset}",
                                  f"trainer.out={out}", *extra])
    assert message in err
    assert not (out / "checkpoints" / "last.ckpt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_devices_that_are_not_there(dataset, tmp_path, capsys):
    err = one_line_error(capsys, ["train", "--config", "demo", f"data.dataset={dataset}", f"trainer.out={tmp_path}/r",
                                  "trainer.accelerator=gpu"])
    assert err.endswith("trainer.accelerator=gpu: no CUDA GPU is available here (use cpu or auto)")
    assert one_line_error(capsys, ["eval", "--checkpoint", "x.ckpt", "--device", "cuda"]).endswith(
        "--device cuda: no CUDA GPU is available here")


def test_bad_eval_and_demo_options(capsys):
    assert one_line_error(capsys, ["eval", "--checkpoint", "x.ckpt", "--device", "tpu9"]).endswith(
        "--device tpu9: not a device name (cpu, cuda, cuda:1, mps)")
    assert one_line_error(capsys, ["eval", "--checkpoint", "x.ckpt", "--workers", "-1"]).endswith(
        "--workers must be >= 0, got -1")
    assert one_line_error(capsys, ["eval", "--checkpoint", "x.ckpt", "--threads", "0"]).endswith(
        "--threads must be >= 1, got 0")


def test_demo_with_too_few_videos_says_why(tmp_path, capsys):
    err = one_line_error(capsys, ["demo", "--out", str(tmp_path / "demo"), "--num-videos", "16"])
    assert err.endswith("--num-videos 16 gives 8 training videos, fewer than one batch of 16; "
                        "use --num-videos 32 or more")


@pytest.fixture
def unwritable(tmp_path) -> tuple[Path, str]:
    """A folder nothing can be written into, and the OS's reason: read-only (as a user), or under a file (as
    root, whom permissions do not stop)."""
    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder, "Permission denied"
        folder.chmod(0o755)
    else:
        (tmp_path / "file").write_text("")
        yield tmp_path / "file", "Not a directory"


def test_unwritable_output_folders_are_one_line_before_any_work(dataset, tmp_path, unwritable, capsys):
    folder, reason = unwritable
    err = one_line_error(capsys, ["train", "--config", "demo", f"data.dataset={dataset}", f"trainer.out={folder}/run"])
    assert err == f"adafuse train: error: cannot write to {folder}/run/checkpoints: {reason}"
    # eval checks its report's folder before evaluating (the checkpoint does not even exist)
    err = one_line_error(capsys, ["eval", "--checkpoint", "missing.ckpt", "--report", f"{folder}/report.md"])
    assert err == f"adafuse eval: error: cannot write to {folder}: {reason}"
    err = one_line_error(capsys, ["synth", "--kind", "static", "--out", f"{folder}/synth"])
    assert err == f"adafuse synth: error: cannot write to {folder}/synth: {reason}"
    err = one_line_error(capsys, ["demo", "--out", f"{folder}/demo"])
    assert err == f"adafuse demo: error: cannot write to {folder}/demo: {reason}"
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"top1": 50.0, "gflops": 1.0, "params": 10}))
    err = one_line_error(capsys, ["plot", "tradeoff", str(result), "--out", f"{folder}/fig.png"])
    assert err == f"adafuse plot: error: cannot write to {folder}: {reason}"


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"step": torch.tensor(1)}, path)
    real_save = torch.save

    def full_disk(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)  # writes, then the disk fills up before the end
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=rf"^cannot write checkpoint {path}: No space left on device$"):
        atomic_save({"step": torch.tensor(2)}, path)
    assert torch.load(path)["step"] == 1  # the previous checkpoint, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_full_disk_during_training_is_one_line(dataset, tmp_path, monkeypatch, capsys):
    real_save, saves = torch.save, []

    def fills_up(obj, file, *args, **kwargs):
        saves.append(1)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--config", "demo", *FAST, f"data.dataset={dataset}", f"trainer.out={out}",
                                  "trainer.max_steps=2", "trainer.checkpoint_every_steps=1", "trainer.progress=false"])
    last = out / "checkpoints" / "last.ckpt"
    assert err == f"adafuse train: error: cannot write checkpoint {last}: No space left on device"
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(last, weights_only=False)["global_step"] == 1  # the step-1 checkpoint, intact
    assert not list(last.parent.glob(".*.tmp"))


def test_train_json_is_one_object_with_overrides_after_options(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    # overrides after an option, progress on (it goes to stderr, as plain lines: this stream is no terminal)
    assert main(["train", "--config", "demo", "--json", *FAST, f"data.dataset={dataset}", "trainer.progress=true",
                 f"trainer.out={out}", "trainer.limit_train_batches=2"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["out"] == str(out) and result["validation"]["videos"] == 8
    assert "\r" not in captured.err and "epoch 1/1, loss" in captured.err and "val top-1" in captured.err
    with pytest.raises(SystemExit, match="2"):  # a usage error, as argparse reports them
        main(["train", "--config", "demo", "--json", "--jsn"])
    assert capsys.readouterr().err == "adafuse: error: unrecognized arguments: --jsn\n"


def test_plain_progress_lines_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    assert list(progress.iter_progress(range(3), total=3, desc="eval")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("eval: 1/3 batches, 0 s (ETA ") and lines[-1] == "eval: 3/3 batches, 0 s"
    assert len(lines) == 4  # one per batch (every PLAIN_EVERY_S) and a last one


def test_thread_default_leaves_a_cpu_per_loader_worker(monkeypatch):
    from adafuse.engine import threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 16)
    assert default_threads(workers=2) == 14 and default_threads(workers=4, processes=2) == 4
    assert default_threads(workers=8, processes=2) == 1  # never fewer than one
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert default_threads(workers=2) == 1 and default_threads(workers=0) == 2


class _SigintState(torch.utils.data.Dataset):
    """Reports, from inside a loader worker, whether Ctrl-C is ignored there."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        return torch.tensor(signal.getsignal(signal.SIGINT) is signal.SIG_IGN), 0


def test_loader_workers_leave_ctrl_c_to_the_main_process():
    # a worker that got Ctrl-C while putting a batch printed a BrokenPipeError traceback; the main process
    # stops the workers itself
    # started in the background (`make test &`), a shell hands us Ctrl-C already ignored: give it a handler first
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        loader = build_loader(_SigintState(), batch_size=2, shuffle=False, num_workers=1)
        (ignored, _), = list(loader)
        assert ignored.all()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_skipped_samples_are_counted_when_training(dataset, tmp_path, caplog):
    from adafuse.engine.config import load_config
    from adafuse.engine.train import fit

    broken = tmp_path / "broken"  # a copy of the dataset with one training video's frames corrupt
    shutil.copytree(dataset.parent, broken)
    first = (broken / "train.txt").read_text().split()[0]
    for jpg in (broken / "frames" / first).glob("*.jpg"):
        jpg.write_bytes(b"not a jpeg")
    config = load_config(None, [*FAST, f"data.dataset={broken / 'dataset.yaml'}", f"trainer.out={tmp_path}/run",
                                "data.on_error=skip", "trainer.progress=false", "trainer.limit_val_batches=0"])
    with caplog.at_level("WARNING", logger="adafuse.data"):
        fit(config)
    assert "1 of 24 samples skipped in this epoch (see the warnings above)" in caplog.text


def test_broken_pipe_on_stdout_is_quiet(tmp_path):
    # `adafuse ... | head`: the reader goes away; no "error: Broken pipe", no traceback
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    script = "import sys; sys.stdout.close = lambda: None; sys.exit(__import__('adafuse.cli').cli.main(sys.argv[1:]))"
    read, write = os.pipe()
    os.close(read)  # nobody reads
    done = subprocess.run([sys.executable, "-c", script, "train", "--help-config"], stdout=write,
                          stderr=subprocess.PIPE, env=env)
    os.close(write)
    assert done.returncode == 1 and done.stderr == b""


def test_json_stdout_is_one_object_for_every_command(tmp_path, capsys):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"top1": 50.0, "gflops": 1.0, "params": 10}))
    for argv in (
        ["synth", "--kind", "static", "--out", str(tmp_path / "s"), "--num-videos", "16", "--size", "32",
         "--frames", "4", "--json"],
        ["prepare", "lists", "--source", "tree", "--root", str(tmp_path / "tree"), "--out", str(tmp_path / "l"),
         "--flip", "true", "--json"],
        ["flops", "--backbone", "resnet18", "--method", "adafuse_tsn", "--num-classes", "5", "--json"],
        ["config", "show", "demo", "--json"],
        ["plot", "tradeoff", str(result), "--out", str(tmp_path / "fig.png"), "--json"],
    ):
        if argv[0] == "prepare":  # a two-class tree of frame folders
            for split in ("train", "val"):
                for name in ("a", "b"):
                    folder = tmp_path / "tree" / split / name / "v1"
                    folder.mkdir(parents=True)
                    (folder / "00001.jpg").write_bytes((tmp_path / "s" / "frames" / "00000" / "00001.jpg").read_bytes())
        assert main(argv) == 0, argv
        assert isinstance(json.loads(capsys.readouterr().out), dict), argv
