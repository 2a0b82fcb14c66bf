"""Training that a scheduler preempts keeps every finished step: on SIGTERM or SIGUSR1 the step in
progress finishes, ``last.ckpt`` is saved (loops, optimiser, schedules, data order) and ``fit``
stops; ``fit`` (below) then raises ``Preempted``, which the stages turn into exit ``PREEMPTED``.

Lightning already stops every DDP rank at the same step on SIGTERM; this adds SIGUSR1 and the
checkpoint. Under SLURM, Lightning's own SIGUSR1 handler (auto-requeue: it saves an
``hpc_ckpt`` and requeues the job) runs first, then the run stops the same way.
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

from gloro_repro.preemption import Preempted


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


def _call(handler, signum, frame) -> None:
    if callable(handler):
        handler(signum, frame)


class CheckpointOnPreemption(Callback):
    """Saves ``checkpoint`` when SIGTERM or SIGUSR1 stops the run (see the module's docstring); with
    ``checkpoint`` None (a short phase that restarts whole, like the warm-up) only stops it."""

    def __init__(self, checkpoint: str | Path | None):
        self.checkpoint = checkpoint and Path(checkpoint)
        self.signal: str | None = None
        self.received: float | None = None
        self.kept = ""

    def _note(self, signum) -> None:
        if self.signal is None:
            self.signal, self.received = signal.Signals(signum).name, time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # Lightning has installed its handlers by now (and restores the previous ones after fit)
        term, usr1 = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)

        def on_term(signum, frame):
            self._note(signum)
            _call(term, signum, frame)

        def on_usr1(signum, frame):
            self._note(signum)
            _call(usr1, signum, frame)  # Lightning's SLURM requeue where it applies
            _call(term, signum, frame)  # then stop as for SIGTERM

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGUSR1, on_usr1)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or self.checkpoint is None:
            return
        save_atomically(trainer, self.checkpoint)
        after = f", {time.monotonic() - self.received:.1f} s after the signal" if self.received else ""
        self.kept = (f"saved {self.checkpoint} at epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
                     f"{after}; run the same command to resume from there")


def fit(trainer: L.Trainer, module: L.LightningModule, data, ckpt_path=None) -> None:
    """``trainer.fit``, raising ``Preempted`` (with what was kept) where Lightning stopped for a signal."""
    try:
        trainer.fit(module, data, ckpt_path=ckpt_path)
    except SIGTERMException:
        keeper = next((c for c in trainer.callbacks if isinstance(c, CheckpointOnPreemption)), None)
        why = (keeper and keeper.signal) or "SIGTERM"
        raise Preempted(f"{why}: {keeper.kept}" if keeper and keeper.kept
                        else f"{why}: stopped; nothing of this phase kept, the same command starts it again") from None
