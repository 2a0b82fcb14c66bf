"""Which hardware runs the stages: read from environment variables, never from params.yaml.

Hardware is not a hyperparameter: the accelerator and the number of devices, processes and nodes
change how fast a run goes, not what it means, so they stay out of params.yaml (and out of DVC's
view) and one checkout runs unchanged on a laptop, one GPU or a node of eight.

    GLORO_ACCELERATOR  auto (default: cuda when a CUDA GPU is visible, else cpu) | cpu | cuda
    GLORO_DEVICES      devices per node for the training stages: a count (default 1) or auto (every visible GPU)
    GLORO_STRATEGY     auto (default: ddp when several devices) | ddp
    GLORO_NUM_NODES    nodes for the training stages (default 1); see README for launching several
    GLORO_CUDA_GRAPHS  1 (default): on one CUDA device, replay each training step from a CUDA graph | 0: eager

Only warm-up and training use several devices (Lightning DDP, global batch = ``batch_size``);
every other stage runs in one process on the first device.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
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
    and whether one CUDA device replays training steps from CUDA graphs (``cuda_graphs``)."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    cuda_graphs: bool = True

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
                   _count(environ, "GLORO_NUM_NODES", "1", allow_auto=False), graphs == "1")

    def one_device(self) -> Hardware:
        """The same accelerator with a single device and node (single-process work, e.g. a search trial)."""
        return Hardware(self.accelerator, cuda_graphs=self.cuda_graphs)

    def device(self) -> torch.device:
        """The device of single-process stages: the current CUDA device, or the CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if self.accelerator == "cuda" else torch.device("cpu")

    def trainer_kwargs(self) -> dict:
        """Lightning ``Trainer`` arguments."""
        return {"accelerator": self.accelerator, "devices": self.devices, "strategy": self.strategy,
                "num_nodes": self.num_nodes}


def is_first_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is DDP's global rank 0 (or not part of a DDP job), known before any
    Trainer exists: no launcher variable (Lightning's, torchrun's, SLURM's) names another rank."""
    return all(environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def describe(device: torch.device) -> str:
    """What a result JSON records as its device: ``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    device = torch.device(device)
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
