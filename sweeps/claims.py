"""Trials shared by search workers through an Optuna storage: each candidate is claimed atomically,
trains once, and a dead worker's candidate goes back to the others. Public Optuna API only.

* A candidate is a trial enqueued with ``{"candidate": label}`` (``Study.enqueue_trial``). A worker
  claims one by moving it from WAITING to RUNNING with ``storage.set_trial_state_values``, which
  succeeds for exactly one worker (the row is locked in an RDB storage); only the lowest-numbered
  live trial of a candidate may be claimed, so two workers that enqueued the same candidate at
  the same moment still train it once.
* RDB storages (PostgreSQL, SQLite) carry Optuna's heartbeats: the claiming worker records one
  every ``heartbeat`` seconds; any worker, on any machine, runs ``optuna.storages.fail_stale_trials``
  and so fails a trial whose heartbeat is older than ``grace`` seconds, and the storage's
  ``RetryHeartbeatStaleTrialCallback`` enqueues it again for the others.
* A journal file (``journal:<file>``) has no heartbeats in Optuna; it serves workers on one
  machine, where a dead worker is recognised by its process id.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from contextlib import contextmanager

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
LIVE = (TrialState.WAITING, TrialState.RUNNING)
# Heartbeats, fail_stale_trials and the retry callback have been in Optuna since 2.8/2.9 and are
# still flagged experimental; the search relies on them on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS):
    """An Optuna storage from a URL: ``postgresql://...`` or ``sqlite:///file.db`` (with heartbeats),
    or ``journal:file.log``."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if not 0 < heartbeat < grace:
        raise ValueError(f"heartbeat {heartbeat} s and grace {grace} s: expected 0 < heartbeat < grace")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
        except (IntegrityError, ProgrammingError):  # workers starting together race to create the tables
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def has_heartbeats(storage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage)


def trials_of(study: optuna.Study, label: str) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("candidate") == label]


def enqueue(study: optuna.Study, label: str, step: str) -> None:
    study.enqueue_trial({"candidate": label}, user_attrs={"candidate": label, "step": step})


def _trial_id(storage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def claim(storage, study: optuna.Study, trial: FrozenTrial) -> optuna.Trial | None:
    """Move ``trial`` from WAITING to RUNNING for this worker; None if another worker was first."""
    trial_id = _trial_id(storage, study, trial.number)
    try:
        if not storage.set_trial_state_values(trial_id, TrialState.RUNNING):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    if has_heartbeats(storage):
        storage.record_heartbeat(trial_id)  # stale only once heartbeats stop
    claimed = optuna.trial.Trial(study, trial_id)
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid())):
        claimed.set_user_attr(key, value)
    return claimed


@contextmanager
def heartbeats(storage, study: optuna.Study, trial: optuna.Trial):
    """Record the trial's heartbeat in the background while it runs (RDB storages)."""
    if not has_heartbeats(storage):
        yield
        return
    trial_id, stop = _trial_id(storage, study, trial.number), threading.Event()

    def beat():
        while not stop.wait(storage.get_heartbeat_interval()):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def give_back(storage, study: optuna.Study, trial: optuna.Trial) -> None:
    """Fail a trial this worker cannot finish (interrupted) and enqueue it again for the others."""
    study.tell(trial, state=TrialState.FAIL)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    enqueue(study, frozen.user_attrs["candidate"], frozen.user_attrs.get("step", ""))


def fail_dead_workers(storage, study: optuna.Study) -> None:
    """Fail the RUNNING trials of workers that died, and enqueue their candidates again."""
    if has_heartbeats(storage):
        fail_stale_trials(study)  # Optuna's heartbeat check; its callback re-enqueues
        return
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or process_alive(pid):
            continue
        try:
            if storage.set_trial_state_values(_trial_id(storage, study, trial.number), TrialState.FAIL):
                enqueue(study, trial.user_attrs["candidate"], trial.user_attrs.get("step", ""))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def process_alive(pid: int) -> bool:
    """Whether another process ``pid`` runs on this machine (this process: no, for a trial it left)."""
    if pid == os.getpid():
        return False  # this process runs one trial at a time, and is not running that one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_live(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The candidate's trial that may run: the lowest-numbered WAITING or RUNNING one."""
    live = [t for t in trials if t.state in LIVE]
    return min(live, key=lambda t: t.number) if live else None
