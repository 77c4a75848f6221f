"""Training with Lightning: one function from a resolved config to a trained, checkpointed run.

Run folder (``trainer.out``): ``config.yaml`` (resolved), ``checkpoints/last.ckpt`` (the newest state: after
every epoch, every ``trainer.checkpoint_every_steps`` steps and at the end) and ``best.ckpt`` (best validation
top-1), both written atomically, ``metrics.csv`` and TensorBoard events under ``tb/``. ``resume=True`` continues
from ``last.ckpt`` exactly where it stopped — model, optimizer, scheduler, epoch, batch within the epoch and RNG
state — and keeps the metrics logged before it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from adafuse.checkpoint import atomic_save, read_checkpoint
from adafuse.data.dataset import ClipDataset, build_dataset
from adafuse.data.loader import ClipLoader, build_loader
from adafuse.data.readers import count_frames
from adafuse.data.spec import load_dataset_yaml
from adafuse.engine.config import check_resume_changes, load_config, model_kwargs, save_config
from adafuse.engine.module import RecognitionModule
from adafuse.engine.progress import Meter, _duration
from adafuse.engine.threads import default_threads
from adafuse.errors import UserError
from adafuse.flops import profile
from adafuse.models import build_model, get_backbone
from adafuse.outputs import check_writable

log = logging.getLogger("adafuse")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file first and are renamed into place: a crash never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:  # noqa: D102
        atomic_save(checkpoint, path)


class ClipDataModule(L.LightningDataModule):
    """Train and validation loaders of two datasets, sharded by rank and seeded by ``trainer.seed``.

    Its checkpointed state is the number of batches of the current epoch already trained on: a run resumed
    mid-epoch starts its loader after them. (Lightning restores a datamodule before it sets up the loaders,
    whatever asks for them first — the cosine schedule's step count does — so the skip is never lost.)
    """

    def __init__(self, train_set: ClipDataset, val_set: ClipDataset, config: dict[str, Any]) -> None:
        super().__init__()
        self.train_set, self.val_set, self.config = train_set, val_set, config
        self.resume_batches = 0

    def _loader(self, dataset: ClipDataset, *, batch_size: int, shuffle: bool) -> ClipLoader:
        return build_loader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.config["data"]["workers"],
            seed=self.config["trainer"]["seed"],
            drop_last=shuffle,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> ClipLoader:  # noqa: D102
        loader = self._loader(self.train_set, batch_size=self.config["data"]["batch_size"], shuffle=True)
        if self.resume_batches:
            loader.skip_batches(self.resume_batches)  # Lightning sets the sampler's epoch before iterating
            self.resume_batches = 0
        return loader

    def val_dataloader(self) -> ClipLoader:  # noqa: D102
        data = self.config["data"]
        return self._loader(self.val_set, batch_size=data["val_batch_size"] or data["batch_size"], shuffle=False)

    def state_dict(self) -> dict[str, int]:  # noqa: D102
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"batches": done if done < self.trainer.num_training_batches else 0}  # 0: the epoch is complete

    def load_state_dict(self, state: dict[str, int]) -> None:  # noqa: D102
        self.resume_batches = int(state["batches"])


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: the newest state, written every ``every_steps`` optimizer steps (0: never mid-epoch),
    after every epoch (its validation included) and when training ends. It records whether the run is finished
    and its last validation, so a finished run is not resumed and ``eval`` can report ``last`` beside ``best``."""

    def __init__(self, path: Path, *, every_steps: int) -> None:
        self.path, self.every_steps = path, every_steps
        self.finished = False
        self.validation: dict[str, float] | None = None
        self.saved_step = -1

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"finished": self.finished, "validation": self.validation}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.validation = state.get("validation")

    def _save(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:  # every metric logged before this state is on disk: a resume keeps it
            logger.save()
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        # The row of the batch a checkpoint was written after is logged after the save: flush it now, so that a
        # SIGKILL later in this batch cannot lose it (a resume continues after that batch and would not redo it).
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        step = trainer.global_step
        if self.every_steps and step % self.every_steps == 0 and step != self.saved_step:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        result = getattr(pl_module, "last_validation", None)
        if result is not None and not trainer.sanity_checking:
            self.validation = {k: result[k] for k in ("top1", "top5", "gflops")} | {"epoch": trainer.current_epoch}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        max_steps = trainer.max_steps
        self.finished = trainer.current_epoch + 1 >= trainer.max_epochs or (
            max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps
        )
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if not self.finished:  # training stopped outside an epoch's end (e.g. a callback asked it to)
            self.finished = True
            self._save(trainer)


class TrainProgress(L.Callback):
    """Training and validation progress on stderr (:class:`~adafuse.engine.progress.Meter`), and one line per
    epoch: loss, validation top-1, time and ETA."""

    def __init__(self) -> None:
        self.train: Meter | None = None
        self.val: Meter | None = None
        self.run_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if not trainer.is_global_zero:  # one process reports
            return
        total = trainer.num_training_batches
        self.epoch_start = time.perf_counter()
        self.train = Meter(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
            total=None if total == float("inf") else int(total),
            initial=trainer.fit_loop.epoch_loop.batch_progress.current.completed,  # > 0 when resumed mid-epoch
        )

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        if self.train is not None:
            # Reading the logged loss back waits for the GPU: once per logging interval, not every step.
            shown = trainer.global_step % max(1, trainer.log_every_n_steps) == 0
            loss = trainer.progress_bar_metrics.get("loss") if shown else None
            self.train.update(**({"loss": float(loss)} if loss is not None else {}))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if not trainer.is_global_zero:
            return
        total = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        self.val = Meter("validation", total=int(total) if total != float("inf") else None)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        if self.val is not None:
            self.val.update()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self.val is not None:
            self.val.close()
            self.val = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self.train is None:
            return
        metrics = trainer.progress_bar_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if "loss" in metrics:
            parts.append(f"loss {float(metrics['loss']):.4f}")
        if "val_top1" in metrics:
            parts.append(f"val top-1 {float(metrics['val_top1']):.2f}%")
        epoch_seconds = time.perf_counter() - self.epoch_start
        timing = f"{_duration(epoch_seconds)}; {_duration(time.perf_counter() - self.run_start)} in all"
        epochs_left = trainer.max_epochs - trainer.current_epoch - 1
        if epochs_left > 0:
            timing += f"; ETA {_duration(epochs_left * epoch_seconds)}"
        self.train.close(", ".join(parts) + f" ({timing})")
        self.train = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:  # noqa: D102
        for meter in (self.train, self.val):
            if meter is not None:
                meter.close()


class TorchThreads(L.Callback):
    """Sets torch's CPU threads in every training process (spawned DDP processes start with torch's default)."""

    def __init__(self, threads: int | None, workers: int) -> None:
        self.threads, self.workers = threads, workers

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        torch.set_num_threads(self.threads or default_threads(workers=self.workers, processes=trainer.num_devices))


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Keep Lightning's advertising and known-harmless warnings out of the user's terminal while training; the
    process-wide warning filters and log levels are restored afterwards."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in (
                r"Experiment logs directory .* exists",
                r".*LeafSpec.* is deprecated",
                r".*does not have many workers",
                r"The number of training batches .* is smaller than the logging interval",
                r"Checkpoint directory .* exists and is not empty",
                r"You're resuming from a checkpoint that ended before the epoch ended",  # our datamodule resumes it
                r".*could not find the monitored key",  # no validation ran (the summary says so)
            ):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        logger.setLevel(level)


