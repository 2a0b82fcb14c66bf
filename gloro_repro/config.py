"""The typed, validated view of ``params.yaml``: read once, checked before any work starts.

Every key has one spelling everywhere: params key = dataclass field = W&B config key. Unknown
keys, wrong types, bad schedule strings and unknown names fail with the key's path and value.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gloro_repro.data import SOURCES
from gloro_repro.data.augment import AUGMENTATIONS
from gloro_repro.data.own import READERS
from gloro_repro.gloro.activations import ACTIVATIONS
from gloro_repro.gloro.architectures import ARCHITECTURES, architecture_spec, parse_spec
from gloro_repro.gloro.layers import INITIALISERS
from gloro_repro.gloro.losses import LOSSES
from gloro_repro.gloro.schedules import EpsSchedule, LambdaSchedule, LRSchedule, TrainingSchedule

MODELS = ("gloro", "standard")
WANDB_MODES = ("offline", "online", "disabled")


class ConfigError(ValueError):
    """A bad value in params.yaml; the message names the key's path, the value and what is expected."""


@dataclass(frozen=True)
class AttackConfig:
    """The PGD attack the certification stage runs (per objective: CE and margin)."""

    steps: int = 100
    restarts: int = 5


@dataclass(frozen=True)
class LowerBoundConfig:
    """Appendix F's optimisation budget (the paper: 100 pairs x 7,500 steps; 100 centres x 5,000)."""

    global_pairs: int = 100
    global_steps: int = 7500
    local_centres: int = 100
    local_steps: int = 5000
    lr: float = 1.0e-3


@dataclass(frozen=True)
class DataConfig:
    """Which prepared dataset, and the fraction of its training split held out for model selection."""

    dataset: str
    val_fraction: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """The network: GloRo or Standard, the architecture, activation, initialisation, power iterations."""

    model: str
    architecture: str
    activation: str
    init: str
    power_iterations: int


@dataclass(frozen=True)
class TrainingConfig:
    """The training run: its seed, length, batches, augmentation and the paper's schedules.

    ``loss`` names a registered loss (``gloro.losses.LOSSES``); ``lam`` is its lambda schedule
    (TRADES: ``l`` or ``l0,l1,epochs``) and null for a loss without one.
    ``converge_tol`` belongs here because power iteration converges before every validation,
    whose VRA picks ``best.ckpt``; the converge stage uses it too. ``tf32`` lets the training
    passes use TensorFloat-32 on GPUs that have it (faster, about 1e-3 relative error); the
    per-epoch validation, convergence and certification always run in IEEE float32/float64.
    """

    seed: int
    warmup: int
    epochs: int
    batch_size: int
    augmentation: str
    init_lr: float
    lr_decay: str
    eps_train: float
    eps_schedule: str
    loss: str
    lam: str | None = None
    converge_tol: float = 1.0e-5
    tf32: bool = False


GROUPS = ("data", "model", "training")


