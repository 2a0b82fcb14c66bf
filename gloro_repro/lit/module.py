"""One LightningModule for GloRo and Standard training, a thin shell over ``gloro_repro.gloro``.

Per epoch: warm-up epochs train f with plain cross-entropy; robust epochs train the GloRo net at
the scheduled eps with TRADES(lambda) or CE over the m+1 logits; the LR follows the paper's
schedule; every step's loss is the core's ``step_loss``. Before every validation (at every epoch's
end without a validation split), power iteration runs to convergence so validation VRA uses the
converged bound (as the paper's evaluation does), in IEEE float32. Time and memory are measured
by ``gloro_repro.lit.costs``. Metric keys: ``train/*``, ``val/*``.

On one CUDA device each step's forward and backward (power iteration, logits, margin bounds,
loss, the step's metrics) is replayed from a CUDA graph (``gloro_repro.gloro.graphs``) that reads
eps and lambda from device tensors, so one graph per batch shape serves every epoch; Adam is
fused. ``cuda_graphs=False`` (``GLORO_CUDA_GRAPHS=0``) runs it eagerly.

Under DDP each rank takes its share of every global batch (``gloro_repro.lit.datamodule``); its
mean loss is weighted by its share, so the averaged gradient is the global batch's whatever the
split. DDP broadcasts the power-iteration iterates from rank 0 before every forward; after the
validation's convergence they are broadcast again. Training and validation metrics are sums over
all ranks, so ``best.ckpt`` is chosen on the whole validation split.
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from gloro_repro.artifacts import build_gloro
from gloro_repro.config import Experiment
from gloro_repro.gloro import step_loss
from gloro_repro.gloro.graphs import GraphedStep
from gloro_repro.gloro.model import clean_accuracy, gloro_logits, gloro_prediction, predicted_class, vra
from gloro_repro.gloro.precision import float32_precision


class GloroModule(L.LightningModule):
    """Trains ``GloroNet`` following an ``Experiment``'s schedules (Standard models: CE on f only)."""

    def __init__(self, experiment: dict, input_shape: list[int], num_classes: int, start: str | None = None,
                 cuda_graphs: bool = True):
        super().__init__()
        # the experiment's trained settings: the checkpoint describes its run (how fast it ran is not part of it)
        self.save_hyperparameters(ignore=["cuda_graphs"])
        self.cuda_graphs = cuda_graphs
        self._graphed: GraphedStep | None = None  # set on one CUDA device with cuda_graphs
        self._schedule_values: tuple[float, float] | None = None
        self.graph_captures = 0  # CUDA graphs captured by the last fit
        self.experiment = Experiment.from_dict(experiment)
        self.net = build_gloro(self.experiment, tuple(input_shape), num_classes)
        self.schedule = self.experiment.schedule()
        self._val_k = None
        self.val_metrics = nn.ModuleDict({name: MeanMetric() for name in ("clean", "vra", "rejection")})
        # this epoch's sums of each step metric times its batch size, and of the batch sizes: their means are
        # logged at the epoch's end (Lightning's ``log`` in every step cost 2.6 ms a step on the CPU)
        self._train_sums: dict[str, torch.Tensor] = {}
        self._train_count = 0
        self.wandb_run_id: str | None = None  # saved in checkpoints, so a resumed training logs to its run

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["wandb_run_id"] = self.wandb_run_id

    def configure_optimizers(self):
        init_lr = self.experiment.training.init_lr
        # Keras's Adam epsilon; on CUDA one fused kernel
        optimiser = torch.optim.Adam(self.parameters(), lr=init_lr, eps=1e-7, fused=self.device.type == "cuda" or None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda epoch: self.schedule.at(epoch).lr / init_lr)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_start(self) -> None:
        graphs = self.cuda_graphs and self.device.type == "cuda" and self.trainer.world_size == 1
        self._graphed = GraphedStep(self.net) if graphs else None  # DDP's gradient hooks need the eager step
        self._schedule_values = None

    def on_train_end(self) -> None:
        if self._graphed is not None:
            self.graph_captures = self._graphed.captures
        self._graphed = None  # releases the graphs' memory

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        if self._graphed is None:  # a replayed graph has already run backward
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        if self._graphed is None:  # a replayed graph has just written the gradients
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def _scheduled_tensors(self, eps: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """0-dim device tensors holding this epoch's eps and lambda, refilled (no sync) when they change."""
        if self._schedule_values is None:
            self._schedule_tensors = (torch.zeros((), device=self.device), torch.zeros((), device=self.device))
        if self._schedule_values != (eps, lam):
            for tensor, value in zip(self._schedule_tensors, (eps, lam)):
                tensor.fill_(value)
            self._schedule_values = (eps, lam)
        return self._schedule_tensors

    def _losses(self, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor | None,
                lam: float | torch.Tensor) -> dict[str, torch.Tensor]:
        step = step_loss(self.net, x, y, eps, lam, self.experiment.training.loss)
        outputs = {"loss": step.loss, "clean": clean_accuracy(step.logits, y)}
        if step.gloro is not None:
            outputs["vra"] = vra(step.gloro, y)
        return outputs

    def on_train_epoch_start(self) -> None:
        settings = self.schedule.at(self.current_epoch)
        self.log_dict({"train/eps": settings.eps, "train/lambda": settings.lam,
                       "train/lr": self.optimizers().param_groups[0]["lr"],
                       "train/robust": float(settings.robust and self.experiment.robust)},
                      sync_dist=True)  # the same on every rank: averaging changes nothing, and DDP stays quiet

    def training_step(self, batch, batch_idx):
        x, y, total = batch
        if len(x) == 0:  # this rank's share of a last batch smaller than the number of processes
            return sum(p.sum() for p in self.parameters()) * 0.0
        settings = self.schedule.at(self.current_epoch)
        robust = settings.robust and self.experiment.robust
        eps = settings.eps if robust else None
        if self._graphed is not None:  # eps and lambda as device tensors: one graph serves every epoch
            eps_t, lam_t = self._scheduled_tensors(settings.eps, settings.lam)
            losses = lambda x, y: self._losses(x, y, eps_t if robust else None, lam_t)
            metrics = dict(self._graphed(x, y, losses, key=robust))
        else:
            metrics = self._losses(x, y, eps, settings.lam)
        for name, value in metrics.items():
            self._train_sums[name] = self._train_sums.get(name, 0) + value.detach() * len(x)
        self._train_count += len(x)
        share = len(x) * self.trainer.world_size / total  # 1 on one process
        return metrics["loss"] if share == 1 else metrics["loss"] * share

    def _converge_iterates(self) -> None:
        """Power iteration to convergence, in IEEE float32; under DDP, rank 0's iterates everywhere."""
        with float32_precision("ieee"):
            self.net.converge(self.experiment.training.converge_tol)
            if self.trainer.world_size > 1:  # the same iterates on every rank, whatever each computed
                for layer in self.net.layers:
                    torch.distributed.broadcast(layer.u, src=0)

    def on_train_epoch_end(self) -> None:
        for name, total in self._train_sums.items():  # vra only in robust epochs
            # weighted by this rank's count, so Lightning's sync makes it the mean over every rank's batches
            self.log(f"train/{name}", total / self._train_count, batch_size=self._train_count, sync_dist=True,
                     prog_bar=name == "loss")
        self._train_sums, self._train_count = {}, 0
        if not self.experiment.data.val_fraction:  # no validation: converge here, as it would
            self._converge_iterates()

    def on_validation_epoch_start(self) -> None:
        self._converge_iterates()
        with float32_precision("ieee"):
            self._val_k = self.net.k_ij().detach()
            self.log("val/lipschitz", self.net.layer_product(), sync_dist=True)  # equal on every rank

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