def resolve_precision(value: str | int, accelerator: str) -> str | int:
    """Lightning precision of ``trainer.precision`` (``"auto"``: ``16-mixed`` on a GPU, else ``32-true``)."""
    if value != "auto":
        return value
    # Follows the accelerator, not the machine: a CPU run on a GPU machine stays in fp32 (Lightning would
    # otherwise turn "16-mixed" on the CPU into bf16).
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "16-mixed" if gpu else "32-true"


def _check_accelerator(accelerator: str) -> None:
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={accelerator}: no CUDA GPU is available here (use cpu or auto)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.accelerator=mps: MPS is not available here (use cpu or auto)")


def _check_trains_something(config: dict[str, Any], train_set: ClipDataset, world_size: int) -> None:
    """Refuse, before any work, a run whose settings leave no optimizer step to take."""
    trainer_cfg, batch_size = config["trainer"], config["data"]["batch_size"]
    if trainer_cfg["max_steps"] == 0:
        raise UserError("trainer.max_steps=0 trains nothing (use -1 for no limit)")
    if trainer_cfg["limit_train_batches"] == 0:
        raise UserError("trainer.limit_train_batches=0 trains nothing")
    per_process = len(train_set) // world_size  # the training sampler drops the remainder (drop_last)
    if per_process // batch_size == 0:
        where = f" over {world_size} processes, {per_process} each" if world_size > 1 else ""
        raise UserError(
            f"no full training batch: data.batch_size={batch_size} but the training split has {len(train_set)} "
            f"videos{where} (incomplete batches are dropped); lower data.batch_size"
            + (" or use fewer devices" if world_size > 1 else "")
        )


