"""A LightningDataModule over a prepared dataset held in memory as tensors.

The uint8 arrays are moved once to each training device; each batch is taken by indexing (no
per-item Dataset), scaled to [0, 1] and augmented on the device. Shuffling is seeded per epoch
(seed + epoch), so a resumed run sees the same order as an uninterrupted one.

The training batches are resumable mid-epoch (Lightning saves their ``state_dict`` in checkpoints):
a run stopped after step k of an epoch goes on with batch k + 1 of the same order, and the
augmentation's random stream goes on where it was (the datamodule's ``state_dict``).

Under DDP every rank walks the same permutation in global batches of ``batch_size`` and takes its
own contiguous slice of each (``Tensor.tensor_split``), so the ranks together see exactly the
batches one process would; augmentation parameters are drawn for the global batch and sliced the
same way. A batch is ``(x, y, total)``, ``total`` being the global batch's size.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch

from gloro_repro.data.arrays import DatasetArrays, describe_prepared
from gloro_repro.data.augment import Augment
from gloro_repro.hardware import HardwareError


class TensorBatches:
    """Iterates this rank's share of ``(x, y, offset, total)`` batches of in-memory tensors, by index,
    optionally shuffled by epoch: ``offset`` is where the share starts in its global batch of ``total``.

    ``epoch`` is asked at the start of every pass (Lightning builds the loader only once); ``done``
    says how many batches of the current pass were trained, which is where a checkpoint resumes
    (not how many were handed out: Lightning fetches one ahead).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 epoch: Callable[[], int] = lambda: 0, rank: int = 0, world_size: int = 1,
                 done: Callable[[], int] = lambda: 0):
        self.x, self.y, self.batch_size, self.shuffle, self.seed, self.epoch = x, y, batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.done = rank, world_size, done
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch(), "batches": self.done()}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(len(self.x), generator=g).to(self.x.device)
        else:
            order = torch.arange(len(self.x), device=self.x.device)
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume and resume["epoch"] == self.epoch() else 0
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            total = len(batch)
            share = batch.tensor_split(self.world_size)[self.rank]  # sizes differ by at most one
            offset = self.rank * (total // self.world_size) + min(self.rank, total % self.world_size)
            yield self.x[share], self.y[share], offset, total


def per_device_batch(batch_size: int, world_size: int) -> int:
    """The batch each of ``world_size`` processes takes, so that together they take ``batch_size``."""
    if batch_size % world_size:
        raise HardwareError(f"batch_size {batch_size} does not divide among {world_size} processes "
                         f"(devices x nodes); choose a multiple of {world_size}, "
                         "or other GLORO_DEVICES/GLORO_NUM_NODES")
    return batch_size // world_size


def describe_split(n: int, val_indices: np.ndarray, fraction: float, seed: int) -> dict:
    """What identifies the validation split: how it was drawn, its size, and a digest of its indices."""
    return {"method": "numpy.random.default_rng(seed).permutation(n_train)[:round(n_train * fraction)]",
            "n_train": n, "fraction": fraction, "seed": seed, "size": len(val_indices),
            "indices_sha256": hashlib.sha256(np.asarray(val_indices, dtype=np.int64).tobytes()).hexdigest()}


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index split of ``n`` training points."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class ArraysDataModule(L.LightningDataModule):
    """Train / validation / test batches from ``<data_dir>/<dataset>.npz``.

    The validation split is carved out of the training data (``val_fraction``, seeded), so
    model selection never looks at the test set.
    """

    def __init__(self, data_dir: str | Path, dataset: str, batch_size: int, augmentation: str = "none",
                 val_fraction: float = 0.1, seed: int = 0, eval_batch_size: int = 1024):
        super().__init__()
        self.data_dir, self.dataset, self.batch_size = Path(data_dir), dataset, batch_size
        self.eval_batch_size, self.val_fraction, self.seed = eval_batch_size, val_fraction, seed
        self.augment = Augment(augmentation, seed=seed)
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.max_value = 255
        self.val_indices: np.ndarray | None = None
        self.split: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        arrays = DatasetArrays.load(self.data_dir, self.dataset)
        self.max_value = arrays.max_value
        train_idx, self.val_indices = split_validation(len(arrays.x_train), self.val_fraction, self.seed)
        self.split = describe_split(len(arrays.x_train), self.val_indices, self.val_fraction, self.seed)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        as_tensors = lambda x, y: (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        self.tensors = {
            "train": as_tensors(arrays.x_train[train_idx], arrays.y_train[train_idx]),
            "val": as_tensors(arrays.x_train[self.val_indices], arrays.y_train[self.val_indices]),
            "test": as_tensors(arrays.x_test, arrays.y_test),
        }

    def describe(self) -> tuple[list[int], int]:
        """Input shape ``[C, H, W]`` and class count, from the metadata alone (no arrays loaded)."""
        return describe_prepared(self.data_dir, self.dataset)

    def _shards(self) -> dict:
        """This process's rank and the number of processes (1 without a Trainer)."""
        trainer = self.trainer
        return {"rank": trainer.global_rank, "world_size": trainer.world_size} if trainer is not None else {}

    def train_dataloader(self) -> TensorBatches:
        trainer = self.trainer
        return TensorBatches(*self.tensors["train"], self.batch_size, shuffle=True, seed=self.seed,
                             epoch=lambda: trainer.current_epoch if trainer is not None else 0,
                             done=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
                             if trainer is not None else 0, **self._shards())

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["val"], self.eval_batch_size, shuffle=False, **self._shards())

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["test"], self.eval_batch_size, shuffle=False, **self._shards())

    def state_dict(self) -> dict:
        return {"augment": self.augment.state()}

    def load_state_dict(self, state: dict) -> None:
        self.augment.resume(state.get("augment"))

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Batches of tensors already on ``device`` (where ``setup`` put them) pass as they are: Lightning's
        generic transfer walks every batch, a fixed CPU cost that a GPU step waits on."""
        if all(t.device == device for t in batch if isinstance(t, torch.Tensor)):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """``(x, y, offset, total)`` -> ``(x, y, total)``: x scaled to [0, 1] and, in training, augmented."""
        x, y, offset, total = batch
        x = x.float() / self.max_value
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x, offset, total)
        return x, y, total
