"""One LightningModule for GloRo and Standard training, a thin shell over ``pipeline.gloro``.

Per epoch: warm-up epochs train f with plain cross-entropy; robust epochs train the GloRo net at
the scheduled eps with TRADES(lambda) or CE over the m+1 logits; the LR follows the paper's
schedule. Before every validation, power iteration runs to convergence so validation VRA uses
the converged bound (as the paper's evaluation does). Metric keys: ``train/*``, ``val/*``.
"""
from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F

from pipeline.artifacts import build_gloro
from pipeline.config import Experiment
from pipeline.gloro import gloro_cross_entropy, trades_loss
from pipeline.gloro.model import clean_accuracy, gloro_logits, rejection_rate, vra
from pipeline.measure import MB, saved_for_backward


class GloroModule(L.LightningModule):
    """Trains ``GloroNet`` following an ``Experiment``'s schedules (Standard models: CE on f only)."""

    def __init__(self, experiment: dict, input_shape: list[int], num_classes: int, start: str | None = None):
        super().__init__()
        self.save_hyperparameters()  # the experiment's trained settings: the checkpoint describes its run
        self.experiment = Experiment.from_dict(experiment)
        self.net = build_gloro(self.experiment, tuple(input_shape), num_classes)
        self.schedule = self.experiment.schedule()
        self._epoch_start = 0.0
        self._val_k = None
        self.memory_mb_per_instance: float | None = None
        self.epoch_seconds: list[float] = []  # carried through checkpoints, so resumed runs keep them

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["epoch_seconds"] = self.epoch_seconds
        checkpoint["mem_mb_per_instance"] = self.memory_mb_per_instance

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.epoch_seconds = list(checkpoint.get("epoch_seconds", []))
        self.memory_mb_per_instance = checkpoint.get("mem_mb_per_instance")

    def configure_optimizers(self):
        init_lr = self.experiment.training.init_lr
        optimiser = torch.optim.Adam(self.parameters(), lr=init_lr, eps=1e-7)  # Keras's Adam epsilon
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda epoch: self.schedule.at(epoch).lr / init_lr)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_epoch_start(self) -> None:
        settings = self.schedule.at(self.current_epoch)
        self.log_dict({"train/eps": settings.eps, "train/lambda": settings.lam,
                       "train/lr": self.optimizers().param_groups[0]["lr"],
                       "train/robust": float(settings.robust and self.experiment.robust)})
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._epoch_start = time.perf_counter()

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.device.type != "cuda" and batch_idx == 0:
            with saved_for_backward() as saved:
                loss, metrics = self._loss(x, y)
            self.memory_mb_per_instance = sum(saved.values()) / len(x) / MB
        else:
            loss, metrics = self._loss(x, y)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        settings = self.schedule.at(self.current_epoch)
        if not (settings.robust and self.experiment.robust):
            logits = self.net.f(x)
            loss = F.cross_entropy(logits, y)
            metrics = {"train/clean": clean_accuracy(logits.detach(), y)}
        else:
            gloro = self.net(x, eps=settings.eps)
            loss = trades_loss(gloro, y, settings.lam) if self.experiment.trades else gloro_cross_entropy(gloro, y)
            gloro = gloro.detach()
            metrics = {"train/clean": clean_accuracy(gloro[:, :-1], y), "train/vra": vra(gloro, y)}
        return loss, metrics

    def on_train_epoch_end(self) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        self.log("train/sec_per_epoch", self.epoch_seconds[-1])
        if self.device.type == "cuda":
            self.memory_mb_per_instance = (torch.cuda.max_memory_allocated(self.device)
                                           / self.experiment.training.batch_size / MB)
        self.log("train/mem_mb_per_instance", self.memory_mb_per_instance)

    def on_validation_epoch_start(self) -> None:
        self.net.converge(self.experiment.training.converge_tol)
        self._val_k = self.net.k_ij().detach()
        self.log("val/lipschitz", self.net.global_lipschitz())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net.f(x)
        gloro = gloro_logits(logits, self._val_k, self.experiment.eps_test)
        self.log_dict({"val/clean": clean_accuracy(logits, y), "val/vra": vra(gloro, y),
                       "val/rejection": rejection_rate(gloro)},
                      on_epoch=True, prog_bar=True, batch_size=len(x))