def frame_stride(train_set: ClipDataset, num_segments: int, *, probe: int = 32) -> int | None:
    """Frames between two sampled frames in training, on average: mean frames per video / T (at least 1).
    Frame-folder lists give every count; for video files, the containers of up to ``probe`` videos are read
    (None if none can be: the loader reports those files)."""
    counts = [r.num_frames for r in train_set.records if r.num_frames is not None]
    if not counts:
        step = max(1, len(train_set.records) // probe)
        for record in train_set.records[::step][:probe]:
            try:
                counts.append(count_frames(Path(train_set.reader.root) / record.path))
            except (OSError, ValueError, av.FFmpegError):
                continue
    return max(1, round(float(np.mean(counts)) / num_segments)) if counts else None


def _remove_stale_temporaries(ckpt_dir: Path) -> None:
    """Temporary checkpoint files a killed save left behind (``.last.ckpt.*.tmp``)."""
    for tmp in ckpt_dir.glob(".*.ckpt.*.tmp"):
        log.warning("removing %s, left by an interrupted checkpoint save", tmp)
        tmp.unlink(missing_ok=True)


def _history(path: Path, before_step: int) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` logged before ``before_step`` (later ones are logged again after a resume)."""
    if not path.is_file():
        return []

    def number(text: str) -> int | float:
        try:
            return int(text)
        except ValueError:
            return float(text)

    with path.open(newline="", encoding="utf-8") as file:
        rows = [{k: number(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(file)]
    return [row for row in rows if row.get("step", 0) < before_step]


def _restore_history(logger: CSVLogger, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` back first: Lightning's CSV logger starts ``metrics.csv`` afresh."""
    for row in rows:
        step = int(row.pop("step"))
        logger.log_metrics(row, step=step)
    logger.save()


def fit(config: dict[str, Any], *, resume: bool = False, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Train the model a config describes; returns the last validation result and the run's paths.

    With ``resume``, continues the run in ``trainer.out`` from its ``last.ckpt``; a finished run is left as it is
    (``"already_finished": True`` in the result)."""
    with _quiet_lightning():
        return _fit(config, resume=resume, callbacks=callbacks)


def _fit(config: dict[str, Any], *, resume: bool, callbacks: Sequence[L.Callback]) -> dict[str, Any]:
    trainer_cfg, data_cfg, model_cfg = config["trainer"], config["data"], config["model"]
    out = Path(trainer_cfg["out"])
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    paths = {"out": str(out), "last": str(last), "best": str(ckpt_dir / "best.ckpt")}
    resume_state: dict[str, Any] = {}
    if resume:
        if not last.is_file():
            raise UserError(f"nothing to resume: {last} does not exist")
        if (out / "config.yaml").is_file():  # what the run computes stays the run's (CLI and API alike)
            check_resume_changes(config, load_config(out / "config.yaml"), out=out)
        ckpt = read_checkpoint(last)
        resume_state = ckpt.get("callbacks", {}).get(LastCheckpoint.__qualname__, {}) | {"step": ckpt["global_step"]}
        if resume_state.get("finished"):
            log.warning("%s is finished (step %d): nothing to resume", out, resume_state["step"])
            scores = [s["best_model_score"] for s in ckpt.get("callbacks", {}).values() if s.get("best_model_score")]
            return {**paths, "best": paths["best"] if Path(paths["best"]).is_file() else None,
                    "best_top1": float(scores[0]) if scores else None, "validation": resume_state.get("validation"),
                    "interrupted": False, "already_finished": True, "module": None}
    elif last.is_file():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or set trainer.out elsewhere")
    if data_cfg["dataset"] is None:
        raise UserError("data.dataset is required: the path of a dataset.yaml (see `adafuse synth`, `adafuse prepare`)")
    _check_accelerator(trainer_cfg["accelerator"])
    check_writable(ckpt_dir)
    _remove_stale_temporaries(ckpt_dir)

    spec = load_dataset_yaml(data_cfg["dataset"])
    normalization = data_cfg["normalization"] or get_backbone(model_cfg["backbone"]).normalization
    common = dict(spec=spec, num_segments=model_cfg["num_segments"], input_size=data_cfg["input_size"],
                  normalization=normalization, seed=trainer_cfg["seed"], on_error=data_cfg["on_error"],
                  min_frames=data_cfg["min_frames"])
    train_set, val_set = build_dataset(split="train", **common), build_dataset(split="val", **common)

    every = trainer_cfg["checkpoint_every_steps"]
    last_checkpoint = LastCheckpoint(last, every_steps=every)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/top1", mode="max",
                           enable_version_counter=False, save_last=False)
    loggers: list = [CSVLogger(out, name="", version="")]
    if trainer_cfg["tensorboard"]:
        loggers.append(TensorBoardLogger(out, name="tb", version=""))
    try:
        trainer = L.Trainer(
            default_root_dir=out,
            max_epochs=config["optim"]["epochs"],
            max_steps=trainer_cfg["max_steps"],
            accelerator=trainer_cfg["accelerator"],
            devices=trainer_cfg["devices"],
            num_nodes=trainer_cfg["num_nodes"],
            strategy=trainer_cfg["strategy"],
            precision=resolve_precision(trainer_cfg["precision"], trainer_cfg["accelerator"]),
            sync_batchnorm=trainer_cfg["sync_batchnorm"],
            accumulate_grad_batches=trainer_cfg["accumulate"],
            gradient_clip_val=config["optim"]["clip_grad"] or None,
            log_every_n_steps=trainer_cfg["log_every_steps"],
            enable_progress_bar=False,  # ours (TrainProgress) writes to stderr, and plain lines into logs
            enable_model_summary=False,
            limit_train_batches=trainer_cfg["limit_train_batches"],
            limit_val_batches=trainer_cfg["limit_val_batches"],
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # our loaders shard by rank themselves (and can resume mid-epoch)
            # Checkpoint callbacks run last, in this order: last.ckpt then holds best's updated state.
            callbacks=[TorchThreads(trainer_cfg["threads"], data_cfg["workers"]),
                       *([TrainProgress()] if trainer_cfg["progress"] else []), best, last_checkpoint, *callbacks],
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError) as e:  # devices, strategy or precision Lightning refuses
        raise UserError(f"trainer settings: {str(e).splitlines()[0]}") from None
    _check_trains_something(config, train_set, trainer.world_size)

    threads = torch.get_num_threads()
    L.seed_everything(trainer_cfg["seed"], workers=True, verbose=False)
    model = build_model(**model_kwargs(config), num_classes=spec.num_classes, pretrained=model_cfg["pretrained"],
                        input_size=data_cfg["input_size"], normalization=normalization,
                        classes=list(spec.class_names))  # fmt: skip
    table = profile(model, input_size=data_cfg["input_size"])
    meta = {"dataset": str(Path(data_cfg["dataset"]).resolve()), "train_config": config,
            "frame_stride": frame_stride(train_set, model_cfg["num_segments"])}
    module = RecognitionModule(model, table=table, config=config, meta=meta, compile=trainer_cfg["compile"],
                               channels_last=trainer_cfg["channels_last"])  # fmt: skip
    save_config(config, out / "config.yaml")
    if resume:
        history = _history(out / "metrics.csv", resume_state["step"])
        _restore_history(loggers[0], history)

    datamodule = ClipDataModule(train_set, val_set, config)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    except SystemExit:  # Lightning exits after a graceful Ctrl-C shutdown; we report it instead
        if not trainer.interrupted:
            raise
        log.warning("interrupted: the last checkpoint is %s; continue with --resume", last)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning leaves Ctrl-C ignored after an interrupt
        torch.set_num_threads(threads)
    return {
        **paths,
        "best": str(ckpt_dir / "best.ckpt") if (ckpt_dir / "best.ckpt").is_file() else None,
        "best_top1": float(best.best_model_score) if best.best_model_score is not None else None,
        "validation": getattr(module, "last_validation", None),
        "interrupted": trainer.interrupted,
        "already_finished": False,
        "module": module,
    }
