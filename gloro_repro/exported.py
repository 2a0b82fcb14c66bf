"""The exported model (README, "Certify your own inputs") as one type: ``model.pt2`` and
``lipschitz.json``, read and written here.

A model folder holds:

* ``model.pt2``: a ``torch.export`` program of the logit network f (float32 ``[N, C, H, W]`` in
  [0, 1] -> logits ``[N, m]``, any batch size);
* ``lipschitz.json``: ``eps``, ``K`` (m x m margin bounds from converged power iteration),
  ``K_sound`` (from the provable per-layer bounds) and ``rounding_float64`` (per-logit bound on
  the float64 forward pass's rounding error for inputs in [0, 1]), so anyone can certify with
  plain torch: the paper's test with K in float32, or the provable test
  ``f_j - f_i - eps K_sound_ij > r_i + r_j`` with f in float64. Beside them: ``input_shape``,
  ``num_classes``, the per-layer ``layers``, ``layer_product`` (the product of the layers' power
  norms, a bound on f's global Lipschitz constant) and ``layer_product_sound``, and the training
  info. It is bound to its model: ``model_pt2_sha256`` is the digest of ``model.pt2``'s bytes and
  ``weights_sha256`` that of the weights the bounds were computed from; ``ExportedModel.load``
  refuses a pair that does not match.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gloro_repro.gloro import GloroNet, SoundBound, float32_precision, ieee_arithmetic
from gloro_repro.gloro.gemm_conv import gemm_convolutions
from gloro_repro.gloro.graphs import GraphedFunction
from gloro_repro.gloro.model import BOUNDS, Bound, Certificate, certify_logits
from gloro_repro.gloro.precision import require_ieee
from gloro_repro.io import MismatchError, atomic_open, content_digest, file_digest, write_json

REQUIRED_KEYS = ("eps", "K", "K_sound", "rounding_float64", "input_shape", "num_classes", "model_pt2_sha256",
                 "weights_sha256")


class ExportError(MismatchError):
    """A model folder's exported files are missing, unreadable, or do not belong together."""


def weights_digest(f: torch.nn.Module) -> str:
    """Digest of every parameter, by name: which weights the bounds describe."""
    return content_digest({name: value.detach().cpu().numpy() for name, value in sorted(f.named_parameters())})


def _archive_damage(path: Path) -> str | None:
    """Why ``path`` is not an intact zip archive (the .pt2 container), or None if it is."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        return f"{type(error).__name__}: {error}"
    return None if damaged is None else f"bad CRC in {damaged}"


def model_folder(directory: str | Path) -> Path:
    """The model folder itself, or an experiment's (``models/<experiment>``) selected model, ``best/``."""
    directory = Path(directory)
    if not (directory / "model.pt2").exists() and (directory / "best" / "model.pt2").exists():
        return directory / "best"
    return directory


