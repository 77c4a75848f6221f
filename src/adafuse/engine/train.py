"""Training with Lightning: one function from a resolved config to a trained, checkpointed run.

Run folder (``trainer.out``): ``config.yaml`` (resolved), ``checkpoints/last.ckpt`` and ``best.ckpt``
(written atomically; ``last`` also every ``trainer.checkpoint_every_steps`` steps), ``metrics.csv`` and
TensorBoard events under ``tb/``. ``resume=True`` continues from ``last.ckpt`` exactly where it stopped:
model, optimizer, scheduler, epoch, batch within the epoch and RNG state.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from adafuse.checkpoint import atomic_save
from adafuse.data.dataset import build_dataset
from adafuse.data.loader import ClipLoader, build_loader
from adafuse.data.spec import DatasetSpec, load_dataset_yaml
from adafuse.engine.config import model_kwargs, save_config
from adafuse.engine.module import RecognitionModule
from adafuse.errors import UserError
from adafuse.flops import profile
from adafuse.models import build_model, get_backbone

log = logging.getLogger("adafuse")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file first and are renamed into place: a crash never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:  # noqa: D102
        atomic_save(checkpoint, path)


class ResumableLoader:
    """A training loader Lightning can checkpoint: its state is (epoch, batches consumed), and loading it makes
    the next pass over the epoch start after those batches. ``progress()`` tells how many batches the trainer
    has consumed (the loader itself runs ahead by its prefetch)."""

    def __init__(self, loader: ClipLoader, progress: Callable[[], int]) -> None:
        self.loader = loader
        self.sampler = loader.sampler  # Lightning sets the epoch through it
        self.progress = progress

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, int]:  # noqa: D102
        return {"epoch": int(self.sampler.epoch), "batches": int(self.progress())}

    def load_state_dict(self, state: dict[str, int]) -> None:  # noqa: D102
        self.loader.set_epoch(state["epoch"])
        self.loader.skip_batches(state["batches"])


class ClipDataModule(L.LightningDataModule):
    """Train and validation loaders of a dataset, sharded by rank and seeded by ``trainer.seed``."""

    def __init__(self, spec: DatasetSpec, config: dict[str, Any], *, normalization: str) -> None:
        super().__init__()
        self.spec, self.config, self.normalization = spec, config, normalization

    def _dataset(self, split: str):
        data, model = self.config["data"], self.config["model"]
        return build_dataset(
            spec=self.spec,
            split=split,
            num_segments=model["num_segments"],
            input_size=data["input_size"],
            normalization=self.normalization,
            seed=self.config["trainer"]["seed"],
            on_error=data["on_error"],
            min_frames=data["min_frames"],
        )

    def _loader(self, split: str, *, batch_size: int, shuffle: bool) -> ClipLoader:
        return build_loader(
            self._dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.config["data"]["workers"],
            seed=self.config["trainer"]["seed"],
            drop_last=shuffle,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> ResumableLoader:  # noqa: D102
        loader = self._loader("train", batch_size=self.config["data"]["batch_size"], shuffle=True)
        return ResumableLoader(loader, lambda: self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> ClipLoader:  # noqa: D102
        data = self.config["data"]
        return self._loader("val", batch_size=data["val_batch_size"] or data["batch_size"], shuffle=False)


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


def _progress_bar(trainer_cfg: dict[str, Any]) -> list[L.Callback]:
    """The progress bar, refreshed once per logging interval: each refresh reads the logged loss back from the GPU,
    which would make every step wait for the device."""
    if not trainer_cfg["progress"]:
        return []
    return [TQDMProgressBar(refresh_rate=max(1, trainer_cfg["log_every_steps"]))]


def fit(config: dict[str, Any], *, resume: bool = False, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Train the model a config describes; returns the last validation result and the run's paths."""
    with _quiet_lightning():
        return _fit(config, resume=resume, callbacks=callbacks)


def _fit(config: dict[str, Any], *, resume: bool, callbacks: Sequence[L.Callback]) -> dict[str, Any]:
    trainer_cfg, data_cfg, model_cfg = config["trainer"], config["data"], config["model"]
    out = Path(trainer_cfg["out"])
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise UserError(f"nothing to resume: {last} does not exist")
    if not resume and last.is_file():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or set trainer.out elsewhere")
    if data_cfg["dataset"] is None:
        raise UserError("data.dataset is required: the path of a dataset.yaml (see `adafuse synth`, `adafuse prepare`)")
    spec = load_dataset_yaml(data_cfg["dataset"])
    normalization = data_cfg["normalization"] or get_backbone(model_cfg["backbone"]).normalization

    L.seed_everything(trainer_cfg["seed"], workers=True, verbose=False)
    model = build_model(**model_kwargs(config), num_classes=spec.num_classes, pretrained=model_cfg["pretrained"],
                        input_size=data_cfg["input_size"], normalization=normalization,
                        classes=list(spec.class_names))  # fmt: skip
    table = profile(model, input_size=data_cfg["input_size"])
    meta = {"dataset": str(Path(data_cfg["dataset"]).resolve()), "train_config": config}
    module = RecognitionModule(model, table=table, config=config, meta=meta, compile=trainer_cfg["compile"],
                               channels_last=trainer_cfg["channels_last"])  # fmt: skip
    save_config(config, out / "config.yaml")

    every = trainer_cfg["checkpoint_every_steps"] or None
    checkpoints = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", every_n_train_steps=every, enable_version_counter=False),
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="best", monitor="val/top1", mode="max", enable_version_counter=False
        ),
    ]
    loggers: list = [CSVLogger(out, name="", version="")]
    if trainer_cfg["tensorboard"]:
        loggers.append(TensorBoardLogger(out, name="tb", version=""))
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
        enable_progress_bar=trainer_cfg["progress"],
        enable_model_summary=False,
        limit_train_batches=trainer_cfg["limit_train_batches"],
        limit_val_batches=trainer_cfg["limit_val_batches"],
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our loaders shard by rank themselves (and can resume mid-epoch)
        callbacks=[*checkpoints, *_progress_bar(trainer_cfg), *callbacks],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
    )
    datamodule = ClipDataModule(spec, config, normalization=normalization)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    except SystemExit:  # Lightning exits after a graceful Ctrl-C shutdown; we report it instead
        if not trainer.interrupted:
            raise
        log.warning("interrupted: the last checkpoint is %s; continue with --resume", last)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning leaves Ctrl-C ignored after an interrupt
    return {
        "out": str(out),
        "last": str(last),
        "best": str(ckpt_dir / "best.ckpt"),
        "validation": getattr(module, "last_validation", None),
        "interrupted": trainer.interrupted,
        "module": module,
    }
