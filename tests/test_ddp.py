"""Lightning DDP on two CPU processes (gloo): the same training as one process, the same iterates
on every rank, validation over the whole split, and resume after kill -9; the hardware variables."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_epoch, cpu_env, net_state, run_ok, tiny_project, train_and_kill

from gloro_repro.hardware import Hardware, HardwareError, is_first_process

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "ddp_train.py"


def _largest_difference(a: dict, b: dict, iterates: bool = False) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a if k.endswith(".u") == iterates)


def test_two_processes_train_as_one(tmp_path, report):
    """Same global batch (256 = 2 x 128): one warm-up epoch (5 steps of cross-entropy, the last one
    split 88/87) and two robust epochs (10 more steps, power iteration in every one) match one
    process to rounding; the spread a second CPU thread alone causes is reported beside it."""
    runs = {n: tiny_project(tmp_path / f"p{n}", warmup=1, epochs=2, lam="0.1,2.0,2") for n in ("1", "2", "1x2")}
    for n, folder in runs.items():
        run_ok(folder, int(n[0]), str(DRIVER), threads=2 if n == "1x2" else 1)
    warm = {n: net_state(runs[n] / "models/tiny/warmup.ckpt") for n in runs}
    last = {n: net_state(runs[n] / "models/tiny/train/last.ckpt") for n in runs}
    scale = max(v.abs().max().item() for k, v in last["1"].items() if not k.endswith(".u"))
    warm_diff = _largest_difference(warm["1"], warm["2"])
    assert warm_diff <= 1e-6 * scale, f"after the warm-up, DDP weights differ from one process's by {warm_diff:.3g}"
    diff, floor = _largest_difference(last["1"], last["2"]), _largest_difference(last["1"], last["1x2"])
    assert diff <= 1e-5 * scale, f"DDP weights differ from one process's by {diff:.3g} (largest weight {scale:.3g})"
    iterates = [torch.load(runs["2"] / f"iterates.rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(iterates[0][k], iterates[1][k]) for k in iterates[0]), "iterates differ between ranks"
    metrics = {n: json.loads((runs[n] / "metrics.rank0.json").read_text()) for n in ("1", "2")}
    assert json.loads((runs["2"] / "metrics.rank1.json").read_text()) == metrics["2"], "ranks disagree on validation"
    for key in ("val/vra", "val/clean", "val/rejection"):
        assert [m[key] for m in metrics["2"]] == [m[key] for m in metrics["1"]], key
    summary = json.loads((runs["2"] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["per_device_batch"] == 128 and summary["float32"] == "ieee"
    report(f"DDP (2 CPU processes, gloo) vs 1 process, largest weight difference: {warm_diff:.2g} after the 5 "
           f"warm-up steps, {diff:.2g} after 10 robust steps (1 process on 2 threads vs 1 thread: {floor:.2g}; "
           f"largest weight {scale:.2g}); iterates: equal on both ranks, "
           f"{_largest_difference(last['1'], last['2'], iterates=True):.2g} from one process's; validation VRA per "
           f"epoch {[round(m['val/vra'], 4) for m in metrics['2']]} under both")


@pytest.mark.slow  # 30 s; tests/test_preemption.py resumes DDP training mid-epoch in the timed suite
def test_ddp_training_resumes_after_kill_9(tmp_path):
    folder = tiny_project(tmp_path / "p", epochs=40, lam="0.1,2.0,40")
    run_ok(folder, 2, "-m", "gloro_repro.stages.warmup", "tiny")
    killed_at = train_and_kill(folder, cpu_env(2))  # kill -9 every rank
    assert 1 <= killed_at < 39, f"the kill should land mid-training, got epoch {killed_at}"
    result = run_ok(folder, 2, "-m", "gloro_repro.stages.train", "tiny")
    assert "resuming tiny" in result.stdout
    summary = json.loads((folder / "results/training/tiny.json").read_text())
    assert summary["resumed"] and summary["processes"] == 2 and len(summary["epoch_seconds"]) == 40
    assert checkpoint_epoch(folder / "models/tiny/train/last.ckpt") == 39
    assert not (folder / "models/tiny/set_aside").exists()


def test_a_batch_the_processes_cannot_share_is_refused(tmp_path, monkeypatch, capsys):
    from gloro_repro.stages import train, warmup

    folder = tiny_project(tmp_path / "p", batch_size=255)
    monkeypatch.chdir(folder)
    for name, value in cpu_env(1).items():
        monkeypatch.setenv(name, value)
    assert warmup.main(["tiny"]) == 0
    monkeypatch.setenv("GLORO_DEVICES", "2")  # refused before any process is launched
    assert train.main(["tiny"]) == 2
    assert "error: batch_size 255 does not divide among 2 processes" in capsys.readouterr().err


def test_hardware_variables_are_validated():
    assert Hardware.from_env({}).devices == 1
    assert Hardware.from_env({"GLORO_ACCELERATOR": "cpu", "GLORO_DEVICES": "4", "GLORO_NUM_NODES": "2"}) \
        .trainer_kwargs() == {"accelerator": "cpu", "devices": 4, "strategy": "auto", "num_nodes": 2}
    for variables, message in (({"GLORO_DEVICES": "two"}, "GLORO_DEVICES='two': expected a whole number"),
                               ({"GLORO_DEVICES": "0"}, "GLORO_DEVICES='0'"),
                               ({"GLORO_ACCELERATOR": "tpu"}, "GLORO_ACCELERATOR='tpu': expected one of"),
                               ({"GLORO_STRATEGY": "fsdp"}, "GLORO_STRATEGY='fsdp'"),
                               ({"GLORO_NUM_NODES": "auto"}, "GLORO_NUM_NODES='auto'")):
        with pytest.raises(HardwareError, match=message):
            Hardware.from_env(variables)
    if not torch.cuda.is_available():
        with pytest.raises(HardwareError, match="no CUDA GPU"):
            Hardware.from_env({"GLORO_ACCELERATOR": "cuda"})
    assert is_first_process({}) and is_first_process({"LOCAL_RANK": "0", "NODE_RANK": "0"})
    assert not is_first_process({"LOCAL_RANK": "1"}) and not is_first_process({"LOCAL_RANK": "0", "NODE_RANK": "1"})


def test_two_nodes_train_as_one_process(tmp_path, report):
    """Two launches on this machine as nodes 0 and 1 (one process each, gloo, a localhost rendezvous,
    the variables torchrun sets on each node) train as one process does."""
    import socket

    runs = {n: tiny_project(tmp_path / n, warmup=1, epochs=2, lam="0.1,2.0,2") for n in ("one", "nodes")}
    run_ok(runs["one"], 1, str(DRIVER))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launches = [subprocess.Popen([sys.executable, str(DRIVER)], cwd=runs["nodes"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 env=cpu_env(1) | {"GLORO_NUM_NODES": "2", "MASTER_ADDR": "127.0.0.1",
                                                "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(node),
                                                "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": str(node),
                                                "NODE_RANK": str(node), "TORCHELASTIC_RUN_ID": "two-nodes"})
                for node in (0, 1)]
    outputs = [launch.communicate(timeout=300)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    one, nodes = (net_state(runs[n] / "models/tiny/train/last.ckpt") for n in ("one", "nodes"))
    scale = max(v.abs().max().item() for k, v in one.items() if not k.endswith(".u"))
    diff = _largest_difference(one, nodes)
    assert diff <= 1e-5 * scale, f"two nodes' weights differ from one process's by {diff:.3g}"
    summary = json.loads((runs["nodes"] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["per_device_batch"] == 128
    report(f"two nodes (launches with node ranks 0 and 1, one process each, gloo on localhost) vs one process: "
           f"largest weight difference {diff:.2g} after 15 steps (largest weight {scale:.2g})")
