"""The greedy search across worker processes on a real PostgreSQL server: Optuna's heartbeats give
a killed worker's candidate back, claims are atomic (no candidate trains twice), the winners do
not depend on who ran what, a finished search resumes without re-running anything, a real
search through Lightning, and optuna-dashboard on the same storage.

Needs ``GLORO_TEST_POSTGRES`` (``.ci/run`` starts a throwaway server: ``. .ci/postgres.sh && pg_start``)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter

import optuna
import pytest
import yaml
from conftest import PARAMS, ROOT, running_trial, with_project_path

from benchmarks.search_load import EXPECTED, controlled, search_trials, tally, worker_command
from gloro_repro.sweeps.claims import open_storage

URL = os.environ.get("GLORO_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="GLORO_TEST_POSTGRES is not set (. .ci/postgres.sh && pg_start)")


def fresh_database() -> str:
    """A new, empty database on the test server; its URL."""
    import psycopg

    name = f"gloro_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    base, _, query = URL.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


@pytest.fixture(scope="module")
def killed_search():
    """Three workers on one controlled search; the first is killed with SIGKILL in the middle of a trial."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    workers = [subprocess.Popen(worker_command(URL, name, 0.3), cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for _ in range(3)]
    victim = workers[0]
    killed = running_trial(URL, name, {victim.pid}, timeout=120)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    outputs = [json.loads(w.communicate(timeout=300)[0].strip().splitlines()[-1]) for w in workers[1:]]
    assert all(w.returncode == 0 for w in workers[1:])
    return name, killed, outputs


def test_a_killed_workers_candidate_is_retried_and_every_candidate_completes_once(killed_search, report):
    name, killed, outputs = killed_search
    trials = search_trials(URL, name)
    complete = Counter((study, t.user_attrs["candidate"]) for study, t in trials
                       if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete and set(complete.values()) == {1}, "every candidate completes exactly once"
    states = {t.number: t for study, t in trials if study == f"{name}/{killed.user_attrs['step']}"}
    assert states[killed.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in states.values()
               if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1 and retries[0].user_attrs["candidate"] == killed.user_attrs["candidate"]
    done = [t for t in states.values() if t.state == optuna.trial.TrialState.COMPLETE
            and t.user_attrs["candidate"] == killed.user_attrs["candidate"]]
    # A worker that found no live copy in the instant between the stale trial's failure and the
    # retry's enqueue enqueues its own; one copy trains, the other is failed as its duplicate.
    assert retries[0] in done or retries[0].user_attrs.get("duplicate_of") == done[0].number
    assert not [t for _, t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert [o["chosen"] for o in outputs] == [EXPECTED, EXPECTED], "every worker reports the same winners"
    report(f"PostgreSQL, 3 workers, one killed (-9) in trial {killed.number} "
           f"({killed.user_attrs['step']}={killed.user_attrs['candidate']}): retried as trial {retries[0].number} "
           f"({retries[0].state.name}), completed by trial {done[0].number}; "
           f"{len(complete)} candidates completed once each; states {dict(Counter(t.state.name for _, t in trials))}; "
           f"survivors ran {[o['trials_run'] for o in outputs]} trials")


def test_a_finished_search_resumes_without_running_anything(killed_search):
    from gloro_repro.config import load_params
    from gloro_repro.sweeps.greedy import GreedySearch
    from gloro_repro.sweeps.steps import Budget

    name, _, _ = killed_search
    calls = []
    objective = controlled(0.0)
    search = GreedySearch(load_params(PARAMS).experiment("digits_minmax"),
                          lambda e, trial, label: calls.append(label) or objective(e, trial, label),
                          open_storage(URL, 1, 3), Budget(0.01), tie=0.001, name=name, poll_seconds=0.05)
    assert [r.chosen for r in search.run()] == EXPECTED and calls == [] and search.trials_run == 0


def test_racing_workers_never_train_a_candidate_twice():
    """Four workers start together on an empty database (they also race to create Optuna's tables)."""
    url, name = fresh_database(), "race"
    workers = [subprocess.Popen(worker_command(url, name, 0.0), cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for _ in range(4)]
    outputs = [json.loads(w.communicate(timeout=300)[0].strip().splitlines()[-1]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    counts = tally(url, name)
    assert counts["duplicated"] == counts["lost"] == 0 and counts["completed"] == counts["candidates"]
    assert sum(o["trials_run"] for o in outputs) == counts["completed"], "no trial trained twice"
    assert all(o["chosen"] == EXPECTED for o in outputs)


def test_two_workers_run_a_real_search_through_lightning(tmp_path):
    params = yaml.safe_load((PARAMS).read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    url = fresh_database()
    env = with_project_path(dict(os.environ)) | {"WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "gloro_repro.sweeps.greedy", "--experiment", "digits_minmax",
               "--epoch-scale", "0.05",
               "--steps", "eps_schedule,init", "--storage", url, "--heartbeat", "1", "--grace", "5"]
    first = subprocess.run([sys.executable, "-m", "gloro_repro.stages.prepare", "digits"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-2000:] + outputs[1][-2000:]
    storage = open_storage(url, 1, 5)
    trials = [t for step in ("eps_schedule", "init")
              for t in optuna.load_study(study_name=f"digits_minmax/{step}", storage=storage).get_trials()]
    done = Counter(t.user_attrs["candidate"] for t in trials if t.state.name in ("COMPLETE", "PRUNED"))
    assert len(done) == 5 and set(done.values()) == {1}  # 3 eps schedules + 2 inits, each trained once
    assert {t.user_attrs["pid"] for t in trials if "pid" in t.user_attrs} == {w.pid for w in workers}
    assert {t.user_attrs["torch_threads"] for t in trials if "torch_threads" in t.user_attrs} == {1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_lists_the_studies_over_http(killed_search):
    name, _, _ = killed_search
    port = _free_port()
    dashboard = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "optuna-dashboard"), URL,
                                  "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.loads(response.read())
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "optuna-dashboard did not answer"
        names = {study["study_name"] for study in studies["study_summaries"]}
        assert f"{name}/eps_schedule" in names and f"{name}/batch_size" in names
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
