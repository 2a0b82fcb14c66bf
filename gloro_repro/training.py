"""Warm-up and robust training of one experiment through Lightning, resumable after a kill.

The warm-up phase trains ``warmup`` epochs of plain cross-entropy and saves ``warmup.ckpt``. The
robust phase continues from it to ``warmup + epochs`` epochs, keeping the best checkpoint on the
validation split (``best.ckpt``; VRA for GloRo, clean accuracy for Standard; with
``data.val_fraction: 0`` there is no split and ``best.ckpt`` is the last epoch) and the latest
(``last.ckpt``, every epoch). Run again after an interruption, it resumes from ``last.ckpt`` if
that run is unfinished and has the same trained settings (``Experiment.trained_settings``: not the
evaluation budgets) and starting point. A run that cannot be resumed is never deleted: it is
moved to ``<run folder>/../set_aside/<time>-epoch<k>/`` with a ``why.json``.

The hardware comes from ``gloro_repro.hardware`` (``GLORO_*`` variables): on several devices, Lightning
DDP runs one process per device, each with ``batch_size / processes`` of every global batch.
Only rank 0 moves runs aside, writes checkpoints and logs; ``train`` returns the summary there and
None on the other ranks. SIGTERM or SIGUSR1 (a scheduler's preemption) stops training at the end of
the step in progress with ``last.ckpt`` saved there, and raises ``Preempted``; the resumed run
continues from that step with the same data order (``gloro_repro.lit.preemption``).
Training runs in the experiment's float32 precision (``training.tf32``).
"""
from __future__ import annotations

import datetime
import shutil
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gloro_repro.artifacts import load_initial, save_initial
from gloro_repro.config import Experiment, Params
from gloro_repro.console import announce_run, quiet_libraries
from gloro_repro.gloro.precision import float32_precision
from gloro_repro.hardware import Hardware, describe, is_first_process
from gloro_repro.io import file_digest, write_json
from gloro_repro.lit.costs import TrainingCosts, training_costs
from gloro_repro.lit.datamodule import ArraysDataModule, per_device_batch
from gloro_repro.lit.module import GloroModule
from gloro_repro.lit.preemption import CheckpointOnPreemption, fit, save_atomically
from gloro_repro.lit.progress import EpochProgressBar
from gloro_repro.tracking import lightning_logger, new_run_id


def datamodule_for(experiment: Experiment, data_dir: str | Path) -> ArraysDataModule:
    training = experiment.training
    return ArraysDataModule(data_dir, experiment.data.dataset, training.batch_size, training.augmentation,
                            val_fraction=experiment.data.val_fraction, seed=training.seed)


def build_trainer(max_epochs: int, logger, hardware: Hardware, batch_size: int, callbacks: tuple = (),
                  progress: bool = True, **kwargs) -> L.Trainer:
    """The pipeline's Trainer settings (no sanity validation, no inference mode: power iteration writes
    buffers, ``TrainingCosts`` measured, a progress bar unless ``progress`` is false) on ``hardware``;
    refuses a ``batch_size`` its processes cannot share evenly."""
    quiet_libraries()  # again: importing Lightning set its own log level
    trainer = L.Trainer(max_epochs=max_epochs, logger=logger, num_sanity_val_steps=0, inference_mode=False,
                        log_every_n_steps=1, enable_model_summary=False,
                        callbacks=[TrainingCosts(), *([EpochProgressBar()] if progress else []), *callbacks],
                        enable_progress_bar=progress, **hardware.trainer_kwargs(), **kwargs)
    per_device_batch(batch_size, trainer.world_size)
    return trainer


def precision(experiment: Experiment) -> str:
    """The float32 precision of the training passes: TF32 only when the experiment asks for it."""
    return "tf32" if experiment.training.tf32 else "ieee"


def warm_up(params: Params, experiment: Experiment, data_dir: str | Path, checkpoint: str | Path,
            group: str | None = None, hardware: Hardware | None = None, progress: bool = True) -> Path:
    """Train the warm-up epochs and save the starting checkpoint, atomically (rank 0); with none, save
    the seeded initial weights (``artifacts.save_initial``, what ``train`` then starts from)."""
    warmup = experiment.training.warmup
    if not warmup:
        return save_initial(experiment, data_dir, checkpoint)
    hardware = hardware or Hardware.from_env()
    L.seed_everything(experiment.training.seed, workers=True, verbose=False)
    data = datamodule_for(experiment, data_dir)
    module = GloroModule(experiment.trained_settings(), *data.describe(), cuda_graphs=hardware.cuda_graphs)
    logger = lightning_logger(params.wandb, experiment, "warmup", group=group)
    trainer = build_trainer(warmup, logger, hardware, experiment.training.batch_size,
                            callbacks=(CheckpointOnPreemption(None),), progress=progress, limit_val_batches=0,
                            enable_checkpointing=False)
    try:
        with float32_precision(precision(experiment)):
            fit(trainer, module, data)
    finally:
        logger.experiment.finish()
    return save_atomically(trainer, checkpoint)


def _differences(saved, current, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs between two nested dicts."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in sorted(set(saved) | set(current), key=str)
                for line in _differences(saved.get(key), current.get(key), f"{prefix}{key}.")]
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]


