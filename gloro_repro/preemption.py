"""Preemption: cluster schedulers stop a job with SIGTERM (SLURM can send SIGUSR1 first, e.g.
``sbatch --signal=USR1@90``) and kill it a grace period later.

Training stops at the end of the step in progress, saves ``last.ckpt`` and exits ``PREEMPTED``; the
same command resumes from that step (``gloro_repro.lit.preemption``). A search worker gives its
candidate back to the others at once (``stop_at_once``) and exits ``PREEMPTED`` too.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

PREEMPTED = 75  # EX_TEMPFAIL: stopped, not failed; run the same command again to go on
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(BaseException):
    """A scheduler asked this process to stop; the message says what was kept.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` records it as a failed
    trial; not a KeyboardInterrupt, which Lightning turns into ``sys.exit(1)``."""


@contextmanager
def stop_at_once():
    """Within the block, SIGTERM or SIGUSR1 raises ``Preempted`` in the main thread at once."""
    def stop(signum, frame):
        raise Preempted(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, stop) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
