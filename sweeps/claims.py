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
* A database restart, failover or dropped connection is ridden out (``PatientRDBStorage``): a call
  that fails because the connection was lost is retried with backoff for up to ``outage`` seconds;
  a longer outage ends the worker with ``StorageUnavailable``, its trial left to the heartbeat check.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
OUTAGE_SECONDS = 300  # how long a worker waits for its database to come back before it gives up
LIVE = (TrialState.WAITING, TrialState.RUNNING)
# Heartbeats, fail_stale_trials and the retry callback have been in Optuna since 2.8/2.9 and are
# still flagged experimental; the search relies on them on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS,
                 outage: float = OUTAGE_SECONDS):
    """An Optuna storage from a URL: ``postgresql://...`` or ``sqlite:///file.db`` (with heartbeats,
    riding out database outages up to ``outage`` seconds), or ``journal:file.log``."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if not 0 < heartbeat < grace:
        raise ValueError(f"heartbeat {heartbeat} s and grace {grace} s: expected 0 < heartbeat < grace")
    if not outage > 0:
        raise ValueError(f"outage {outage} s: expected a number of seconds > 0")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return PatientRDBStorage(url, outage, heartbeat_interval=heartbeat, grace_period=grace,
                                     heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
        except (IntegrityError, ProgrammingError):  # workers starting together race to create the tables
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


class StorageUnavailable(Exception):
    """The database stayed unreachable for longer than the worker's ``outage`` bound."""


def database_error(error: BaseException) -> BaseException:
    """The database's own error behind a failed storage call: Optuna's wrapper is looked through,
    and so is SQLAlchemy's ``PendingRollbackError``, to the error that spoilt the transaction
    (Optuna's ``_get_trials`` retries a failed query in it)."""
    from sqlalchemy import exc

    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else error
    if isinstance(cause, exc.PendingRollbackError):
        cause = cause.__cause__ or cause.__context__ or cause
    return cause or error


def connection_lost(error: BaseException) -> bool:
    """Whether a storage call failed because the database connection was lost or refused (a restart,
    a failover, a network drop), rather than for what the call asked: SQLAlchemy saw a disconnect,
    or the driver's error has no SQLSTATE (no server answered) or a connection one (class 08, or
    57P: the administrator or a crash shut the server down). A serialization failure or deadlock is
    not one. Judged on ``database_error(error)``."""
    from sqlalchemy import exc

    cause = database_error(error)
    if not isinstance(cause, exc.DBAPIError):
        return False
    if cause.connection_invalidated:
        return True
    state = getattr(cause.orig, "sqlstate", None) or getattr(cause.orig, "pgcode", None)
    return isinstance(cause, (exc.OperationalError, exc.InterfaceError)) and (
        state is None or state.startswith(("08", "57P")))


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage that waits out a lost database: a call failing with a lost connection is
    retried with backoff (0.5 s doubling to the heartbeat interval, so a live worker beats again
    within one interval of the database's return) for up to ``outage`` seconds, then raises
    ``StorageUnavailable``. Connections are checked before use (``pool_pre_ping``), so those a
    restart cut are replaced. One line on stderr says when the database went away and came back."""

    def __init__(self, url: str, outage: float = OUTAGE_SECONDS, **kwargs):
        self.outage, self.recovered_at = outage, None  # monotonic time the last outage ended
        self._down_since: float | None = None
        self._announce = threading.Lock()
        super().__init__(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)

    def __getstate__(self) -> dict:  # picklable, as Optuna's RDBStorage is
        state = super().__getstate__()
        del state["_announce"]
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._announce = threading.Lock()

    def patiently(self, call, *args, **kwargs):
        """``call(*args, **kwargs)``, retried while the connection is lost, up to ``outage`` seconds."""
        deadline, delay = None, 0.5
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as error:
                if not connection_lost(error):
                    if deadline is not None:
                        self._came_back()  # the database answered, if not as asked
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.outage
                cause = database_error(error)
                reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
                self._went_down(reason)
                if now >= deadline:
                    raise StorageUnavailable(f"the database was unreachable for {self.outage:g} s "
                                             f"(--storage-outage; last error {reason})") from None
                time.sleep(min(delay, deadline - now))
                delay = min(2 * delay, self.heartbeat_interval or 10.0)
                continue
            if deadline is not None:
                self._came_back()
            return result

    def _went_down(self, reason: str) -> None:
        with self._announce:
            if self._down_since is None:
                self._down_since = time.monotonic()
                print(f"storage: lost the database ({reason}); retrying for up to {self.outage:g} s",
                      file=sys.stderr, flush=True)

    def _came_back(self) -> None:
        with self._announce:
            if self._down_since is not None:
                print(f"storage: the database is back after {time.monotonic() - self._down_since:.0f} s",
                      file=sys.stderr, flush=True)
                self._down_since, self.recovered_at = None, time.monotonic()

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        lost = []  # an attempt whose connection dropped may have committed before it did

        def attempt():
            try:
                return super(PatientRDBStorage, self).set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if any(lost) and self.get_trial(trial_id).state == state:
                    return True  # our own earlier attempt landed: the trial is recorded once
                raise
            except Exception as error:
                lost.append(connection_lost(error))
                raise

        return self.patiently(attempt)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's heartbeat check, which finds none while the database is, or was just, away: the
        workers that lost it too get one grace period to record a heartbeat again."""
        stale = self.patiently(super()._get_stale_trial_ids, study_id)
        just_back = self.recovered_at is not None and time.monotonic() - self.recovered_at < self.grace_period
        return [] if just_back or self._down_since is not None else stale


def _patient(method):
    def call(self, *args, **kwargs):
        return self.patiently(method, self, *args, **kwargs)

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


# Every call that opens its own session, including the private ones Optuna's _CachedStorage makes.
for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
              "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_intermediate_value",
              "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
              "get_trial", "get_all_trials", "get_best_trial", "record_heartbeat",
              "_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param"):
    setattr(PatientRDBStorage, _name, _patient(getattr(optuna.storages.RDBStorage, _name)))


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
            try:
                storage.record_heartbeat(trial_id)
            except StorageUnavailable:
                pass  # the main thread meets the outage too, and ends the worker

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=storage.get_heartbeat_interval())  # not for a heartbeat stuck retrying


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
