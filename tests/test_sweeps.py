"""The greedy search: order of steps, carry-over of winners, tie rules, resume, shared workers,
failed trials, and a miniature real search through the Lightning training code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import PARAMS

from gloro_repro.config import load_params
from gloro_repro.sweeps import claims, greedy
from gloro_repro.sweeps.claims import open_storage
from gloro_repro.sweeps.greedy import GreedySearch
from gloro_repro.sweeps.steps import ORDER, Budget, choose

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def digits_minmax():
    return load_params(PARAMS).experiment("digits_minmax")


def preferring(seen: list | None = None, crash_on: str | None = None, stop_after: int | None = None):
    """A controlled objective: VRA peaks at eps 'log', lambda 3.2, 300 epochs (scaled 3), lr 5e-07,
    warm-up 0, orthogonal, 5 power iterations, batch 256."""
    calls = []

    def objective(e, trial, label):
        calls.append(label)
        if seen is not None:
            seen.append((label, e))
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt
        if label == crash_on:
            raise RuntimeError("diverged")
        lam = float(e.value("lam")) if "," not in e.value("lam") else 0.0
        return (0.5 + 0.1 * (e.value("eps_schedule") == "log") - 0.2 * abs(lam - 3.2)
                - 0.05 * abs(e.value("epochs") - 3) + 0.05 * (e.value("lr_decay") == "5e-07")
                + 0.05 * (e.value("warmup") == 0) + 0.05 * (e.value("init") == "orthogonal")
                + 0.05 * (e.value("power_iterations") == 5) + 0.05 * (e.value("batch_size") == 256))

    objective.calls = calls
    return objective


def test_steps_run_in_the_papers_order_and_winners_carry_over():
    seen = []
    search = GreedySearch(digits_minmax(), preferring(seen), optuna.storages.InMemoryStorage(), Budget(0.01))
    results = search.run()
    assert [r.step for r in results] == list(ORDER)
    chosen = {r.step: r.chosen for r in results}
    assert chosen == {"eps_schedule": "log", "loss": "3.2", "epochs": "3", "lr_decay": "5e-07", "warmup": "0",
                      "init": "orthogonal", "power_iterations": "5", "batch_size": "256"}
    lambdas = [value for value, _, _ in results[1].tried]
    assert lambdas[:10] == [f"{float(n)}" for n in range(1, 11)]  # whole numbers first
    # refined by 0.1, then ramps (over the 1 scaled epoch)
    assert {"3.1", "3.2", "3.3"} <= set(lambdas) and "0.1,3.2,1" in lambdas
    # every trial after a step uses that step's winner
    assert len([e for _, e in seen if e.value("eps_schedule") != "log"]) == 2  # only the other two eps candidates
    first_init = next(i for i, (label, _) in enumerate(seen) if label.startswith("init="))
    for _, e in seen[first_init:]:
        chosen = tuple(e.value(key) for key in ("eps_schedule", "lam", "epochs", "lr_decay", "warmup"))
        assert chosen == ("log", "3.2", 3, "5e-07", 0)


def test_epochs_go_up_by_100_until_vra_stops_increasing_then_down_by_50():
    search = GreedySearch(digits_minmax(), preferring(), optuna.storages.InMemoryStorage(), Budget(0.01))
    results = {r.step: r for r in search.run()}
    tried = [value for value, _, _ in results["epochs"].tried]
    assert tried[:4] == ["1", "2", "3", "4"]  # 100..400 epochs scaled by 0.01; 400 is worse than 300
    assert "10" not in tried


def test_tie_rules():
    assert choose("eps_schedule", [("log", 0.8), ("single", 0.8), ("0.0,0.3,30", 0.8)], tie=0.01) == "single"
    assert choose("eps_schedule", [("log", 0.8), ("0.0,0.3,30", 0.795)], tie=0.01) == "0.0,0.3,30"
    assert choose("eps_schedule", [("log", 0.9), ("single", 0.8)], tie=0.01) == "log"
    assert choose("init", [("orthogonal", 0.7), ("default", 0.695)], tie=0.01) == "default"
    assert choose("power_iterations", [("10", 0.7), ("5", 0.7), ("1", 0.69), ("2", 0.5)], tie=0.01) == "1"
    flat = GreedySearch(digits_minmax(), lambda e, t, label: 0.5, optuna.storages.InMemoryStorage(), Budget(0.01))
    chosen = {r.step: r.chosen for r in flat.run()}
    assert chosen["eps_schedule"] == "single" and chosen["init"] == "default" and chosen["power_iterations"] == "1"


def test_a_crashing_trial_is_recorded_failed_and_the_search_goes_on():
    objective = preferring(crash_on="eps_schedule=log")
    results = GreedySearch(digits_minmax(), objective, optuna.storages.InMemoryStorage(), Budget(0.01)).run()
    eps = results[0]
    assert ("log", None, "fail") in eps.tried and eps.chosen != "log"
    assert [r.step for r in results] == list(ORDER)


def test_an_interrupted_search_resumes_without_redoing_finished_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = preferring(stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        GreedySearch(digits_minmax(), first, open_storage(url), Budget(0.01)).run()
    second = preferring()
    results = GreedySearch(digits_minmax(), second, open_storage(url), Budget(0.01)).run()
    # the 7 finished trials are reused; the interrupted 8th (left RUNNING by a dead run) is run again
    assert second.calls[0] == first.calls[7]
    assert not set(second.calls) & set(first.calls[:7])
    reference = preferring()
    GreedySearch(digits_minmax(), reference, optuna.storages.InMemoryStorage(), Budget(0.01)).run()
    assert len(second.calls) + 7 == len(reference.calls)
    assert [r.chosen for r in results][-1] == "256"


WORKER = """
import sys, time
sys.path.insert(0, {root!r})
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from gloro_repro.config import load_params
from gloro_repro.sweeps.claims import open_storage
from gloro_repro.sweeps.greedy import GreedySearch
from gloro_repro.sweeps.steps import Budget
experiment = load_params({params!r}).experiment("digits_minmax")
def objective(e, trial, label):
    time.sleep(0.2)
    return 0.5 + 0.1 * (e.value("eps_schedule") == "log") + 0.05 * (e.value("init") == "orthogonal")