@dataclass(frozen=True)
class Experiment:
    """One row of Tables B.1/B.2 (or a Standard baseline, or a digits default), its keys grouped
    by what they affect: ``data``, ``model``, ``training``, the test radius ``eps_test`` (which
    also selects ``best.ckpt``), and the evaluation budgets ``attack`` and ``lower_bound``."""

    name: str
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    eps_test: float
    attack: AttackConfig = field(default_factory=AttackConfig)
    lower_bound: LowerBoundConfig = field(default_factory=LowerBoundConfig)

    def __post_init__(self):
        where = f"experiments.{self.name}"
        data, model, training = self.data, self.model, self.training
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", data.dataset):
            raise ConfigError(f"{where}.data.dataset: got {data.dataset!r}, expected a name of letters, digits, "
                              "'_', '.' and '-' (it names the folder data/<dataset>)")
        _choice(f"{where}.model.model", model.model, MODELS)
        _choice(f"{where}.model.activation", model.activation, tuple(ACTIVATIONS))
        _choice(f"{where}.model.init", model.init, INITIALISERS)
        _choice(f"{where}.training.augmentation", training.augmentation, tuple(AUGMENTATIONS))
        try:
            parse_spec(architecture_spec(model.architecture, 10))
        except ValueError as error:
            raise ConfigError(f"{where}.model.architecture: {model.architecture!r} is neither one of "
                              f"{sorted(ARCHITECTURES)} nor a valid spec ({error})") from None
        for group, key, minimum in (("model", "power_iterations", 0), ("training", "seed", 0),
                                    ("training", "warmup", 0), ("training", "epochs", 1),
                                    ("training", "batch_size", 1)):
            if getattr(getattr(self, group), key) < minimum:
                raise ConfigError(f"{where}.{group}.{key}: got {getattr(getattr(self, group), key)}, "
                                  f"expected an integer >= {minimum}")
        for path, value in (("training.eps_train", training.eps_train), ("training.init_lr", training.init_lr),
                            ("training.converge_tol", training.converge_tol), ("eps_test", self.eps_test)):
            if not value > 0:
                raise ConfigError(f"{where}.{path}: got {value}, expected a number > 0")
        if not 0 <= data.val_fraction < 1:
            raise ConfigError(f"{where}.data.val_fraction: got {data.val_fraction}, expected a fraction in [0, 1) "
                              "(0: no validation split, the last epoch is the model)")
        _check_loss(where, model.model, training)
        for positive in ("steps", "restarts"):
            if getattr(self.attack, positive) < 1:
                raise ConfigError(f"{where}.attack.{positive}: expected an integer >= 1")
        for positive in ("global_pairs", "global_steps", "local_centres", "local_steps"):
            if getattr(self.lower_bound, positive) < 1:
                raise ConfigError(f"{where}.lower_bound.{positive}: expected an integer >= 1")
        try:
            self.schedule()
        except ValueError as error:
            raise ConfigError(f"{where}.training: {error}") from None

    @property
    def robust(self) -> bool:
        return self.model.model == "gloro"


    @property
    def selection_metric(self) -> str | None:
        """What picks the best checkpoint on the validation split; None without one (the last epoch)."""
        if not self.data.val_fraction:
            return None
        return "val/vra" if self.robust else "val/clean"

    @property
    def selection(self) -> str:
        """How ``best`` is chosen, in words."""
        return "best on validation split" if self.data.val_fraction else "last epoch (no validation split)"

    def schedule(self) -> TrainingSchedule:
        """The warm-up, eps, TRADES-lambda and LR schedules parsed from their paper strings."""
        t = self.training
        return TrainingSchedule(
            warmup=t.warmup,
            eps=EpsSchedule.parse(t.eps_schedule, t.eps_train, t.epochs),
            lam=LambdaSchedule.parse(t.lam if t.lam is not None else 0),
            lr=LRSchedule.parse(t.lr_decay, t.init_lr, t.epochs))

    def ramp_notes(self) -> list[str]:
        """A line for each schedule whose ramp outlasts the run (e.g. ``epochs`` edited alone), saying
        where it ends and how to ramp over the run instead."""
        t, schedule, notes = self.training, self.schedule(), []
        for key, ramp, value in (("lam", schedule.lam, t.lam), ("eps_schedule", schedule.eps, t.eps_schedule)):
            if ramp.ramp_epochs > t.epochs:
                start, stop = str(value).split(",")[:2]
                notes.append(f"experiments.{self.name}.training.{key} ramps over {ramp.ramp_epochs:g} epochs but the "
                             f"run has {t.epochs}: it ends at {ramp(t.epochs - 1):.3g} instead of {float(stop):g}; "
                             f"to ramp over the run, set {key}: {start},{stop},{t.epochs}")
        return notes

    def _group_of(self, key: str) -> str | None:
        """The group holding the column ``key``, or None for a key of the experiment itself."""
        return next((g for g in GROUPS if key in {f.name for f in dataclasses.fields(getattr(self, g))}), None)

    def value(self, key: str):
        """A key by its paper column name, whichever group holds it (``epochs``, ``eps_test``, ...)."""
        group = self._group_of(key)
        if group is None and key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"no key {key!r} in experiment {self.name}")
        return getattr(getattr(self, group) if group else self, key)

    def with_values(self, **changes) -> Experiment:
        """A copy with keys replaced by their column names, each in its group, validated again."""
        grouped: dict = {}
        for key, value in changes.items():
            group = self._group_of(key)
            if group is None:
                grouped[key] = value
            else:
                grouped[group] = dataclasses.replace(grouped.get(group, getattr(self, group)), **{key: value})
        return dataclasses.replace(self, **grouped)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def trained_settings(self) -> dict:
        """Every setting that changes the trained weights or the choice of ``best.ckpt`` (not the
        evaluation budgets): what a checkpoint records, and what resuming a run compares."""
        return {k: v for k, v in self.as_dict().items() if k not in ("attack", "lower_bound")}

    @classmethod
    def from_dict(cls, data: dict) -> Experiment:
        """Rebuild from ``as_dict`` or ``trained_settings`` output (e.g. a checkpoint's), validating again."""
        rest = {k: v for k, v in data.items() if k != "name"}
        return _build(cls, rest, f"experiments.{data['name']}", name=data["name"])


