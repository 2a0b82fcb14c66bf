"""Search workers and a database that goes away, on a PostgreSQL server of the test's own: a
restart in the middle of a search is ridden out (every candidate completes once, none is left
RUNNING), and an outage longer than the worker's bound ends it with one line and exit 75, its trial
given to the others once the database is back. Needs PostgreSQL's server binaries (``.ci/run``
installs them)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import PARAMS, ROOT, running_trial, with_project_path

from benchmarks.search_load import EXPECTED, search_trials, tally, worker_command
from gloro_repro.preemption import PREEMPTED
from gloro_repro.sweeps import claims

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
pytestmark = pytest.mark.skipif(not BINARIES or not os.environ.get("GLORO_TEST_POSTGRES"),
                                reason="PostgreSQL's server binaries and GLORO_TEST_POSTGRES (. .ci/postgres.sh && "
                                       "pg_start) are needed")


class Server:
    """A throwaway PostgreSQL server on a unix socket in its own folder, to restart and stop at will."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="gloro-pg-"))
        if os.getuid() == 0:  # the server refuses to run as root
            shutil.chown(self.folder, "postgres")
        self.url = f"postgresql://postgres@/postgres?host={self.folder}"
        self._ctl("initdb", "-D", "data", "-A", "trust", "-U", "postgres")
        self.start()

    def _ctl(self, program: str, *args: str) -> None:
        command = [f"{BINARIES[-1]}/{program}", *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        with open(self.folder / "ctl.log", "a") as log:  # not a pipe: the server it starts would hold it open
            subprocess.run(command, cwd=self.folder, check=True, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self._ctl("pg_ctl", "-D", "data", "-l", "server.log", "-w", "-o",
                  f"-k {self.folder} -c listen_addresses='' -c max_connections=100", "start")

    def restart(self) -> None:
        self._ctl("pg_ctl", "-D", "data", "-l", "server.log", "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self._ctl("pg_ctl", "-D", "data", "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def server():
    server = Server()
    yield server
    server.remove()


def messages(stderr: str) -> str:
    """A worker's stderr without traceback frames: every message of an exception chain, in order."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("    "))[-6000:]


def wait_for_completed(url: str, name: str, count: int) -> None:
    while tally(url, name)["completed"] < count:
        time.sleep(0.1)


def test_workers_ride_out_a_database_restart(server, report):
    """The issue's scenario with the controlled objective: two workers, the server restarted with
    ``pg_ctl -m fast restart`` while a trial runs (after a few have completed), then, later in the
    search, down for 4 s (stopped, then started: a slow restart or a failover)."""
    name = "restart"
    workers = [subprocess.Popen(worker_command(server.url, name, 0.5, heartbeat=1, grace=3, outage=60), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    wait_for_completed(server.url, name, 4)
    in_flight = running_trial(server.url, name)
    started = time.monotonic()
    server.restart()
    restart_seconds = time.monotonic() - started
    wait_for_completed(server.url, name, 12)
    in_flight_2 = running_trial(server.url, name)
    server.stop()
    time.sleep(4)
    server.start()
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n=====\n".join(messages(err) for _, err in outputs)
    assert "Traceback" not in outputs[0][1] + outputs[1][1]
    assert any("storage: lost the database" in err and "storage: the database is back" in err
               for _, err in outputs), outputs[0][1][-2000:] + outputs[1][1][-2000:]
    counts = tally(server.url, name)
    assert counts["duplicated"] == counts["lost"] == 0 and counts["completed"] == counts["candidates"]
    trials = search_trials(server.url, name)
    assert not [t for _, t in trials if t.state == optuna.trial.TrialState.RUNNING]
    for trial in (in_flight, in_flight_2):
        step = [t for s, t in trials if s.endswith(f"/{trial.user_attrs['step']}")]
        assert [t.state for t in step if t.user_attrs["candidate"] == trial.user_attrs["candidate"]].count(
            optuna.trial.TrialState.COMPLETE) == 1
    assert all(json.loads(out.strip().splitlines()[-1])["chosen"] == EXPECTED for out, _ in outputs)
    label = lambda t: f"trial {t.number} ({t.user_attrs['step']}={t.user_attrs['candidate']})"
    report(f"PostgreSQL restarted (pg_ctl -m fast restart, {restart_seconds:.1f} s) during {label(in_flight)}, "
           f"then down 4 s during {label(in_flight_2)}, under 2 workers: both exited 0, {counts['completed']} "
           f"candidates completed once each, none RUNNING; states {counts['states']}")


def test_an_outage_longer_than_the_bound_ends_the_worker_with_one_line(server, tmp_path, report):
    """A real search worker (Lightning training) with ``--storage-outage 3``: the server stopped in
    the middle of a trial; once it is back, the heartbeat check gives that trial to the others."""
    params = yaml.safe_load(PARAMS.read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = with_project_path(dict(os.environ)) | {"WANDB_MODE": "disabled"}
    worker = subprocess.Popen([sys.executable, "-m", "gloro_repro.sweeps.greedy", "--experiment", "digits_minmax",
                               "--epoch-scale", "0.3", "--steps", "eps_schedule", "--storage", server.url,
                               "--heartbeat", "1", "--grace", "3", "--storage-outage", "3"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial = running_trial(server.url, "digits_minmax", {worker.pid}, timeout=240)
    server.stop()
    stopped = time.monotonic()
    out, err = worker.communicate(timeout=120)
    seconds = time.monotonic() - stopped
    assert worker.returncode == PREEMPTED, out[-2000:] + err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the database was unreachable for 3 s" in errors[0], err[-3000:]
    assert seconds < 30, f"the worker took {seconds:.0f} s to give up on a 3 s bound"
    server.start()
    storage = claims.open_storage(server.url, 1, 3)
    study = optuna.load_study(study_name="digits_minmax/eps_schedule", storage=storage)
    assert study.trials[trial.number].state == optuna.trial.TrialState.RUNNING  # the worker could not say
    time.sleep(3.5)
    claims.fail_dead_workers(storage, study)  # what any other worker does before it picks a candidate
    states = Counter((t.user_attrs["candidate"], t.state.name) for t in study.get_trials())
    assert study.get_trials()[trial.number].state == optuna.trial.TrialState.FAIL
    assert states[(trial.user_attrs["candidate"], "WAITING")] == 1, states
    report(f"PostgreSQL stopped during trial {trial.number} of a worker with --storage-outage 3: it exited "
           f"{worker.returncode} {seconds:.1f} s later with one line: {errors[0][:160]}...; once the server was "
           "back, the heartbeat check failed that trial and enqueued its candidate again")
