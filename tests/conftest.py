"""Shared fixtures: the digits data, the shared MNIST files, and a measurement report."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import yaml

if TYPE_CHECKING:  # imported where used: the machines that run only the CUDA tests have no Optuna
    import optuna

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _committed_params() -> Path:
    """params.yaml as committed (HEAD), in a temporary file: what a `dvc exp run -S` left in the
    working copy (another `run`, changed settings) changes no test. Outside git: the file itself."""
    try:
        text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ROOT / "params.yaml"
    path = Path(tempfile.mkdtemp(prefix="gloro-params-")) / "params.yaml"
    path.write_text(text)
    return path


PARAMS = _committed_params()

_REPORT: list[str] = []


@pytest.fixture
def report():
    """Record a measured figure; all are printed in the summary under 'gloro-repro measurements'."""
    return _REPORT.append


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("gloro-repro measurements")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits in [0, 1], a fixed split: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def mnist_dir():
    """The genuine MNIST test files in ../shared/data/mnist/; skip when absent."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"genuine MNIST files not found in {SHARED_MNIST}")
    return SHARED_MNIST


def checkpoint_epoch(checkpoint: Path) -> int:
    """The 0-based epoch a Lightning checkpoint was saved at; -1 while it is missing or half-written."""
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
    except Exception:
        return -1


def with_project_path(env: dict) -> dict:
    """``env`` with the project first on ``PYTHONPATH`` (what was there stays after it)."""
    return env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}


def train_and_kill(folder: Path, env: dict, experiment: str = "tiny") -> int:
    """Start ``gloro_repro.stages.train`` in ``folder``, kill -9 it (every process it started) once
    ``last.ckpt`` holds an epoch, and return that epoch."""
    log = folder / "train_and_kill.log"
    with open(log, "w") as handle:
        env = {k: v for k, v in env.items() if k != "WANDB_SERVICE"}  # its own W&B service, as a separate command
        process = subprocess.Popen([sys.executable, "-m", "gloro_repro.stages.train", experiment], cwd=folder,
                                   env=with_project_path(env), stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    last = folder / "models" / experiment / "train" / "last.ckpt"
    deadline = time.monotonic() + 240
    while checkpoint_epoch(last) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        raise AssertionError(f"training exited (code {process.returncode}) before it could be killed:\n"
                             + log.read_text()[-3000:])
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return checkpoint_epoch(last)


def tiny_params(epochs: int = 3) -> dict:
    """params.yaml shrunk: the digits MinMax default with a few epochs and a token evaluation budget."""
    params = yaml.safe_load(PARAMS.read_text())
    experiment = params["experiments"]["digits_minmax"]
    experiment = experiment | {
        "training": experiment["training"] | {"epochs": epochs, "loss": "trades", "lam": f"0.1,2.0,{epochs}",
                                          "batch_size": 256},
        "attack": {"steps": 5, "restarts": 1},
        "lower_bound": {"global_pairs": 4, "global_steps": 5, "local_centres": 4, "local_steps": 5, "lr": 1e-3}}
    return params | {"run": ["tiny"], "datasets": ["digits"],
                     "wandb": {"mode": "offline", "project": "test", "entity": None},
                     "experiments": params["experiments"] | {"tiny": experiment}}


def tiny_project(folder: Path, **training) -> Path:
    """A project folder with experiment ``tiny`` (digits, no augmentation) prepared for training.

    The validation fraction 0.11 leaves 1,199 training images: the last batch of every epoch is
    odd, so its two shares differ in size; the 148 validation images split 74/74 in one batch.
    """
    folder.mkdir()
    params = tiny_params()
    tiny = params["experiments"]["tiny"]
    tiny["data"] = tiny["data"] | {"val_fraction": 0.11}
    tiny["training"] = tiny["training"] | training
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    from gloro_repro.stages import dataset, prepare

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert prepare.main(["digits"]) == 0 and dataset.main(["tiny"]) == 0
    finally:
        os.chdir(cwd)
    return folder


def cpu_env(processes: int, threads: int = 1) -> dict:
    """The environment of a stage on ``processes`` CPU processes of ``threads`` threads, W&B off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLORO_")}
    return with_project_path(env) | {"WANDB_MODE": "disabled", "GLORO_ACCELERATOR": "cpu",
                  "GLORO_DEVICES": str(processes), "GLORO_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def run_ok(folder: Path, processes: int, *command: str,
           threads: int = 1) -> subprocess.CompletedProcess:
    """Run ``python *command`` in ``folder`` on ``processes`` CPU processes; assert it exits 0."""
    result = subprocess.run([sys.executable, *command], cwd=folder, env=cpu_env(processes, threads),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def net_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The network's float tensors in a checkpoint (weights and iterates)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.") and v.is_floating_point()}  # not digests


def running_trial(url: str, name: str, pids=None, timeout: float = 120) -> optuna.trial.FrozenTrial:
    """The first RUNNING trial of the search ``name`` (of a worker in ``pids``), waiting for one."""
    import optuna

    from benchmarks.search_load import search_trials

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [t for _, t in search_trials(url, name) if t.state == optuna.trial.TrialState.RUNNING
                   and (pids is None or t.user_attrs.get("pid") in pids)]
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"no trial of {name} was running within {timeout} s")


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    """Stages and search workers set torch's threads (and ``GLORO_THREADS``) for their process; every
    test starts from the suite's own."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("GLORO_THREADS", os.environ.get("GLORO_THREADS", "auto"))
    yield
    torch.set_num_threads(threads)
