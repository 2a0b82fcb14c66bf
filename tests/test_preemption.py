"""Preemption as cluster schedulers do it: SIGTERM, or SLURM's early SIGUSR1, to the job's main
process. Training (one process and DDP, where only rank 0 is signalled) stops at the end of the step in progress with
``last.ckpt`` saved there and exits 75; the same command resumes and ends with the weights of an
uninterrupted run. A search worker gives its candidate back at once and exits 75."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import (
    PARAMS,
    checkpoint_epoch,
    cpu_env,
    net_state,
    run_ok,
    running_trial,
    tiny_project,
    with_project_path,
)

from gloro_repro.preemption import PREEMPTED
from gloro_repro.sweeps.claims import open_storage

EPOCHS, BATCH = 4, 32  # 38 steps per epoch: a signal lands mid-epoch
LAST = Path("models/tiny/train/last.ckpt")


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory) -> Path:
    """A project ready for robust training."""
    start = tiny_project(tmp_path_factory.mktemp("preemption") / "start", epochs=EPOCHS, batch_size=BATCH,
                         lam=f"0.1,2.0,{EPOCHS}")
    run_ok(start, 1, "-m", "gloro_repro.stages.warmup", "tiny")
    return start


def trained(start: Path, folder: Path, processes: int) -> Path:
    """A copy of the project ``start`` trained without interruption on ``processes`` processes."""
    shutil.copytree(start, folder)
    run_ok(folder, processes, "-m", "gloro_repro.stages.train", "tiny")
    return folder


def preempt(folder: Path, processes: int, signum: signal.Signals) -> tuple[subprocess.CompletedProcess, float]:
    """Train in ``folder``, send ``signum`` to the main process during the second epoch, and return the
    finished process and the seconds from the signal to its exit."""
    logs = [open(folder / name, "w+") for name in ("preempted.out", "preempted.err")]  # a full pipe would block it
    process = subprocess.Popen([sys.executable, "-m", "gloro_repro.stages.train", "tiny"], cwd=folder,
                               env=cpu_env(processes), stdout=logs[0], stderr=logs[1], text=True)
    deadline = time.monotonic() + 240
    while checkpoint_epoch(folder / LAST) < 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # into the second epoch (one takes about 0.3 s)
    sent = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=120)
    seconds = time.monotonic() - sent
    out, err = (log.seek(0) or log.read() for log in logs)
    for log in logs:
        log.close()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), seconds


def check_preempted_and_resumed(folder: Path, uninterrupted: Path, processes: int, signum: signal.Signals,
                                report) -> None:
    """Preempt the training in ``folder``, resume it, and compare its weights with ``uninterrupted``'s."""
    stopped, seconds = preempt(folder, processes, signum)
    assert stopped.returncode == PREEMPTED, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    lines = [x for x in stopped.stderr.splitlines() if x.startswith("preempted by")]
    assert len(lines) == processes, stopped.stderr[-3000:]  # every DDP rank stops after the same step
    (line,) = [x for x in lines if x.startswith(f"preempted by {signum.name}: saved {LAST} at epoch ")]
    saved = torch.load(folder / LAST, map_location="cpu", weights_only=False)
    steps_per_epoch = -(-1199 // BATCH)
    step = saved["global_step"]
    assert f", step {step}," in line and steps_per_epoch < step < EPOCHS * steps_per_epoch, line
    resumed = run_ok(folder, processes, "-m", "gloro_repro.stages.train", "tiny")
    assert "resuming tiny" in resumed.stdout
    summary = json.loads((folder / "results/training/tiny.json").read_text())
    assert summary["resumed"] and summary["processes"] == processes and checkpoint_epoch(folder / LAST) == EPOCHS - 1
    mine, reference = net_state(folder / LAST), net_state(uninterrupted / LAST)
    diff = max((mine[k] - reference[k]).abs().max().item() for k in reference)
    assert diff == 0, f"largest weight difference from the uninterrupted run {diff:.3g}: not the same steps"
    report(f"{signum.name} to training on {processes} process(es) at step {step} (epoch {step // steps_per_epoch + 1},"
           f" batch {step % steps_per_epoch} of {steps_per_epoch}): exit {stopped.returncode} {seconds:.2f} s after "
           f"the signal, last.ckpt at that step; resumed to {EPOCHS} epochs, largest weight difference from an "
           f"uninterrupted run {diff:.2g}")


def test_preempted_training_resumes_from_the_step_it_stopped_at(warmed_up, tmp_path, report):
    folder = tmp_path / "p"
    shutil.copytree(warmed_up, folder)
    check_preempted_and_resumed(folder, trained(warmed_up, tmp_path / "whole", 1), 1, signal.SIGTERM, report)


def test_preempted_ddp_training_resumes_from_the_step_it_stopped_at(warmed_up, tmp_path, report):
    """SLURM's early SIGUSR1 to rank 0 of two: both ranks stop after the same step."""
    folder = tmp_path / "p"
    shutil.copytree(warmed_up, folder)
    check_preempted_and_resumed(folder, trained(warmed_up, tmp_path / "whole", 2), 2, signal.SIGUSR1, report)


def test_a_preempted_search_worker_gives_its_candidate_back_at_once(tmp_path, report):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load(PARAMS.read_text())))
    url = f"sqlite:///{tmp_path / 'search.db'}"
    worker = subprocess.Popen([sys.executable, "-m", "gloro_repro.sweeps.greedy", "--experiment", "digits_minmax",
                               "--epoch-scale", "0.3", "--steps", "eps_schedule", "--storage", url],
                              cwd=tmp_path, env=with_project_path(cpu_env(1)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    trial = running_trial(url, "digits_minmax", timeout=240)
    time.sleep(1.0)  # into its training
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    seconds = time.monotonic() - sent
    assert worker.returncode == PREEMPTED, out[-2000:] + err[-3000:]
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("preempted")]
    candidate = trial.user_attrs["candidate"]
    assert f"SIGTERM during eps_schedule={candidate}" in line and "its candidate went back to the queue" in line
    trials = optuna.load_study(study_name="digits_minmax/eps_schedule", storage=open_storage(url)).get_trials()
    assert trials[trial.number].state == optuna.trial.TrialState.FAIL
    assert [t.state for t in trials if t.user_attrs["candidate"] == candidate][-1] == optuna.trial.TrialState.WAITING
    assert seconds < 10, f"{seconds:.1f} s from SIGTERM to exit"
    report(f"SIGTERM to a search worker in trial {trial.number} (eps_schedule={candidate}): exit "
           f"{worker.returncode} {seconds:.2f} s later, the trial FAIL and its candidate WAITING again for the others")
