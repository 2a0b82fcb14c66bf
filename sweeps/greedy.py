"""Replay Appendix B's greedy hyperparameter search with Optuna, training through the pipeline's code.

    gloro-search --experiment digits_minmax --epoch-scale 0.05
    gloro-search --experiment mnist_2c2f_minmax --storage postgresql://user@host/db   # many workers

Parameters are searched one at a time in the paper's order (eps schedule, lambda, # epochs, LR
decay, warm-up, initialisation, # power iterations, minibatch size), each an Optuna study whose
trials train the experiment with one candidate changed and report VRA on the validation split;
the winner carries to the next step. Trials live in the storage (SQLite file by default), so an
interrupted search resumes without redoing finished trials, and several workers started with the
same storage share the trials: each candidate is claimed by one worker, and a dead worker's
candidate goes back to the others (``gloro_repro.sweeps.claims``). Workers on one machine share its cores.
Hopeless trials are pruned from per-epoch validation VRA. Writes
``results/search_<experiment>.{md,csv}``: every value tried with its VRA, the chosen value and
the paper's.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from gloro_repro.config import ConfigError, Experiment, Params, load_params
from gloro_repro.console import quiet_libraries
from gloro_repro.gloro.losses import LOSSES
from gloro_repro.hardware import Hardware
from gloro_repro.preemption import PREEMPTED, Preempted, stop_at_once

from . import claims
from .steps import CANDIDATES, ORDER, Budget, apply, choose, key_of, resolve

Objective = Callable[[Experiment, optuna.Trial, str], float]
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
HOPELESS_VRA = 0.005  # a trial still below this validation VRA halfway through is pruned


@dataclass
class StepResult:
    step: str
    tried: list[tuple[str, float | None, str]] = field(default_factory=list)  # candidate, VRA, state
    chosen: str | None = None
    note: str = ""


class TrialCapReached(Exception):
    """The budget's trial cap is spent; the search stops where it is."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a trial, whose candidate went back to the queue (named by the message)."""


