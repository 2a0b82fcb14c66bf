"""One LightningModule for GloRo and Standard training, a thin shell over ``pipeline.gloro``.

Per epoch: warm-up epochs train f with plain cross-entropy; robust epochs train the GloRo net at
the scheduled eps with TRADES(lambda) or CE over the m+1 logits; the LR follows the paper's
schedule; every step's loss is the core's ``step_loss``. Before every validation (at every epoch's
end without a validation split), power iteration runs to convergence so validation VRA uses the
converged bound (as the paper's evaluation does), in IEEE float32. Time and memory are measured
by ``pipeline.lit.costs``. Metric keys: ``train/*``, ``val/*``.

Under DDP each rank takes its share of every global batch (``pipeline.lit.datamodule``); its
mean loss is weighted by its share, so the averaged gradient is the global batch's whatever the
split. DDP broadcasts the power-iteration iterates from rank 0 before every forward; after the
validation's convergence they are broadcast again. Validation metrics are sums over all ranks
(torchmetrics), so ``best.ckpt`` is chosen on the whole validation split.
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from pipeline.artifacts import build_gloro
from pipeline.config import Experiment
from pipeline.gloro import step_loss
from pipeline.gloro.model import clean_accuracy, gloro_logits, gloro_prediction, predicted_class, vra
from pipeline.gloro.precision import float32_precision


class GloroModule(L.LightningModule):
    """Trains ``GloroNet`` following an ``Experiment``'s schedules (Standard models: CE on f only)."""

    def __init__(self, experiment: dict, input_shape: list[int], num_classes: int, start: str | None = None):
        super().__init__()
        self.save_hyperparameters()  # the experiment's trained settings: the checkpoint describes its run
        self.experiment = Experiment.from_dict(experiment)
        self.net = build_gloro(self.experiment, tuple(input_shape), num_classes)
        self.schedule = self.experiment.schedule()
        self._val_k = None
        self.val_metrics = nn.ModuleDict({name: MeanMetric() for name in ("clean", "vra", "rejection")})

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

    def training_step(self, batch, batch_idx):
        x, y, total = batch
        if len(x) == 0:  # this rank's share of a last batch smaller than the number of processes
            return sum(p.sum() for p in self.parameters()) * 0.0
        settings = self.schedule.at(self.current_epoch)
        robust = settings.robust and self.experiment.robust
        step = step_loss(self.net, x, y, settings.eps if robust else None, settings.lam, self.experiment.trades)
        metrics = {"train/clean": clean_accuracy(step.logits, y)}
        if step.gloro is not None:
            metrics["train/vra"] = vra(step.gloro, y)
        self.log("train/loss", step.loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x),
                 sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        share = len(x) * self.trainer.world_size / total  # 1 on one process
        return step.loss if share == 1 else step.loss * share

    def _converge_iterates(self) -> None:
        """Power iteration to convergence, in IEEE float32; under DDP, rank 0's iterates everywhere."""
        with float32_precision("ieee"):
            self.net.converge(self.experiment.training.converge_tol)
            if self.trainer.world_size > 1:  # the same iterates on every rank, whatever each computed
                for layer in self.net.layers:
                    torch.distributed.broadcast(layer.u, src=0)

    def on_train_epoch_end(self) -> None:
        if not self.experiment.data.val_fraction:  # no validation: converge here, as it would
            self._converge_iterates()

    def on_validation_epoch_start(self) -> None:
        self._converge_iterates()
        with float32_precision("ieee"):
            self._val_k = self.net.k_ij().detach()
            self.log("val/lipschitz", self.net.layer_product())

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        if len(x) == 0:
            return
        with float32_precision("ieee"):
            logits = self.net.f(x)
            gloro = gloro_logits(logits, self._val_k, self.experiment.eps_test)
        verdict = gloro_prediction(gloro)
        for name, hit in (("clean", predicted_class(logits) == y), ("vra", verdict == y),
                          ("rejection", verdict == logits.shape[1])):
            self.val_metrics[name].update(hit.float())
            self.log(f"val/{name}", self.val_metrics[name], on_epoch=True, prog_bar=True)