@dataclass(frozen=True)
class WandbConfig:
    """W&B logging: offline by default (runs under ./wandb; ``wandb sync`` uploads them later)."""

    mode: str = "offline"
    project: str = "gloro-repro"
    entity: str | None = None

    def __post_init__(self):
        _choice("wandb.mode", self.mode, WANDB_MODES)


@dataclass(frozen=True)
class Params:
    """All of params.yaml: the experiments, the ``run`` selection and its ``datasets``, W&B and data sources."""

    run: tuple[str, ...]
    datasets: tuple[str, ...]
    experiments: dict[str, Experiment]
    wandb: WandbConfig = field(default_factory=WandbConfig)
    sources: dict[str, str | dict | None] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.run:
            if name not in self.experiments:
                raise ConfigError(f"run: unknown experiment {name!r}; expected one of {sorted(self.experiments)}")
        own = {"{" + f"{kind}: {'FILE' if kind == 'npz' else 'DIR'}" + "}" for kind in READERS}
        for name, source in self.sources.items():
            if isinstance(source, dict):
                if len(source) != 1 or next(iter(source)) not in READERS or not isinstance(next(iter(source.values())),
                                                                                         str):
                    raise ConfigError(f"sources.{name}: got {source!r}, expected one of {sorted(own)}")
            elif name not in SOURCES:
                raise ConfigError(f"sources.{name}: got {source!r}; a dataset of your own is declared as one of "
                                  f"{sorted(own)} (a folder or null is for the paper's datasets, {list(SOURCES)})")
        known = sorted(set(SOURCES) | set(self.sources))
        for dataset in self.datasets:
            _choice("datasets", dataset, tuple(known))
        for name, e in self.experiments.items():
            if e.data.dataset not in known:
                raise ConfigError(f"experiments.{name}.data.dataset: got {e.data.dataset!r}, expected one of "
                                  f"{list(SOURCES)} or a dataset of your own declared under sources "
                                  f"(sources.{e.data.dataset}: {sorted(own)[0]})")
        used = sorted({self.experiments[name].data.dataset for name in self.run})
        if sorted(set(self.datasets)) != used or len(set(self.datasets)) != len(self.datasets):
            raise ConfigError(f"datasets: got {list(self.datasets)}, but the experiments in run use {used}; "
                              f"set datasets to exactly those (e.g. dvc exp run -S 'datasets=[{','.join(used)}]'), "
                              "so that each is prepared once and no unused one is downloaded")

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"unknown experiment {name!r}; expected one of {sorted(self.experiments)}")
        return self.experiments[name]