class GreedySearch:
    """The greedy search over ``ORDER`` for one experiment; ``objective`` trains and returns VRA."""

    def __init__(self, experiment: Experiment, objective: Objective, storage, budget: Budget = Budget(),
                 tie: float = 0.01, name: str | None = None, poll_seconds: float = 1.0,
                 steps: tuple[str, ...] = ORDER):
        self.start = apply(experiment, "epochs", str(budget.epochs(experiment.training.epochs)))  # ramps rescaled too
        self.objective, self.storage, self.budget, self.tie = objective, storage, budget, tie
        self.name = name or experiment.name
        self.poll_seconds = poll_seconds
        self.steps = [step for step in ORDER if step in steps]  # always in the paper's order
        self.trials_run = 0
        self.say = print  # one line per candidate and per decision (tests pass a collector)

    def study(self, step: str) -> optuna.Study:
        # A rule that looks at the trial alone (not at which trials other workers happened to finish
        # first), so the outputs do not depend on how many workers ran the search.
        pruner = optuna.pruners.ThresholdPruner(lower=HOPELESS_VRA,
                                                n_warmup_steps=max(1, self.start.training.epochs // 2))
        return optuna.create_study(study_name=f"{self.name}/{step}", storage=self.storage, direction="maximize",
                                   pruner=pruner, load_if_exists=True)

    def run(self) -> list[StepResult]:
        current, results = self.start, []
        for step in self.steps:
            if step == "loss" and not LOSSES[current.training.loss].uses_lambda:
                results.append(StepResult(step, chosen=current.training.loss,
                                          note=f"not searched: loss {current.training.loss} takes no lambda"))
                continue
            try:
                result = self.search_step(step, current)
            except TrialCapReached:
                results.append(StepResult(step, note="not searched: trial cap reached"))
                break
            results.append(result)
            self.say(f"[{self.steps.index(step) + 1}/{len(self.steps)} {step}] chose {result.chosen}"
                     f"{': ' + result.note if result.note else ''}")
            if result.chosen is not None:
                current = apply(current, step, result.chosen)
        return results

    def search_step(self, step: str, current: Experiment) -> StepResult:
        study = self.study(step)
        result = StepResult(step)
        candidates = CANDIDATES[step](current, self.budget)
        self.evaluate_all(study, step, current, candidates, result, stop_when_worse=step == "epochs")
        if step == "loss":
            self.refine_lambda(study, current, result)
        if step == "epochs":
            self.fewer_epochs(study, current, result)
        scored = [(value, vra) for value, vra, _ in result.tried if vra is not None]
        result.chosen = choose(step, scored, self.tie) if scored else str(current.value(key_of(step)))
        if not scored:
            result.note = "every trial failed; kept the previous value"
        elif len(scored) > 1 and max(vra for _, vra in scored) - min(vra for _, vra in scored) <= self.tie:
            result.note = (f"every candidate scored within --tie {self.tie:g} of the others (VRA "
                           f"{max(vra for _, vra in scored):.3f} at best), so the tie rule and candidate order "
                           "decided; train longer (a larger --epoch-scale) for a choice the data make")
            print(f"warning: step {step}: {result.note}", file=sys.stderr)
        return result

    def evaluate_all(self, study, step, current, candidates, result, stop_when_worse: bool = False,
                     previous: float | None = None, margin: float = 0.0) -> None:
        """Evaluate candidates in order (in parallel with other workers), or, with ``stop_when_worse``,
        one after another until VRA falls to ``margin`` or more below the previous candidate's (or ``previous``)."""
        if stop_when_worse:  # sequential: each decision needs the previous result
            for value in candidates:
                vra = self.evaluate(study, step, current, value, result)
                if previous is not None and vra is not None and vra <= previous - margin:
                    return
                previous = vra if vra is not None else previous
            return
        start = os.getpid() % len(candidates) if candidates else 0  # workers begin at different candidates
        pending = list(candidates[start:]) + list(candidates[:start])
        while pending:
            waiting = []
            for value in pending:
                if self.evaluate(study, step, current, value, result, wait=False) is _BUSY:
                    waiting.append(value)
            if waiting and waiting == pending:
                time.sleep(self.poll_seconds)
            pending = waiting
        # list results in candidate order whichever worker finished first, so ties break the same way
        order = {resolve(value, current): i for i, value in enumerate(candidates)}
        result.tried.sort(key=lambda row: order.get(row[0], len(order)))

    def refine_lambda(self, study, current: Experiment, result: StepResult) -> None:
        """Refine the best whole lambda in steps of 0.1 while VRA improves, then try ramps up to it."""
        scores = lambda: {v: vra for v, vra, _ in result.tried if vra is not None}
        if not scores():
            return
        centre = max(scores(), key=scores().get)
        for direction in (-0.1, 0.1):
            best_value, lam = centre, float(centre)
            while (lam := round(lam + direction, 1)) > 0:
                vra = self.evaluate(study, "loss", current, str(lam), result)
                if vra is None or vra <= scores()[best_value]:
                    break
                best_value = str(lam)
        best = max(scores(), key=scores().get)
        for start in ("0.1", "0.0"):
            self.evaluate(study, "loss", current, f"{start},{best},{{epochs}}", result)

    def fewer_epochs(self, study, current: Experiment, result: StepResult) -> None:
        """From the best epoch count, try fewer in steps of 50 (scaled) until VRA decreases."""
        scored = {int(v): s for v, s, _ in result.tried if s is not None}
        if not scored:
            return
        best = max(scored, key=scored.get)
        fewer = [str(n) for n in dict.fromkeys(self.budget.epochs(k) for k in range(
            round(best / self.budget.epoch_scale) - 50, 0, -50)) if n < best and str(n) not in scored]
        self.evaluate_all(study, "epochs", current, fewer, result, stop_when_worse=True, previous=scored[best],
                          margin=self.tie)

    def evaluate(self, study: optuna.Study, step: str, current: Experiment, value: str, result: StepResult,
                 wait: bool = True):
        """VRA of ``current`` with ``step = value``: from a finished trial if there is one, else claim
        the candidate and train it here (``gloro_repro.sweeps.claims``).

        Returns None for a failed (crashed) trial, or ``_BUSY`` if another worker is running it
        and ``wait`` is false.
        """
        label = resolve(value, current)
        while True:
            claims.fail_dead_workers(self.storage, study)
            mine = claims.trials_of(study, label)
            done = [t for t in mine if t.state in DONE]
            if done:
                self._drop_duplicates(study, mine, done[0])
                return self._record(result, label, done[0])
            crashed = [t for t in mine if t.state == TrialState.FAIL and "error" in t.user_attrs]
            if crashed:
                return self._record(result, label, crashed[0])
            first = claims.first_live(mine)
            if first is None:
                self._check_cap()
                claims.enqueue(study, label, step)
                continue
            if first.state == TrialState.WAITING:
                self._check_cap()
                trial = claims.claim(self.storage, study, first)
                if trial is not None:
                    return self._run(study, step, current, value, label, trial, result)
                continue  # another worker claimed it first
            if not wait:
                return _BUSY
            time.sleep(self.poll_seconds)

    def _check_cap(self) -> None:
        if self.budget.max_trials is not None and self.trials_run >= self.budget.max_trials:
            raise TrialCapReached()

    def _run(self, study, step, current, value, label, trial: optuna.Trial, result: StepResult) -> float | None:
        self.trials_run += 1
        experiment = apply(current, step, value)
        started = time.perf_counter()
        try:
            with claims.heartbeats(self.storage, study, trial):
                vra = self.objective(experiment, trial, f"{step}={label}")
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except (KeyboardInterrupt, SystemExit, Preempted) as stop:
            claims.give_back(self.storage, study, trial)  # the candidate goes back to the queue
            if isinstance(stop, Preempted):
                raise Preempted(f"{stop} during {step}={label}: its candidate went back to the queue") from None
            raise Interrupted(f"{step}={label}") from None
        except claims.StorageUnavailable:
            raise  # the database, not the trial: the heartbeat check gives it back once the database returns
        except Exception as error:  # a crashing trial is recorded as failed; the search goes on
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            study.tell(trial, state=TrialState.FAIL)
            print(f"trial {step}={label} failed: {error}", file=sys.stderr)
        else:
            study.tell(trial, vra)
        finished = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        vra = self._record(result, label, finished)
        self.say(f"[{self.steps.index(step) + 1}/{len(self.steps)} {step}] {label}: "
                 f"{'-' if vra is None else f'{vra:.3f}'} validation VRA ({finished.state.name.lower()}, "
                 f"{time.perf_counter() - started:.0f} s; trial {finished.number}, {self.trials_run} run here)")
        return vra

    def _drop_duplicates(self, study, trials: list[optuna.trial.FrozenTrial], done: optuna.trial.FrozenTrial) -> None:
        """Fail the extra WAITING copies left when two workers enqueued one candidate at once."""
        for extra in (t for t in trials if t.state == TrialState.WAITING):
            trial = claims.claim(self.storage, study, extra)
            if trial is not None:
                trial.set_user_attr("duplicate_of", done.number)
                study.tell(trial, state=TrialState.FAIL)

    @staticmethod
    def _record(result: StepResult, label: str, trial: optuna.trial.FrozenTrial) -> float | None:
        if trial.state == optuna.trial.TrialState.PRUNED:  # its best validation VRA before it was stopped
            vra = max(trial.intermediate_values.values(), default=None)
        else:
            vra = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        if all(label != value for value, _, _ in result.tried):
            result.tried.append((label, vra, trial.state.name.lower()))
        return vra


_BUSY = object()


WORKERS = Path(tempfile.gettempdir()) / "gloro-repro-search-workers"  # this machine's live workers


def share_cores(threads: int | None = 1, registry: Path = WORKERS) -> int:
    """Set torch's threads: ``threads``, or (None) this worker's share of the machine's cores, the
    cores divided among the live search workers registered here (re-counted at every trial).
    Threads that oversubscribe the cores slow every worker down; a fixed count also keeps a trial's
    numbers the same whatever else runs (CPU kernels sum in an order that depends on threads)."""
    import torch

    if threads is None:
        registry.mkdir(parents=True, exist_ok=True)
        (registry / str(os.getpid())).touch()
        live = [p for p in registry.iterdir() if p.name.isdigit() and (int(p.name) == os.getpid()
                                                                        or claims.process_alive(int(p.name)))]
        for gone in set(registry.iterdir()) - set(live):
            gone.unlink(missing_ok=True)
        threads = max(1, (os.cpu_count() or 1) // len(live))
    torch.set_num_threads(threads)
    return threads


def training_objective(params: Params, data_dir: Path, work_dir: Path, group: str,
                       threads: int | None = 1) -> Objective:
    """Train with the pipeline's Lightning code (warm-up, then robust training) and return the best
    validation VRA; the Optuna pruning callback stops hopeless trials from per-epoch VRA."""
    from optuna_integration import PyTorchLightningPruningCallback

    from gloro_repro.training import train, warm_up

    hardware = Hardware.from_env().one_device()  # one device per worker: run a worker per GPU

    def objective(experiment: Experiment, trial: optuna.Trial, label: str) -> float:
        trial.set_user_attr("torch_threads", share_cores(threads))
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            start = warm_up(params, experiment, data_dir, Path(tmp) / "warmup.ckpt", group=group, hardware=hardware,
                            progress=False)
            pruning = PyTorchLightningPruningCallback(trial, monitor="val/vra")
            summary = train(params, experiment, data_dir, start, Path(tmp) / "train", callbacks=(pruning,),
                            group=group, job_type=label, hardware=hardware, progress=False)
        return summary["best_val"]

    return objective


def prepare_data(experiment: Experiment, params: Params) -> Path:
    """The experiment's dataset in the pipeline's shared ``data/<dataset>/``, prepared there if missing."""
    from gloro_repro.data.arrays import prepared_folder
    from gloro_repro.data.sources import load_source

    dataset = experiment.data.dataset
    data_dir = prepared_folder(dataset)
    if not (data_dir / f"{dataset}.json").exists():
        from_dir = params.sources.get(dataset)
        load_source(dataset, from_dir and Path(from_dir)).save(data_dir, dataset)
    return data_dir


SEARCH_VAL_FRACTION = 0.1  # the split trials are scored on when the experiment itself has none


def warn_if_edited(params_file: Path, name: str) -> None:
    """Say so when the experiment the search starts from differs from the committed params.yaml
    (e.g. left over from a ``dvc exp run -S``); silent outside git."""
    import subprocess

    import yaml

    shown = subprocess.run(["git", "show", f"HEAD:./{params_file}"], capture_output=True, text=True,
                           cwd=params_file.resolve().parent)
    if shown.returncode != 0:
        return
    committed = (yaml.safe_load(shown.stdout) or {}).get("experiments", {}).get(name)
    current = (yaml.safe_load(params_file.read_text()) or {}).get("experiments", {}).get(name)
    if committed != current:
        print(f"warning: {params_file}'s experiments.{name} differs from the committed one (git diff {params_file}); "
              "the search starts from the edited values", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gloro-search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True,
                        help="experiment name from params.yaml (its settings start the search)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: sqlite:///sweeps/<experiment>.db); postgresql://... for "
                             "workers on many machines, journal:<file> for a JournalStorage file")
    parser.add_argument("--epoch-scale", type=float, default=1.0,
                        help="multiply every epoch count by this (e.g. 0.05 for a quick search; default 1)")
    parser.add_argument("--max-trials", type=int, default=None, help="stop after this many new trials")
    parser.add_argument("--tie", type=float, default=0.01,
                        help="VRA differences up to this count as ties, settled by the paper's rules (default 0.01)")
    parser.add_argument("--steps", default=",".join(ORDER),
                        help="comma-separated subset of the steps, searched in the paper's order "
                             f"(default: all: {','.join(ORDER)})")
    parser.add_argument("--results", type=Path, default=None,
                        help="where search_<experiment>.{md,csv} go (default: results/ for a search of every step "
                             "without --max-trials; sweeps/work/<experiment>/ for a partial one, so a quick try "
                             "never replaces the committed report)")
    parser.add_argument("--threads", default="1",
                        help="torch threads per trial (default 1: run one worker per core, and every trial computes "
                             "the same numbers however many workers run); 'auto': the machine's cores divided among "
                             "the search workers running on it, re-counted every trial")
    parser.add_argument("--heartbeat", type=int, default=claims.HEARTBEAT_SECONDS,
                        help="RDB storages: seconds between a running trial's heartbeats "
                             f"(default {claims.HEARTBEAT_SECONDS})")
    parser.add_argument("--grace", type=int, default=claims.GRACE_SECONDS,
                        help="RDB storages: a trial whose heartbeat is older than this many seconds belongs to a dead "
                             f"worker and is given to another (default {claims.GRACE_SECONDS})")
    parser.add_argument("--storage-outage", type=float, default=claims.OUTAGE_SECONDS,
                        help="RDB storages: how long to wait for a lost database (a restart, a failover) before this "
                             f"worker gives up, in seconds (default {claims.OUTAGE_SECONDS}); it then exits "
                             f"{PREEMPTED}, and its trial goes to the other workers once the database is back")
    args = parser.parse_args(argv)
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker prints its own line per trial and step
    try:
        params = load_params(args.params)
        experiment = params.experiment(args.experiment)
        if not experiment.robust:
            raise ConfigError(f"--experiment {args.experiment}: a standard model has no GloRo "
                              "hyperparameters to search")
        if not experiment.data.val_fraction:  # trials are scored on validation VRA, never on the test set
            experiment = experiment.with_values(val_fraction=SEARCH_VAL_FRACTION)
            print(f"{args.experiment} trains without a validation split; its trials hold out "
                  f"{SEARCH_VAL_FRACTION:.0%} of the training data to be scored on")
        accelerator = Hardware.from_env().accelerator
        threads = None if args.threads == "auto" else int(args.threads) if args.threads.isdigit() else 0
        if threads == 0:
            raise ConfigError(f"--threads: got {args.threads!r}, expected an integer >= 1 or 'auto'")
        if not 0 < args.heartbeat < args.grace:
            raise ConfigError(f"--heartbeat {args.heartbeat} and --grace {args.grace}: expected 0 < heartbeat < grace")
        if not args.storage_outage > 0:
            raise ConfigError(f"--storage-outage: got {args.storage_outage}, expected a number of seconds > 0")
        if not args.epoch_scale > 0:
            raise ConfigError(f"--epoch-scale: got {args.epoch_scale}, expected a number > 0")
        steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
        unknown = [s for s in steps if s not in ORDER]
        if unknown or not steps:
            raise ConfigError(f"--steps: unknown parameter(s) {unknown}; expected some of {list(ORDER)}")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from .report import write_report

    work_dir = Path("sweeps/work") / experiment.name  # also holds the default SQLite file's folder
    work_dir.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///sweeps/{experiment.name}.db"
    try:
        storage = claims.open_storage(url, args.heartbeat, args.grace, args.storage_outage)
    except Exception as error:  # SQLAlchemy and the drivers raise many kinds for a bad URL or a down server
        print(f"error: --storage {url}: cannot open it ({type(error).__name__}: {str(error).splitlines()[0]})",
              file=sys.stderr)
        return 2
    data_dir = prepare_data(experiment, params)
    group = f"search-{experiment.name}"
    device = "cuda:0 (give each worker its own GPU with CUDA_VISIBLE_DEVICES)" if accelerator == "cuda" else "CPU"
    print(f"search worker {socket.gethostname()}:{os.getpid()}: {device}, torch threads "
          f"{share_cores(threads)} {'(re-counted every trial)' if threads is None else 'per trial'}")
    search = GreedySearch(experiment, training_objective(params, data_dir, work_dir, group, threads), storage,
                          Budget(args.epoch_scale, args.max_trials), args.tie, steps=steps)
    warn_if_edited(args.params, experiment.name)
    started = time.perf_counter()
    resume = f"finished trials are kept in {url}: run the same command to resume"
    try:
        with stop_at_once():
            results = search.run()
    except KeyboardInterrupt as stop:
        during = f" during {stop}: its candidate went back to the queue" if isinstance(stop, Interrupted) else ""
        print(f"interrupted{during}; {resume}", file=sys.stderr)
        return 130
    except Preempted as stop:
        print(f"preempted by {stop}; {resume}", file=sys.stderr)
        return PREEMPTED
    except claims.StorageUnavailable as error:
        print(f"error: --storage {url}: {error}. This worker stops; the trial it ran goes to the other workers "
              f"once the database is back (heartbeat grace {args.grace} s); {resume}", file=sys.stderr)
        return PREEMPTED
    partial = set(steps) != set(ORDER) or args.max_trials is not None
    out = args.results or (work_dir if partial else Path("results"))
    write_report(experiment, results, out, Budget(args.epoch_scale, args.max_trials),
                 time.perf_counter() - started, search.trials_run)
    print(f"search of {experiment.name}: {search.trials_run} new trial(s), "
          f"{time.perf_counter() - started:.0f} s -> {out}/search_{experiment.name}.md"
          + (" (a partial search: --results results to replace the committed report)"
             if partial and args.results is None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
