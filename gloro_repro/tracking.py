"""Weights & Biases: offline by default, online when params (``wandb.mode``) or ``WANDB_MODE`` say so.

Offline runs land under ``./wandb`` (or ``$WANDB_DIR``) and need no account; ``wandb sync
wandb/offline-run-*`` uploads them later. Runs are grouped by experiment, one per stage (job type).
"""
from __future__ import annotations

import os

from gloro_repro.config import WANDB_MODES, ConfigError, Experiment, WandbConfig


def wandb_mode(cfg: WandbConfig) -> str:
    """``WANDB_MODE`` from the environment wins over params (e.g. ``disabled`` in tests)."""
    mode = os.environ.get("WANDB_MODE", cfg.mode)
    if mode not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE: got {mode!r}, expected one of {list(WANDB_MODES)}")
    return mode


def run_settings(cfg: WandbConfig, group: str, job_type: str, config: dict) -> dict:
    """Keyword arguments shared by ``wandb.init`` and Lightning's ``WandbLogger``."""
    return {"project": cfg.project, "entity": cfg.entity, "group": group, "job_type": job_type,
            "name": f"{group}/{job_type}", "config": config, "mode": wandb_mode(cfg),
            "dir": os.environ.get("WANDB_DIR", "."), "reinit": "finish_previous"}


def lightning_logger(cfg: WandbConfig, experiment: Experiment, job_type: str, log_model: bool = False,
                     group: str | None = None, run_id: str | None = None):
    """A ``WandbLogger`` for a training stage; with ``log_model`` the checkpoints become an artifact.
    ``run_id`` names the W&B run, so a resumed training continues the run it started."""
    from lightning.pytorch.loggers import WandbLogger

    settings = run_settings(cfg, group or experiment.name, job_type, experiment.as_dict())
    if run_id is not None:
        settings |= {"id": run_id, "resume": "allow"}
    logger = WandbLogger(save_dir=settings.pop("dir"), log_model=log_model, **settings)
    # Lightning 2.6 passes anonymous=None, which W&B 0.31 answers with a deprecation notice on every run
    logger._wandb_init.pop("anonymous", None)
    return logger


def new_run_id() -> str:
    """A fresh W&B run id (8 lowercase hex digits)."""
    import secrets

    return secrets.token_hex(4)


def start_run(cfg: WandbConfig, group: str, job_type: str, config: dict):
    """A plain ``wandb`` run for the stages that do not train."""
    import wandb

    from gloro_repro.console import announce_run

    run = wandb.init(**run_settings(cfg, group, job_type, config))
    announce_run(run)
    return run