def previous_run(out_dir: Path, hparams: dict, total_epochs: int) -> tuple[dict | None, list[str]]:
    """The run in ``out_dir`` (its ``last.ckpt``, or None) and why it cannot be resumed; no reason means
    resume it: an unfinished run of the same trained settings from the same start. An empty or missing
    folder gives ``(None, [])``: nothing to resume, nothing to set aside."""
    last = out_dir / "last.ckpt"
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None, []
    try:
        saved = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as error:  # missing, or cut short by a kill
        return None, [f"{last} is unreadable ({error})"]
    reason = _differences(dict(saved.get("hyper_parameters", {})), dict(hparams))
    if not reason and saved.get("epoch", total_epochs) + 1 >= total_epochs:
        reason = [f"it finished all {total_epochs} epochs"]
    return saved, reason


def set_aside(out_dir: Path, saved: dict | None, reason: list[str]) -> None:
    """Move a run that cannot be resumed to ``set_aside/<time>-epoch<k>/`` with a ``why.json``; never delete it."""
    epochs_done = saved.get("epoch", -1) + 1 if saved is not None else 0
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = out_dir.parent / "set_aside" / f"{stamp}-epoch{epochs_done}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out_dir, aside)
    write_json(aside / "why.json", {"moved_from": str(out_dir), "epochs_done": epochs_done, "reason": reason})
    print(f"not resuming {out_dir} ({epochs_done} epoch(s) done): {'; '.join(reason)}.\n"
          f"  Kept it, unchanged, in {aside}; delete that folder when you no longer need it.")


def train(params: Params, experiment: Experiment, data_dir: str | Path, start: str | Path, out_dir: str | Path,
          callbacks: tuple = (), group: str | None = None, job_type: str = "train",
          hardware: Hardware | None = None, progress: bool = True) -> dict | None:
    """Robust (or Standard) training from the warm-up checkpoint ``start``; returns a summary (rank 0).

    ``callbacks`` are added to the Trainer's (e.g. Optuna's pruning callback); ``group`` and
    ``job_type`` name the W&B run; ``hardware`` defaults to the ``GLORO_*`` variables; ``progress``
    false hides the progress bar (a search prints a line per trial instead).
    """
    hardware = hardware or Hardware.from_env()
    L.seed_everything(experiment.training.seed, workers=True, verbose=False)
    out_dir = Path(out_dir)
    data = datamodule_for(experiment, data_dir)
    module = GloroModule(experiment.trained_settings(), *data.describe(), start=file_digest(start),
                         cuda_graphs=hardware.cuda_graphs)
    total = experiment.schedule().total_epochs
    last = out_dir / "last.ckpt"
    # without a validation split (selection_metric None) "best" is simply the last epoch
    best = ModelCheckpoint(dirpath=out_dir, filename="best", monitor=experiment.selection_metric, mode="max",
                           enable_version_counter=False)
    latest = ModelCheckpoint(dirpath=out_dir, filename="last", enable_version_counter=False)  # every epoch
    saved, reason = previous_run(out_dir, dict(module.hparams), total)
    resume = saved is not None and not reason
    # a resumed training continues its W&B run: the id travels in the checkpoints
    module.wandb_run_id = (resume and saved.get("wandb_run_id")) or new_run_id()
    logger = lightning_logger(params.wandb, experiment, job_type, log_model=True, group=group,
                              run_id=module.wandb_run_id)
    no_validation = {} if experiment.selection_metric else {"limit_val_batches": 0}
    # built (and the hardware checked) before a previous run is touched: a refusal moves nothing aside
    trainer = build_trainer(total, logger, hardware, experiment.training.batch_size,
                            callbacks=[best, latest, CheckpointOnPreemption(last), *callbacks], progress=progress,
                            default_root_dir=out_dir, **no_validation)
    if reason and is_first_process():  # other DDP ranks leave the move to rank 0
        set_aside(out_dir, saved, reason)
    try:
        announce_run(logger.experiment)
    except Exception as error:  # W&B refused the run (e.g. still held by a killed process's W&B service)
        print(f"note: W&B did not take run {module.wandb_run_id} ({str(error).splitlines()[0]}); "
              "logging to a new run", file=sys.stderr)
        module.wandb_run_id = new_run_id()
        trainer.logger = logger = lightning_logger(params.wandb, experiment, job_type, log_model=True, group=group,
                                                   run_id=module.wandb_run_id)
        announce_run(logger.experiment)
    if resume and is_first_process():
        print(f"resuming {experiment.name} from {last}")
    ckpt_path = last if resume else start if experiment.training.warmup else None
    if ckpt_path is None:  # a start without warm-up epochs holds the initial weights only
        module.net.load_state_dict(load_initial(start))
    try:
        with float32_precision(precision(experiment)):
            fit(trainer, module, data, ckpt_path=ckpt_path)
    finally:
        logger.experiment.finish()
    if not trainer.is_global_zero:
        return None
    best_epoch = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["epoch"] + 1
    warmup = experiment.training.warmup
    costs = training_costs(trainer)
    seconds = costs.epoch_seconds[warmup:] or costs.epoch_seconds
    return {"experiment": experiment.name, "epochs": total, "warmup": warmup,
            "best_epoch": best_epoch, "selection": experiment.selection_metric or experiment.selection,
            "best_val": None if best.best_model_score is None else float(best.best_model_score),
            "resumed": bool(resume),
            "sec_per_epoch": sum(seconds) / max(len(seconds), 1), "epoch_seconds": costs.epoch_seconds,
            "mem_mb_per_instance": costs.mem_mb_per_instance,
            "validation_split": data.split, "train_size": len(data.tensors["train"][0]),
            "device": describe(trainer.strategy.root_device), "processes": trainer.world_size,
            "torch_threads": torch.get_num_threads(),
            "per_device_batch": per_device_batch(experiment.training.batch_size, trainer.world_size),
            "float32": precision(experiment)}