search = GreedySearch(experiment, objective, open_storage({url!r}), Budget(0.01), poll_seconds=0.1)
print([r.chosen for r in search.run()], search.trials_run)
"""


def test_two_workers_share_one_storage(tmp_path):
    url = f"journal:{tmp_path / 'search.log'}"
    script = WORKER.format(root=str(ROOT), params=str(PARAMS), url=url)
    workers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0].strip().splitlines()[-1] for w in workers]  # after the trial lines
    assert all(w.returncode == 0 for w in workers)
    chosen = [eval(o.rsplit("] ", 1)[0] + "]") for o in outputs]
    runs = [int(o.rsplit("] ", 1)[1]) for o in outputs]
    assert chosen[0] == chosen[1]
    storage = open_storage(url)
    complete = sum(len([t for t in s.get_trials() if t.state.name == "COMPLETE"])
                   for s in (optuna.load_study(study_name=n, storage=storage)
                             for n in optuna.get_all_study_names(storage)))
    assert sum(runs) <= complete + 2, "the workers split the trials rather than each running all of them"
    assert min(runs) > 0, f"both workers ran trials: {runs}"


def test_bad_arguments_give_clear_errors(capsys):
    assert greedy.main(["--experiment", "digits_maxmin"]) == 2
    assert "unknown experiment 'digits_maxmin'" in capsys.readouterr().err
    assert greedy.main(["--experiment", "digits_standard"]) == 2
    assert "standard model" in capsys.readouterr().err
    assert greedy.main(["--experiment", "digits_minmax", "--steps", "eps_schedule,learning_rate"]) == 2
    assert "--steps: unknown parameter(s) ['learning_rate']" in capsys.readouterr().err


def test_a_subset_of_steps_keeps_the_papers_order():
    search = GreedySearch(digits_minmax(), preferring(), optuna.storages.InMemoryStorage(), Budget(0.01),
                          steps=("init", "eps_schedule"))
    assert [r.step for r in search.run()] == ["eps_schedule", "init"]


def test_miniature_real_search_on_digits(tmp_path, monkeypatch):
    """Real trials through the pipeline's Lightning training, pruning callback and W&B (offline)."""
    params = yaml.safe_load((PARAMS).read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "results").mkdir()
    (tmp_path / "results/search_digits_minmax.md").write_text("the committed report")
    assert greedy.main(["--experiment", "digits_minmax", "--epoch-scale", "0.05", "--max-trials", "4"]) == 0
    assert (tmp_path / "results/search_digits_minmax.md").read_text() == "the committed report", \
        "a partial search (a trial cap) leaves the committed report alone"
    table = (tmp_path / "sweeps/work/digits_minmax/search_digits_minmax.md").read_text()
    assert "| eps_schedule " in table and "trial cap reached" in table
    (loss_row,) = [row for row in table.splitlines() if row.startswith("| loss ")]
    assert "0.1,2.0,60" in loss_row, "the loss step's params.yaml column is TRADES's lambda"
    storage = open_storage(f"sqlite:///{tmp_path / 'sweeps/digits_minmax.db'}")
    trials = optuna.load_study(study_name="digits_minmax/eps_schedule", storage=storage).get_trials()
    assert len(trials) == 3 and all(0 <= t.value <= 1 for t in trials if t.value is not None)
    assert all(len(t.intermediate_values) >= 1 for t in trials), "per-epoch VRA reported for pruning"
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) >= 4


