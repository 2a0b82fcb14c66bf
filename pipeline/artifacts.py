"""The model files the stages hand each other, and the exported contract of DESIGN.md.

A converged model folder ``models/<experiment>/<best|last>/`` holds:

* ``gloro.pt``: the experiment, input shape, class count and the GloroNet state (weights and
  converged power-iteration iterates), for the project's own stages;
* ``model.pt2``: a ``torch.export`` program of the logit network f (float32 ``[N, C, H, W]`` in
  [0, 1] -> logits ``[N, m]``, any batch size);
* ``lipschitz.json``: ``eps``, ``K`` (m x m margin bounds from converged power iteration),
  ``K_sound`` (from the provable per-layer bounds) and ``rounding_float64`` (per-logit bound on
  the float64 forward pass's rounding error for inputs in [0, 1]), so anyone can certify with
  plain torch: the paper's test with K in float32, or the provable test
  ``f_j - f_i - eps K_sound_ij > r_i + r_j`` with f in float64.

Nothing here imports Lightning: a Lightning checkpoint is read with ``torch.load``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from pipeline.config import Experiment
from pipeline.gloro import GloroNet, build_network
from pipeline.gloro.bounds import sound_spectral_norm
from pipeline.io import atomic_open, write_json

SELECTIONS = ("best", "last")  # the validation-selected checkpoint and the last epoch's


def build_gloro(experiment: Experiment, input_shape: tuple[int, int, int], num_classes: int) -> GloroNet:
    """The experiment's network, wrapped as a GloroNet at its test radius (seeded init)."""
    model = experiment.model
    f = build_network(model.architecture, tuple(input_shape), num_classes, model.activation, model.init,
                      seed=experiment.training.seed)
    iterations = model.power_iterations if experiment.robust else 0
    return GloroNet(f, eps=experiment.eps_test, power_iterations=iterations)


def read_checkpoint(path: str | Path) -> tuple[Experiment, GloroNet, dict]:
    """Rebuild the GloroNet of a Lightning checkpoint written by ``pipeline.lit.module.GloroModule``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hp = checkpoint["hyper_parameters"]
    experiment = Experiment.from_dict(hp["experiment"])
    net = build_gloro(experiment, hp["input_shape"], hp["num_classes"])
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    info = {"epoch": int(checkpoint["epoch"]) + 1, "global_step": int(checkpoint["global_step"]),
            "input_shape": list(hp["input_shape"]), "num_classes": int(hp["num_classes"])}
    return experiment, net.eval(), info


def lipschitz_summary(net: GloroNet) -> dict:
    """Per-layer power-iteration and provable norms, the global bounds, and both K matrices."""
    with torch.no_grad():
        power = [layer.lipschitz().item() for layer in net.layers]
    sound = [sound_spectral_norm(layer) for layer in net.layers]
    return {"eps": net.eps, "K": net.k_ij().detach().double().tolist(), "K_sound": net.k_ij_sound().tolist(),
            "rounding_float64": net.rounding(torch.float64).tolist(),
            "layers": [{"layer": type(layer).__name__, "power": p, "sound": s}
                       for layer, p, s in zip(net.layers, power, sound)],
            "global_ub": net.global_lipschitz("power"), "global_ub_sound": net.global_lipschitz("sound")}


def export_converged(net: GloroNet, experiment: Experiment, info: dict, directory: str | Path) -> dict:
    """Write ``gloro.pt``, ``model.pt2`` and ``lipschitz.json`` atomically; return the Lipschitz summary."""
    directory = Path(directory)
    net = net.eval()
    summary = {**lipschitz_summary(net), **info}
    with atomic_open(directory / "gloro.pt") as handle:
        torch.save({"experiment": experiment.trained_settings(), "state_dict": net.state_dict(), **info}, handle)
    example = torch.rand(2, *info["input_shape"])
    program = torch.export.export(net.f, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with atomic_open(directory / "model.pt2") as handle:
        handle.write(buffer.getvalue())
    write_json(directory / "lipschitz.json", summary)
    return summary


def load_gloro(directory: str | Path) -> tuple[Experiment, GloroNet, dict]:
    """The converged GloroNet of a model folder, in eval mode, with the info saved beside it."""
    saved = torch.load(Path(directory) / "gloro.pt", map_location="cpu", weights_only=False)
    experiment = Experiment.from_dict(saved.pop("experiment"))
    state = saved.pop("state_dict")
    net = build_gloro(experiment, saved["input_shape"], saved["num_classes"])
    net.load_state_dict(state)
    return experiment, net.eval(), saved


def load_exported(directory: str | Path) -> tuple[torch.nn.Module, dict]:
    """The exported network f and its ``lipschitz.json``: all an outsider needs to certify.

    Equivalent to ``torch.export.load(dir / "model.pt2").module()`` and ``json.load``.
    """
    directory = Path(directory)
    f = torch.export.load(directory / "model.pt2").module()
    return f, json.loads((directory / "lipschitz.json").read_text())
