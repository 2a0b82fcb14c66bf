"""The model files the stages hand each other.

A converged model folder ``models/<experiment>/<best|last>/`` holds ``gloro.pt`` (the experiment,
input shape, class count and the GloroNet state: weights and converged power-iteration iterates),
for the project's own stages, and the exported ``model.pt2`` and ``lipschitz.json``
(``gloro_repro.exported``), for anyone.

Nothing here imports Lightning: a Lightning checkpoint is read with ``torch.load``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from gloro_repro.config import ConfigError, Experiment
from gloro_repro.data.arrays import describe_prepared
from gloro_repro.exported import ExportedModel, ExportError, weights_digest
from gloro_repro.gloro import GloroNet, build_network
from gloro_repro.io import atomic_open

SELECTIONS = ("best", "last")  # the validation-selected checkpoint and the last epoch's


def build_gloro(experiment: Experiment, input_shape: tuple[int, int, int], num_classes: int) -> GloroNet:
    """The experiment's network, wrapped as a GloroNet at its test radius (seeded init)."""
    model = experiment.model
    try:
        f = build_network(model.architecture, tuple(input_shape), num_classes, model.activation, model.init,
                          seed=experiment.training.seed)
    except ValueError as error:  # e.g. a custom spec whose head does not fit the data's classes
        raise ConfigError(f"experiments.{experiment.name}.model.architecture: {error}") from None
    iterations = model.power_iterations if experiment.robust else 0
    return GloroNet(f, eps=experiment.eps_test, power_iterations=iterations)


def save_initial(experiment: Experiment, data_dir: str | Path, path: str | Path) -> Path:
    """The start of a run without warm-up epochs: the seeded initial GloroNet's state for the prepared
    dataset in ``data_dir`` (``{"initial_state_dict": ...}``), written atomically, with no Lightning to import."""
    net = build_gloro(experiment, *describe_prepared(data_dir, experiment.data.dataset))
    with atomic_open(path) as handle:
        torch.save({"initial_state_dict": net.state_dict()}, handle)
    return Path(path)


def load_initial(path: str | Path) -> dict:
    """The GloroNet state that ``save_initial`` wrote."""
    return torch.load(path, map_location="cpu", weights_only=True)["initial_state_dict"]


def read_checkpoint(path: str | Path) -> tuple[Experiment, GloroNet, dict]:
    """Rebuild the GloroNet of a Lightning checkpoint written by ``gloro_repro.lit.module.GloroModule``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hp = checkpoint["hyper_parameters"]
    experiment = Experiment.from_dict(hp["experiment"])
    net = build_gloro(experiment, hp["input_shape"], hp["num_classes"])
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    info = {"epoch": int(checkpoint["epoch"]) + 1, "global_step": int(checkpoint["global_step"]),
            "input_shape": list(hp["input_shape"]), "num_classes": int(hp["num_classes"])}
    return experiment, net.eval(), info


def export_converged(net: GloroNet, experiment: Experiment, info: dict, directory: str | Path) -> dict:
    """Write ``gloro.pt``, ``model.pt2`` and ``lipschitz.json`` atomically; return ``lipschitz.json``'s content.

    Besides the exported bounds: per layer the power-iteration and provable norms and the method of
    the latter, both layer products, and the seconds the provable bounds took.
    """
    directory = Path(directory)
    net = net.eval()
    with torch.no_grad():
        power = [layer.lipschitz().item() for layer in net.layers]
    start = time.perf_counter()
    sound = net.sound_bounds()
    exported = ExportedModel.of(net, sound)
    layers = {"layers": [{"layer": repr(layer), "power": p, "sound": s.value, "method": s.method,
                          "sound_over_power": s.value / p} for layer, p, s in zip(net.layers, power, sound)],
              "layer_product": net.layer_product("power"), "layer_product_sound": net.layer_product("sound", sound),
              "sound_seconds": time.perf_counter() - start}
    with atomic_open(directory / "gloro.pt") as handle:
        torch.save({"experiment": experiment.trained_settings(), "state_dict": net.state_dict(), **info}, handle)
    return exported.save(directory, layers | info)


def load_gloro(directory: str | Path) -> tuple[Experiment, GloroNet, dict]:
    """The converged GloroNet of a model folder, in eval mode, with the info saved beside it."""
    saved = torch.load(Path(directory) / "gloro.pt", map_location="cpu", weights_only=False)
    experiment = Experiment.from_dict(saved.pop("experiment"))
    state = saved.pop("state_dict")
    net = build_gloro(experiment, saved["input_shape"], saved["num_classes"])
    net.load_state_dict(state)
    return experiment, net.eval(), saved


def own_network(folder, lipschitz: dict):
    """The project's own GloroNet of a model folder (``gloro.pt``), checked to hold the weights its
    exported ``lipschitz.json`` (``lipschitz``: its content, or an ``ExportedModel.info``) describes: the same
    function as ``model.pt2``, with the cheaper backward pass of the project's layers (the attacks and
    lower bounds follow its gradients)."""
    _, net, _ = load_gloro(folder)
    if weights_digest(net.f) != lipschitz["weights_sha256"]:
        raise ExportError(f"{folder}/gloro.pt holds other weights than those {folder}/lipschitz.json describes")
    return net