def test_a_step_whose_trials_all_fail_keeps_the_current_value():
    def crashing(e, trial, label):
        raise RuntimeError("diverged")

    search = GreedySearch(digits_minmax(), crashing, optuna.storages.InMemoryStorage(), Budget(0.01),
                          steps=("init", "power_iterations"))
    results = search.run()
    assert [(r.chosen, r.note) for r in results] == [("orthogonal", "every trial failed; kept the previous value"),
                                                    ("5", "every trial failed; kept the previous value")]


def test_workers_on_one_machine_share_its_cores(tmp_path):
    import os

    import torch

    cores = os.cpu_count() or 1
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / str(other.pid)).touch()
        (tmp_path / "999999999").touch()  # a worker that died: not counted, and forgotten
        assert greedy.share_cores(None, tmp_path) == max(1, cores // 2) == torch.get_num_threads()
        assert not (tmp_path / "999999999").exists()
    finally:
        other.kill()
        other.wait()
    assert greedy.share_cores(None, tmp_path) == cores
    assert greedy.share_cores(1, tmp_path) == 1 == torch.get_num_threads()


def test_bad_threads_and_heartbeats_are_refused(capsys):
    assert greedy.main(["--experiment", "digits_minmax", "--threads", "many"]) == 2
    assert "--threads: got 'many', expected an integer >= 1 or 'auto'" in capsys.readouterr().err
    assert greedy.main(["--experiment", "digits_minmax", "--heartbeat", "60", "--grace", "10"]) == 2
    assert "expected 0 < heartbeat < grace" in capsys.readouterr().err


def test_each_candidate_and_decision_is_one_line_and_an_all_tied_step_is_flagged(capsys):
    lines = []
    flat = lambda e, trial, label: 0.0  # a tiny --epoch-scale: every trial scores 0
    search = GreedySearch(digits_minmax(), flat, optuna.storages.InMemoryStorage(), Budget(0.01),
                          steps=("eps_schedule", "init"))
    search.say = lines.append
    results = search.run()
    tried = sorted(line.split("] ")[1].split(":")[0] for line in lines[:3])  # workers start at different ones
    assert tried == ["0.0,0.3,1", "log", "single"] and all(": 0.000 validation VRA (complete" in line
                                                         for line in lines[:3])
    assert lines[3] == "[1/2 eps_schedule] chose single: " + results[0].note
    assert all("within --tie 0.01" in r.note for r in results)  # decided by the tie rule, and said so
    assert capsys.readouterr().err.count("warning: step") == 2


def test_the_patient_storage_pickles_like_optunas(tmp_path):
    import pickle

    storage = open_storage(f"sqlite:///{tmp_path / 'search.db'}", 1, 3, outage=7)
    optuna.create_study(study_name="s", storage=storage)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.outage == 7 and copy.get_study_id_from_name("s") == storage.get_study_id_from_name("s")


def test_only_a_lost_connection_is_waited_out():
    """A restart, a refused connection or a dropped one is retried; a serialization failure or a
    deadlock (both OperationalErrors to SQLAlchemy) and bad data are not."""
    import psycopg
    from sqlalchemy import exc

    def wrapped(orig, kind=exc.OperationalError, invalidated=False):
        error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
        error.__cause__ = kind("SELECT 1", {}, orig, connection_invalidated=invalidated)
        return error

    assert claims.connection_lost(wrapped(psycopg.OperationalError("connection is bad: No such file")))
    assert claims.connection_lost(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert claims.connection_lost(wrapped(psycopg.errors.ConnectionFailure("")))
    assert claims.connection_lost(wrapped(psycopg.DatabaseError("server closed"), exc.DBAPIError, invalidated=True))
    assert not claims.connection_lost(wrapped(psycopg.errors.SerializationFailure("could not serialize")))
    assert not claims.connection_lost(wrapped(psycopg.errors.DeadlockDetected("deadlock")))
    assert not claims.connection_lost(wrapped(psycopg.errors.StringDataRightTruncation("too long"), exc.DataError))
    assert not claims.connection_lost(ValueError("not a database error"))

    def after_a_failed_query(first):  # Optuna's _get_trials re-queries in the spoilt transaction
        try:
            try:
                raise first.__cause__
            except exc.DBAPIError:
                raise exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back.")
        except exc.PendingRollbackError as pending:
            error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
            error.__cause__ = pending
            return error

    dropped = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    assert claims.connection_lost(after_a_failed_query(wrapped(dropped, invalidated=True)))
    assert not claims.connection_lost(after_a_failed_query(wrapped(psycopg.errors.DeadlockDetected("deadlock"))))
