"""Warm-up and robust training of one experiment through Lightning, resumable after a kill.

The warm-up phase trains ``warmup`` epochs of plain cross-entropy and saves ``warmup.ckpt``. The
robust phase continues from it to ``warmup + epochs`` epochs, keeping the best checkpoint on the
validation split (``best.ckpt``; VRA for GloRo, clean accuracy for Standard) and the latest
(``last.ckpt``, every epoch). Run again after an interruption, it resumes from ``last.ckpt`` if
that run is unfinished and has the same trained settings (``Experiment.trained_settings``: not the
evaluation budgets) and starting point. A run that cannot be resumed is never deleted: it is
moved to ``<run folder>/../set_aside/<time>-epoch<k>/`` with a ``why.json``.
"""
from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pipeline.config import Experiment, Params
from pipeline.lit.datamodule import ArraysDataModule
from pipeline.lit.module import GloroModule
from pipeline.io import file_digest, write_json
from pipeline.tracking import lightning_logger


def datamodule_for(experiment: Experiment, data_dir: str | Path) -> ArraysDataModule:
    training = experiment.training
    return ArraysDataModule(data_dir, experiment.data.dataset, training.batch_size, training.augmentation,
                            val_fraction=experiment.data.val_fraction, seed=training.seed)


def build_trainer(max_epochs: int, logger, **kwargs) -> L.Trainer:
    """The pipeline's Trainer settings (no sanity validation, no inference mode: power iteration writes buffers)."""
    return L.Trainer(max_epochs=max_epochs, logger=logger, accelerator="auto", devices=1,
                     num_sanity_val_steps=0, inference_mode=False,  # power iteration writes buffers
                     log_every_n_steps=1, enable_model_summary=False, **kwargs)


def warm_up(params: Params, experiment: Experiment, data_dir: str | Path, checkpoint: str | Path,
            group: str | None = None) -> Path:
    """Train the warm-up epochs (none is fine) and save the starting checkpoint, atomically."""
    warmup = experiment.training.warmup
    L.seed_everything(experiment.training.seed, workers=True, verbose=False)
    data = datamodule_for(experiment, data_dir)
    module = GloroModule(experiment.trained_settings(), *data.describe())
    logger = lightning_logger(params.wandb, experiment, "warmup", group=group) if warmup else False
    trainer = build_trainer(warmup, logger, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, data)
    if logger:
        logger.experiment.finish()
    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_name(f".{checkpoint.name}.partial")
    trainer.save_checkpoint(partial)
    os.replace(partial, checkpoint)
    return checkpoint


def _differences(saved, current, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs between two nested dicts."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in sorted(set(saved) | set(current), key=str)
                for line in _differences(saved.get(key), current.get(key), f"{prefix}{key}.")]
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]


def resume_or_set_aside(out_dir: Path, hparams: dict, total_epochs: int) -> bool:
    """Whether to resume the run in ``out_dir``: an unfinished run of the same trained settings from
    the same start. Any other run there is moved aside (with the reason), never deleted."""
    last = out_dir / "last.ckpt"
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    try:
        saved = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as error:  # missing, or cut short by a kill
        saved, reason = None, [f"{last} is unreadable ({error})"]
    if saved is not None:
        reason = _differences(dict(saved.get("hyper_parameters", {})), dict(hparams))
        if not reason and saved.get("epoch", total_epochs) + 1 >= total_epochs:
            reason = [f"it finished all {total_epochs} epochs"]
    if not reason:
        return True
    epochs_done = saved.get("epoch", -1) + 1 if saved is not None else 0
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = out_dir.parent / "set_aside" / f"{stamp}-epoch{epochs_done}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out_dir, aside)
    write_json(aside / "why.json", {"moved_from": str(out_dir), "epochs_done": epochs_done, "reason": reason})
    print(f"not resuming {out_dir} ({epochs_done} epoch(s) done): {'; '.join(reason)}.\n"
          f"  Kept it, unchanged, in {aside}; delete that folder when you no longer need it.")
    return False


def train(params: Params, experiment: Experiment, data_dir: str | Path, start: str | Path, out_dir: str | Path,
          callbacks: tuple = (), group: str | None = None, job_type: str = "train") -> dict:
    """Robust (or Standard) training from the warm-up checkpoint ``start``; returns a summary.

    ``callbacks`` are added to the Trainer's (e.g. Optuna's pruning callback); ``group`` and
    ``job_type`` name the W&B run.
    """
    L.seed_everything(experiment.training.seed, workers=True, verbose=False)
    out_dir = Path(out_dir)
    data = datamodule_for(experiment, data_dir)
    module = GloroModule(experiment.trained_settings(), *data.describe(), start=file_digest(start))
    total = experiment.schedule().total_epochs
    last = out_dir / "last.ckpt"
    resume = resume_or_set_aside(out_dir, dict(module.hparams), total)
    if resume:
        print(f"resuming {experiment.name} from {last}")
    best = ModelCheckpoint(dirpath=out_dir, filename="best", monitor=experiment.selection_metric, mode="max",
                           enable_version_counter=False)
    latest = ModelCheckpoint(dirpath=out_dir, filename="last", enable_version_counter=False)  # every epoch
    logger = lightning_logger(params.wandb, experiment, job_type, log_model=True, group=group)
    trainer = build_trainer(total, logger, callbacks=[best, latest, *callbacks])
    try:
        trainer.fit(module, data, ckpt_path=last if resume else start)
    finally:
        logger.experiment.finish()
    best_epoch = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["epoch"] + 1
    warmup = experiment.training.warmup
    seconds = module.epoch_seconds[warmup:] or module.epoch_seconds
    return {"experiment": experiment.name, "epochs": total, "warmup": warmup,
            "best_epoch": best_epoch, "selection": experiment.selection_metric,
            "best_val": float(best.best_model_score), "resumed": bool(resume),
            "sec_per_epoch": sum(seconds) / max(len(seconds), 1), "epoch_seconds": module.epoch_seconds,
            "mem_mb_per_instance": module.memory_mb_per_instance,
            "validation_split": data.split, "train_size": len(data.tensors["train"][0]),
            "device": str(trainer.strategy.root_device)}
