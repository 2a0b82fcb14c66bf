"""Training costs as a Lightning callback: seconds per epoch and memory per instance (Appendix E).

Memory per instance: on CUDA, the epoch's peak allocated memory over the per-device batch; on
other devices, the bytes autograd saves for backward in the epoch's first batch, over its size
(see ``gloro_repro.measure``). Both are kept in checkpoints, so a resumed run keeps its epochs' times.
"""
from __future__ import annotations

import time

import lightning as L
import torch

from gloro_repro.measure import MB, saved_for_backward


class TrainingCosts(L.Callback):
    """Records ``epoch_seconds`` (one per epoch, warm-up included) and ``mem_mb_per_instance``."""

    def __init__(self):
        self.epoch_seconds: list[float] = []
        self.mem_mb_per_instance: float | None = None
        self._start = 0.0
        self._saving = None  # (context, {storage: bytes}, batch size) while the first batch's forward runs

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)  # the epoch's time starts and ends with an idle GPU
            torch.cuda.reset_peak_memory_stats(module.device)
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if module.device.type != "cuda" and batch_idx == 0 and len(batch[0]):
            context = saved_for_backward()
            self._saving = (context, context.__enter__(), len(batch[0]))

    def on_before_backward(self, trainer, module, loss: torch.Tensor) -> None:
        if self._saving is not None:
            context, saved, batch_size = self._saving
            context.__exit__(None, None, None)
            self._saving = None
            self.mem_mb_per_instance = sum(saved.values()) / batch_size / MB

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        self.epoch_seconds.append(time.perf_counter() - self._start)
        if module.device.type == "cuda":
            per_device = module.experiment.training.batch_size / trainer.world_size
            self.mem_mb_per_instance = torch.cuda.max_memory_allocated(module.device) / per_device / MB
        module.log("train/sec_per_epoch", self.epoch_seconds[-1], sync_dist=True)  # the mean over ranks
        module.log("train/mem_mb_per_instance", self.mem_mb_per_instance, sync_dist=True)

    def state_dict(self) -> dict:
        return {"epoch_seconds": self.epoch_seconds, "mem_mb_per_instance": self.mem_mb_per_instance}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch_seconds = list(state_dict["epoch_seconds"])
        self.mem_mb_per_instance = state_dict["mem_mb_per_instance"]


def training_costs(trainer: L.Trainer) -> TrainingCosts:
    """The ``TrainingCosts`` callback of a Trainer made by ``gloro_repro.training.build_trainer``."""
    return next(c for c in trainer.callbacks if isinstance(c, TrainingCosts))
