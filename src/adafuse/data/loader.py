"""A DataLoader for clip datasets: seeded order, epoch-aware augmentation, readable errors.

Batches are ``(clips, labels)``: clips ``(B, T, 3, S, S)`` (``(B, V, T, 3, S, S)`` for multi-view evaluation),
labels int64 ``(B,)``. The order comes from a :class:`~torch.utils.data.DistributedSampler` seeded with ``seed``
(one replica unless ``world_size > 1``), the augmentation from ``(seed, epoch, index)``: batches are identical with
any number of workers.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from adafuse.data._problems import log
from adafuse.data.dataset import ClipDataset
from adafuse.errors import UserError


def collate_clips(items: Sequence[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack ``(clip, label)`` items into ``(clips (B, ...), labels (B,))``, dropping skipped (``None``) items."""
    kept = [item for item in items if item is not None]
    return default_collate(kept) if kept else None


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` whose next pass can start part-way through the epoch (to resume training
    mid-epoch with exactly the batches that were still to come)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0  # only the next pass is shortened
        return itertools.islice(super().__iter__(), start, None)


class ClipLoader(DataLoader):
    """A :class:`DataLoader` that keeps the dataset's epoch in step with its sampler's.

    Each ``iter(loader)`` first calls ``dataset.set_epoch(sampler.epoch)``, so calling ``loader.set_epoch(e)``
    (or Lightning calling ``sampler.set_epoch(e)``) is enough. Workers are not persistent: each epoch's workers get
    the dataset with the current epoch. A :class:`UserError` raised in a worker reaches the caller as the same
    one-line :class:`UserError`; samples skipped with ``on_error="skip"`` are counted at the end of the epoch.
    """

    def set_epoch(self, epoch: int) -> None:
        """Shuffle and augment as in ``epoch``."""
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        if isinstance(self.dataset, ClipDataset):
            self.dataset.set_epoch(epoch)

    def skip_batches(self, batches: int) -> None:
        """Start the next pass after the first ``batches`` batches of the current epoch (resuming mid-epoch)."""
        if not isinstance(self.sampler, ResumableSampler) or self.batch_size is None:
            raise TypeError("skip_batches needs a loader made by build_loader")
        self.sampler.start = batches * self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        epoch = getattr(self.sampler, "epoch", None)
        if epoch is not None and isinstance(self.dataset, ClipDataset):
            self.dataset.set_epoch(epoch)
        # Samples this pass requests: the epoch's share, minus those consumed before a resume.
        to_request = len(self.sampler) - getattr(self.sampler, "start", 0)  # type: ignore[arg-type]
        requested, received, message = 0, 0, None
        batches = super().__iter__()
        try:
            for batch in batches:
                requested = min(requested + (self.batch_size or 1), to_request)
                if batch is not None:
                    received += len(batch[1])
                    yield batch
        except UserError as e:
            # A worker's error arrives as "Caught UserError in DataLoader worker ... Traceback ...": keep the message.
            message = str(e).splitlines()[-1].removeprefix(f"{UserError.__module__}.UserError: ")
        finally:
            # Stop the workers now (also when the caller stops early): left to the garbage collector, torch's
            # iterator waits 5 s per worker.
            getattr(batches, "_shutdown_workers", lambda: None)()
            # Also when the caller stops at the epoch's last batch without asking for more (Lightning does).
            if message is None and received < requested:
                log.warning(
                    "%d of %d samples skipped in this epoch (see the warnings above)", requested - received, requested
                )
        if message is not None:
            raise UserError(message)


def _ignore_ctrl_c(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which stops them: a worker interrupted mid-put would
    print a BrokenPipeError traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(
    dataset: ClipDataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> ClipLoader:
    """A seeded loader over ``dataset``; batches ``(clips (B, T, 3, S, S), labels (B,))``.

    Args:
        dataset: a :class:`ClipDataset`.
        batch_size: clips per batch (per process).
        shuffle: reshuffle every epoch (a permutation seeded by ``seed + epoch``).
        num_workers: loader processes; the batches do not depend on it.
        seed: order and augmentation seed (the dataset's own ``seed`` drives the augmentation).
        drop_last: drop the last incomplete batch.
        rank, world_size: this process's shard for distributed training (``DistributedSampler`` semantics: with
            ``world_size > 1`` the last samples are repeated to make the shards equal).
        pin_memory: pin batches for faster host-to-GPU copies.
    """
    sampler = ResumableSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return ClipLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_ignore_ctrl_c,
    )
