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
  ``f_j - f_i - eps K_sound_ij > r_i + r_j`` with f in float64. It is bound to its model:
  ``model_pt2_sha256`` is the digest of ``model.pt2``'s bytes and ``weights_sha256`` that of the
  weights the bounds were computed from; ``load_exported`` refuses a pair that does not match.

Nothing here imports Lightning: a Lightning checkpoint is read with ``torch.load``.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import torch

from pipeline.config import Experiment
from pipeline.gloro import GloroNet, build_network
from pipeline.io import MismatchError, atomic_open, content_digest, file_digest, write_json

SELECTIONS = ("best", "last")  # the validation-selected checkpoint and the last epoch's


class ExportError(MismatchError):
    """A model folder's exported files are missing, unreadable, or do not belong together."""


def weights_digest(f: torch.nn.Module) -> str:
    """Digest of every parameter, by name: which weights the bounds describe."""
    return content_digest({name: value.detach().cpu().numpy() for name, value in sorted(f.named_parameters())})


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
    start = time.perf_counter()
    sound = net.sound_bounds()
    return {"eps": net.eps, "K": net.k_ij().detach().double().tolist(), "K_sound": net.k_ij_sound(sound).tolist(),
            "rounding_float64": net.rounding(torch.float64).tolist(),
            "layers": [{"layer": repr(layer), "power": p, "sound": s.value, "method": s.method,
                        "sound_over_power": s.value / p} for layer, p, s in zip(net.layers, power, sound)],
            "global_ub": net.global_lipschitz("power"), "global_ub_sound": net.global_lipschitz("sound", sound),
            "sound_seconds": time.perf_counter() - start}


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
    summary |= {"model_pt2_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                "weights_sha256": weights_digest(net.f)}
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


def _archive_damage(path: Path) -> str | None:
    """Why ``path`` is not an intact zip archive (the .pt2 container), or None if it is."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        return f"{type(error).__name__}: {error}"
    return None if damaged is None else f"bad CRC in {damaged}"


LIPSCHITZ_KEYS = ("eps", "K", "K_sound", "rounding_float64", "input_shape", "num_classes", "model_pt2_sha256",
                  "weights_sha256")


def load_exported(directory: str | Path) -> tuple[torch.nn.Module, dict]:
    """The exported network f and its ``lipschitz.json``, checked to belong together: all an
    outsider needs to certify (``torch.export.load(dir / "model.pt2").module()`` and ``json.load``).

    Raises ``ExportError``, naming the file, when either is missing or unreadable, or when the
    bounds were not computed for this ``model.pt2`` (a certificate from them would mean nothing).
    """
    directory = Path(directory)
    program, bounds = directory / "model.pt2", directory / "lipschitz.json"
    for path in (program, bounds):
        if not path.is_file():
            raise ExportError(f"{path}: not found (a model folder holds model.pt2 and lipschitz.json)")
    try:
        lipschitz = json.loads(bounds.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{bounds}: not valid JSON ({error})") from None
    missing = [key for key in LIPSCHITZ_KEYS if not isinstance(lipschitz, dict) or key not in lipschitz]
    if missing:
        raise ExportError(f"{bounds}: missing {missing}; re-export the model (dvc repro, stage converge)")
    m = lipschitz["num_classes"]
    for key, shape in (("K", (m, m)), ("K_sound", (m, m)), ("rounding_float64", (m,))):
        if tuple(torch.tensor(lipschitz[key]).shape) != shape:
            raise ExportError(f"{bounds}: {key} should have shape {list(shape)} for {m} classes")
    found = file_digest(program)
    if found != lipschitz["model_pt2_sha256"]:
        damage = _archive_damage(program)
        raise ExportError(f"{program}: not a readable torch.export program ({damage})" if damage else
                          f"{bounds} belongs to another model than {program} (model.pt2 sha256 recorded "
                          f"{lipschitz['model_pt2_sha256'][:12]}, found {found[:12]}); certify only with the two "
                          "files exported together")
    try:
        f = torch.export.load(program).module()  # the very bytes that were exported
    except Exception as error:  # e.g. a torch too old for the archive
        raise ExportError(f"{program}: not a readable torch.export program ({type(error).__name__}: {error})") from None
    if weights_digest(f) != lipschitz["weights_sha256"]:
        raise ExportError(f"{bounds} was computed from other weights than those in {program}")
    return f, lipschitz
