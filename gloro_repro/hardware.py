"""Which hardware runs the stages: read from environment variables, never from params.yaml.

Hardware is not a hyperparameter: the accelerator and the number of devices, processes and nodes
change how fast a run goes, not what it means, so they stay out of params.yaml (and out of DVC's
view) and one checkout runs unchanged on a laptop, one GPU or a node of eight.

    GLORO_ACCELERATOR  auto (default: cuda when a CUDA GPU is visible, else cpu) | cpu | cuda
    GLORO_DEVICES      devices per node for the training stages: a count (default 1) or auto (every visible GPU)
    GLORO_STRATEGY     auto (default: ddp when several devices) | ddp
    GLORO_NUM_NODES    nodes for the training stages (default 1); see docs/hardware.md for launching several
    GLORO_CUDA_GRAPHS  1 (default): on one CUDA device, replay each training step from a CUDA graph | 0: eager
    GLORO_THREADS      torch threads per process: auto (default: the cores idle when a stage starts, shared
                       among the job's processes on this machine) | a count (the same numbers on any machine)

Only warm-up and training use several devices (Lightning DDP, global batch = ``batch_size``);
every other stage runs in one process on the first device.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from gloro_repro.config import ConfigError

ACCELERATORS = ("auto", "cpu", "cuda")
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")  # set by DDP launchers
STRATEGIES = ("auto", "ddp")


class HardwareError(ConfigError):
    """A bad ``GLORO_*`` hardware variable, or hardware that is not there."""


def _count(environ: Mapping[str, str], name: str, default: str, allow_auto: bool) -> int | str:
    value = environ.get(name, default)
    if allow_auto and value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise HardwareError(f"{name}={value!r}: expected a whole number >= 1{' or auto' if allow_auto else ''}")
    return int(value)


@dataclass(frozen=True)
class Hardware:
    """Where the stages run: ``accelerator`` (cpu | cuda), ``devices`` per node, ``strategy``, ``num_nodes``,
    whether one CUDA device replays training steps from CUDA graphs (``cuda_graphs``), and torch's
    ``threads`` per process (a count, or ``auto``: see ``torch_threads``)."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    cuda_graphs: bool = True
    threads: int | str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Hardware:
        """The ``GLORO_*`` variables, validated (``HardwareError`` names the variable and what it expects)."""
        accelerator = environ.get("GLORO_ACCELERATOR", "auto")
        if accelerator == "gpu":
            accelerator = "cuda"
        if accelerator not in ACCELERATORS:
            raise HardwareError(f"GLORO_ACCELERATOR={accelerator!r}: expected one of {list(ACCELERATORS)}")
        if accelerator == "auto":
            accelerator = "cuda" if torch.cuda.is_available() else "cpu"
        elif accelerator == "cuda" and not torch.cuda.is_available():
            raise HardwareError("GLORO_ACCELERATOR=cuda, but torch sees no CUDA GPU here "
                                f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
                                f"{environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use cpu or auto")
        strategy = environ.get("GLORO_STRATEGY", "auto")
        if strategy not in STRATEGIES:
            raise HardwareError(f"GLORO_STRATEGY={strategy!r}: expected one of {list(STRATEGIES)}")
        graphs = environ.get("GLORO_CUDA_GRAPHS", "1")
        if graphs not in ("0", "1"):
            raise HardwareError(f"GLORO_CUDA_GRAPHS={graphs!r}: expected 1 (CUDA graphs on one CUDA device) or 0")
        return cls(accelerator, _count(environ, "GLORO_DEVICES", "1", allow_auto=True), strategy,
                   _count(environ, "GLORO_NUM_NODES", "1", allow_auto=False), graphs == "1",
                   _count(environ, "GLORO_THREADS", "auto", allow_auto=True))

    def one_device(self) -> Hardware:
        """The same accelerator with a single device and node (single-process work, e.g. a search trial)."""
        return Hardware(self.accelerator, cuda_graphs=self.cuda_graphs, threads=self.threads)

    def device(self) -> torch.device:
        """The device of single-process stages: the current CUDA device, or the CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if self.accelerator == "cuda" else torch.device("cpu")

    def processes_per_node(self) -> int:
        """How many of this job's processes share a machine: the devices per node (``auto``: the GPUs)."""
        if self.devices == "auto":
            return max(1, torch.cuda.device_count()) if self.accelerator == "cuda" else 1
        return self.devices

    def trainer_kwargs(self) -> dict:
        """Lightning ``Trainer`` arguments."""
        return {"accelerator": self.accelerator, "devices": self.devices, "strategy": self.strategy,
                "num_nodes": self.num_nodes}


def busy_cores(seconds: float = 0.1, stat: Path = Path("/proc/stat")) -> float:
    """How many cores other work keeps busy, from the kernel's CPU counters over ``seconds``
    (0 where there are none to read, e.g. off Linux)."""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait
    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] <= first[0]:
        return 0.0
    busy = 1 - (second[1] - first[1]) / (second[0] - first[0])
    return busy * (os.cpu_count() or 1)


def torch_threads(hardware: Hardware, environ: Mapping[str, str] = os.environ) -> int:
    """``hardware.threads`` as a count: given, or (``auto``) the cores this process may use that no
    other work keeps busy, divided among the job's processes on this machine; at least 1."""
    if hardware.threads != "auto":
        return hardware.threads
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = int(environ.get("LOCAL_WORLD_SIZE", hardware.processes_per_node()))
    return max(1, math.floor(usable - busy_cores() + 0.5) // processes)


def use_threads(hardware: Hardware, environ=os.environ) -> int:
    """Set torch's threads from ``hardware.threads`` (``GLORO_THREADS``); an ``auto`` count is written back
    to the environment, so the processes this one starts (DDP ranks) use the same count. Returns it."""
    threads = torch_threads(hardware, environ)
    environ["GLORO_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return threads


def is_first_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is DDP's global rank 0 (or not part of a DDP job), known before any
    Trainer exists: no launcher variable (Lightning's, torchrun's, SLURM's) names another rank."""
    return all(environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def describe(device: torch.device) -> str:
    """What a result JSON records as its device: ``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    device = torch.device(device)
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