def _check_loss(where: str, model: str, training: TrainingConfig) -> None:
    """The loss is a registered name, with a lambda schedule exactly when it takes one; old params
    files (``loss: CE`` or a TRADES lambda) are told how to write the new keys."""
    loss, lam = training.loss, training.lam
    if loss not in LOSSES:
        hint = ""
        if loss == "CE":
            hint = " (loss now names the loss: write loss: ce)"
        else:
            try:
                LambdaSchedule.parse(loss)
                hint = (" (loss now names the loss, and TRADES's lambda schedule is training.lam: write loss: "
                        f"trades, lam: {loss!r})")
            except ValueError:
                pass
        raise ConfigError(f"{where}.training.loss: got {loss!r}, expected one of {sorted(LOSSES)}{hint}")
    if model == "standard" and loss != "ce":
        raise ConfigError(f"{where}.training.loss: got {loss!r}; a standard model trains with plain 'ce'")
    if LOSSES[loss].uses_lambda and lam is None:
        raise ConfigError(f"{where}.training.lam: missing; loss {loss!r} needs its lambda schedule "
                          "(a number, or 'l0,l1,epochs')")
    if not LOSSES[loss].uses_lambda and lam is not None:
        raise ConfigError(f"{where}.training.lam: got {lam!r}, but loss {loss!r} takes no lambda; remove it")


def _choice(path: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: got {value!r}, expected one of {list(allowed)}")


def _convert(path: str, value, annotation):
    """Check ``value`` against a field's type, building nested dataclasses; raise ConfigError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(path, value, inner)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, path)
    if annotation is bool or annotation is int:
        if type(value) is not annotation:
            raise ConfigError(f"{path}: got {value!r}, expected {annotation.__name__}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads ``1e-3`` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: got {value!r}, expected a number")
        return float(value)
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{path}: got {value!r}, expected a string")
        return str(value)
    raise TypeError(f"no conversion for {annotation}")  # a programming error, not a params error


def _build(cls, data, path: str, **extra):
    """Build dataclass ``cls`` from a mapping, rejecting unknown and missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: got {data!r}, expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in extra}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected keys from {sorted(fields)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {missing}")
    return cls(**extra, **{k: _convert(f"{path}.{k}", v, hints[k]) for k, v in data.items()})


def _names(key: str, value) -> tuple[str, ...]:
    """A list of names (one name alone is accepted too)."""
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"{key}: got {value!r}, expected a list of names")
    return tuple(value)


def parse_params(data: dict) -> Params:
    """Validate a params mapping (as read from params.yaml) into ``Params``."""
    if not isinstance(data, dict):
        raise ConfigError(f"params: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(Params)})
    if unknown:
        raise ConfigError(f"params: unknown top-level key(s) {unknown}; "
                          "expected run, datasets, experiments, wandb, sources")
    for key in ("run", "datasets", "experiments"):
        if key not in data:
            raise ConfigError(f"params: missing top-level key {key!r}")
    experiments = data["experiments"]
    if not isinstance(experiments, dict) or not experiments:
        raise ConfigError("experiments: expected a non-empty mapping of experiment name -> settings")
    run, datasets = (_names(key, data[key]) for key in ("run", "datasets"))
    sources = data.get("sources") or {}
    if not isinstance(sources, dict) or not all(v is None or isinstance(v, (str, dict)) for v in sources.values()):
        raise ConfigError(f"sources: got {sources!r}, expected dataset -> folder of original files (or null), or "
                          "{npz: FILE} / {imagefolder: DIR} for a dataset of your own")
    return Params(
        run=run,
        datasets=datasets,
        experiments={name: _build(Experiment, spec, f"experiments.{name}", name=name)
                     for name, spec in experiments.items()},
        wandb=_build(WandbConfig, data.get("wandb") or {}, "wandb"),
        sources=sources)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    return parse_params(data)
