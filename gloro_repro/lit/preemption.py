"""Training that a scheduler preempts keeps every finished step: on SIGTERM or SIGUSR1 the step in
progress finishes, ``last.ckpt`` is saved (loops, optimiser, schedules, data order) and training
stops with ``Preempted``, which the stages turn into exit ``PREEMPTED``.

The signal handler only takes note; after every training step the ranks agree (one all-reduce
of a flag) whether any of them was signalled, so every DDP rank stops after the same step, and
no collective runs inside a signal handler. Under SLURM, Lightning's own SIGUSR1 handler
(auto-requeue: it saves an ``hpc_ckpt`` and requeues the job) runs too, where Lightning installs it.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gloro_repro.preemption import SIGNALS, Preempted


def save_atomically(trainer: L.Trainer, checkpoint: str | Path) -> Path:
    """``trainer.save_checkpoint`` to a hidden file renamed into place: a kill never leaves half a
    checkpoint. Every rank takes part, rank 0 writes, and no rank goes on before it is there."""
    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_name(f".{checkpoint.name}.partial")
    trainer.save_checkpoint(partial)
    if trainer.is_global_zero:
        os.replace(partial, checkpoint)
    trainer.strategy.barrier("checkpoint in place")
    return checkpoint


class CheckpointOnPreemption(Callback):
    """Stops training after the step in progress when SIGTERM or SIGUSR1 arrives, saving ``checkpoint``
    there first (see the module's docstring); with ``checkpoint`` None (a short phase that starts
    again whole, like the warm-up) it only stops."""

    def __init__(self, checkpoint: str | Path | None):
        self.checkpoint = checkpoint and Path(checkpoint)
        self.signal: str | None = None
        self.received: float | None = None
        self._outer: dict = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():  # the handlers from before Lightning's
            self._outer = {signum: signal.getsignal(signum) for signum in SIGNALS}

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._outer:
            return
        usr1 = signal.getsignal(signal.SIGUSR1)
        slurm = usr1 if usr1 is not self._outer[signal.SIGUSR1] else None  # Lightning's auto-requeue handler

        def take_note(signum, frame):
            if self.signal is None:
                self.signal, self.received = signal.Signals(signum).name, time.monotonic()
            for handler in (slurm if signum == signal.SIGUSR1 else None, self._outer[signum]):
                if callable(handler):
                    handler(signum, frame)  # e.g. a search worker's, which stops it at once

        for signum in SIGNALS:  # Lightning restores its predecessors' handlers after fit
            signal.signal(signum, take_note)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.signal is not None, all=False):
            return
        why = self.signal or "a signal to another rank"
        if self.checkpoint is None:
            raise Preempted(f"{why}: stopped; nothing of this phase kept, the same command starts it again")
        save_atomically(trainer, self.checkpoint)
        after = f", {time.monotonic() - self.received:.1f} s after the signal" if self.received else ""
        raise Preempted(f"{why}: saved {self.checkpoint} at epoch {trainer.current_epoch + 1}, step "
                        f"{trainer.global_step}{after}; run the same command to resume from there")


def fit(trainer: L.Trainer, module: L.LightningModule, data, ckpt_path=None) -> None:
    """``trainer.fit``, raising ``Preempted`` also where Lightning's own SIGTERM handling stopped it
    (a signal before the first step)."""
    try:
        trainer.fit(module, data, ckpt_path=ckpt_path)
    except SIGTERMException:
        raise Preempted("SIGTERM: stopped before training began; the same command starts it again") from None