def read_bounds(directory: str | Path) -> dict:
    """A model folder's ``lipschitz.json``, checked for the required keys and the bounds' shapes, with
    ``K``, ``K_sound`` and ``rounding_float64`` as float64 tensors. Reads nothing of ``model.pt2``: for
    work on the project's own network of the same weights (``artifacts.own_network``)."""
    bounds = model_folder(directory) / "lipschitz.json"
    if not bounds.is_file():
        raise ExportError(f"{bounds}: not found (a model folder holds model.pt2 and lipschitz.json)")
    try:
        lipschitz = json.loads(bounds.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{bounds}: not valid JSON ({error})") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(lipschitz, dict) or key not in lipschitz]
    if missing:
        raise ExportError(f"{bounds}: missing {missing}; re-export the model (dvc repro, stage converge)")
    m = lipschitz["num_classes"]
    for key, shape in (("K", (m, m)), ("K_sound", (m, m)), ("rounding_float64", (m,))):
        lipschitz[key] = torch.tensor(lipschitz[key], dtype=torch.float64)
        if tuple(lipschitz[key].shape) != shape:
            raise ExportError(f"{bounds}: {key} should have shape {list(shape)} for {m} classes")
    return lipschitz


@dataclass(frozen=True)
class ExportedModel:
    """A logit network f with its certification bounds: all that certifying needs.

    ``k`` is the power-iteration K (the paper's certificate, float32), ``k_sound`` the provable K
    and ``rounding_float64`` the float64 pass's per-logit rounding bound (float64 both); ``info``
    is the rest of ``lipschitz.json``. ``certify`` keeps its float64 copy of f and, on CUDA, its
    graphs in ``cache``.
    """

    f: torch.nn.Module
    eps: float
    k: torch.Tensor
    k_sound: torch.Tensor
    rounding_float64: torch.Tensor
    info: dict
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, net: GloroNet, sound_bounds: list[SoundBound] | None = None) -> ExportedModel:
        """The bounds of a converged GloroNet (``StaleIteratesError`` otherwise), computed as the export
        computes them (provable ones on the CPU, from ``sound_bounds`` when given)."""
        net = net.eval()
        sound = net.sound_bounds() if sound_bounds is None else sound_bounds
        with torch.no_grad():
            k = net.margin_bounds("power").detach().double()  # refuses iterates not converged for these weights
        info = {"input_shape": list(net.layers[0].input_shape), "num_classes": net.layers[-1].weight.shape[0]}
        return cls(net.f, net.eps, k, net.k_ij_sound(sound), net.rounding(torch.float64).cpu(), info)

    @classmethod
    def load(cls, directory: str | Path) -> ExportedModel:
        """Read a model folder, checking that ``model.pt2`` and ``lipschitz.json`` belong together;
        an experiment's folder (``models/<experiment>``) means its selected model, ``best/``.

        Raises ``ExportError``, naming the file, when either is missing or unreadable, or when the
        bounds were not computed for this ``model.pt2`` (a certificate from them would mean nothing).
        """
        directory = model_folder(directory)
        program, bounds = directory / "model.pt2", directory / "lipschitz.json"
        if not program.is_file():
            raise ExportError(f"{program}: not found (a model folder holds model.pt2 and lipschitz.json)")
        lipschitz = read_bounds(directory)
        found = file_digest(program)
        if found != lipschitz["model_pt2_sha256"]:
            damage = _archive_damage(program)
            raise ExportError(f"{program}: not a readable torch.export program ({damage})" if damage else
                              f"{bounds} belongs to another model than {program} (model.pt2 sha256 recorded "
                              f"{lipschitz['model_pt2_sha256'][:12]}, found {found[:12]}); certify only with the "
                              "two files exported together")
        try:
            f = torch.export.load(program).module()  # the very bytes that were exported
        except Exception as error:  # e.g. a torch too old for the archive
            raise ExportError(f"{program}: not a readable torch.export program ({type(error).__name__}: {error})") \
                from None
        if weights_digest(f) != lipschitz["weights_sha256"]:
            raise ExportError(f"{bounds} was computed from other weights than those in {program}")
        tensors = [lipschitz.pop(key) for key in ("K", "K_sound", "rounding_float64")]
        return cls(f, lipschitz.pop("eps"), *tensors, lipschitz)

    def save(self, directory: str | Path, info: dict) -> dict:
        """Write ``model.pt2`` and ``lipschitz.json`` (with ``info`` beside the bounds) atomically; return the JSON."""
        directory = Path(directory)
        example = torch.rand(2, *self.info["input_shape"])
        program = torch.export.export(self.f, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        lipschitz = {"eps": self.eps, "K": self.k.tolist(), "K_sound": self.k_sound.tolist(),
                     "rounding_float64": self.rounding_float64.tolist(), **info, **self.info,
                     "model_pt2_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                     "weights_sha256": weights_digest(self.f)}
        with atomic_open(directory / "model.pt2") as handle:
            handle.write(buffer.getvalue())
        write_json(directory / "lipschitz.json", lipschitz)
        return lipschitz

    @property
    def input_shape(self) -> list[int]:
        return self.info["input_shape"]

    @property
    def num_classes(self) -> int:
        return self.info["num_classes"]

    def to(self, device: torch.device | str) -> ExportedModel:
        """The model and its bounds on ``device`` (f is moved in place)."""
        return dataclasses.replace(self, f=self.f.to(device), k=self.k.to(device), k_sound=self.k_sound.to(device),
                                   rounding_float64=self.rounding_float64.to(device), cache={})

    def margin_bounds(self, bound: Bound) -> torch.Tensor:
        """K of the ``power`` bound or ``sound`` (provable) bound. ``[m, m]``."""
        if bound not in BOUNDS:
            raise ValueError(f"unknown bound {bound!r}; expected one of {BOUNDS}")
        return self.k if bound == "power" else self.k_sound

    def lipschitz_global_ub(self, bound: Bound = "power") -> float:
        """The largest margin bound K_ij: an upper bound on the Lipschitz constant of every margin."""
        return float(self.margin_bounds(bound).max())

    def _batch_certifier(self, bound: Bound, eps: float, graphs: bool) -> GraphedFunction:
        """The certificate of one batch as a function (a CUDA graph per batch shape on CUDA with ``graphs``)."""
        key = (bound, eps, graphs)
        if key not in self.cache:
            k = self.margin_bounds(bound)  # refuses an unknown bound before anything is cached
            if bound == "sound":
                f64 = self.cache.setdefault("f64", copy.deepcopy(self.f).double())
                rounding = self.rounding_float64
                def fn(x: torch.Tensor) -> dict:
                    with gemm_convolutions():  # one GEMM per convolution on CUDA, same rounding bound
                        logits = f64(x.double())
                    return vars(certify_logits(logits, k, eps, rounding))
            else:
                fn = lambda x: vars(certify_logits(self.f(x), k.float(), eps))
            self.cache[key] = GraphedFunction(fn, enabled=graphs)
        return self.cache[key]

    @torch.no_grad()
    def certify(self, x: torch.Tensor, eps: float | None = None, bound: Bound = "sound",
                batch_size: int = 1000, graphs: bool = True) -> Certificate:
        """Predict and certify ``x`` (on f's device) at radius ``eps`` (default: the exported one),
        ``batch_size`` inputs at a time; on CUDA with ``graphs`` each batch shape is one CUDA graph.

        ``sound``: provable, f in float64 with its rounding bounded, against ``k_sound``, in
        ``ieee_arithmetic``. ``power``: the paper's certificate, f in IEEE float32 against ``k``.
        """
        eps = self.eps if eps is None else eps
        certify_batch = self._batch_certifier(bound, eps, graphs)  # refuses an unknown bound
        with ieee_arithmetic() if bound == "sound" else float32_precision("ieee"):
            if bound == "sound":
                require_ieee(x.device, torch.float64, "the provable float64 certificate")
            # copied at once: a replayed graph overwrites its outputs at its next call
            parts = [{name: value.clone() for name, value in certify_batch(x[i:i + batch_size]).items()}
                     for i in range(0, len(x), batch_size)]
        if len(parts) == 1:
            return Certificate(**parts[0])
        return Certificate(**{name: torch.cat([part[name] for part in parts]) for name in parts[0]})
