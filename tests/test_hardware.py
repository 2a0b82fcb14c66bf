"""GLORO_THREADS: a count, or the idle cores shared among the job's processes; recorded by every stage."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gloro_repro import hardware
from gloro_repro.hardware import Hardware, HardwareError, busy_cores, torch_threads, use_threads


@pytest.mark.parametrize("bad", ["0", "many", "-2", "1.5"])
def test_a_bad_thread_count_is_refused_with_its_name(bad):
    with pytest.raises(HardwareError, match=rf"GLORO_THREADS={bad!r}: expected a whole number >= 1 or auto"):
        Hardware.from_env({"GLORO_THREADS": bad})


def test_a_given_count_is_used_as_it_is():
    assert torch_threads(Hardware.from_env({"GLORO_THREADS": "3"})) == 3


@pytest.mark.parametrize("busy,devices,env,expected", [
    (0.0, 1, {}, 8), (3.2, 1, {}, 5), (7.9, 1, {}, 1), (0.0, 4, {}, 2), (0.0, 3, {}, 2),
    (2.0, 2, {}, 3), (0.0, 1, {"LOCAL_WORLD_SIZE": "8"}, 1),  # torchrun's processes on this node
])
def test_auto_shares_the_idle_cores_among_the_jobs_processes(busy, devices, env, expected, monkeypatch):
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(hardware, "busy_cores", lambda: busy)
    assert torch_threads(Hardware(devices=devices), env) == expected


def test_busy_cores_sees_a_process_spinning_beside_it():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(0.5) >= 0.7
    finally:
        spinner.kill()


def test_use_threads_sets_torch_and_hands_the_count_to_child_processes():
    environ = {}
    threads = use_threads(Hardware(threads="auto"), environ)
    assert threads >= 1 and torch.get_num_threads() == threads and environ == {"GLORO_THREADS": str(threads)}
    assert use_threads(Hardware.from_env({"GLORO_THREADS": "1"}), environ) == 1 == torch.get_num_threads()
