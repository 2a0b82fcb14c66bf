"""The typed, validated view of ``params.yaml``: read once, checked before any work starts.

Every key has one spelling everywhere: params key = dataclass field = W&B config key. Unknown
keys, wrong types, bad schedule strings and unknown names fail with the key's path and value.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.data.augment import AUGMENTATIONS
from pipeline.data.sources import SOURCES
from pipeline.gloro.architectures import ARCHITECTURES, architecture_spec, parse_spec
from pipeline.gloro.schedules import EpsSchedule, LambdaSchedule, LRSchedule, TrainingSchedule

ACTIVATIONS = ("minmax", "relu")
MODELS = ("gloro", "standard")
INITS = ("default", "orthogonal")
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
class Experiment:
    """One row of Tables B.1/B.2 (or a Standard baseline, or a digits default), column by column."""

    name: str
    dataset: str
    architecture: str
    activation: str
    model: str
    augmentation: str
    warmup: int
    batch_size: int
    epochs: int
    eps_train: float
    eps_test: float
    init: str
    init_lr: float
    lr_decay: str
    loss: str
    eps_schedule: str
    power_iterations: int
    val_fraction: float = 0.1
    seed: int = 0
    converge_tol: float = 1.0e-5
    attack: AttackConfig = field(default_factory=AttackConfig)
    lower_bound: LowerBoundConfig = field(default_factory=LowerBoundConfig)

    def __post_init__(self):
        where = f"experiments.{self.name}"
        _choice(f"{where}.dataset", self.dataset, SOURCES)
        _choice(f"{where}.activation", self.activation, ACTIVATIONS)
        _choice(f"{where}.model", self.model, MODELS)
        _choice(f"{where}.augmentation", self.augmentation, tuple(AUGMENTATIONS))
        _choice(f"{where}.init", self.init, INITS)
        try:
            parse_spec(architecture_spec(self.architecture, 10))
        except ValueError as error:
            raise ConfigError(f"{where}.architecture: {self.architecture!r} is neither one of "
                              f"{sorted(ARCHITECTURES)} nor a valid spec ({error})") from None
        for key in ("warmup", "batch_size", "epochs", "power_iterations", "seed"):
            minimum = 0 if key in ("warmup", "power_iterations", "seed") else 1
            if getattr(self, key) < minimum:
                raise ConfigError(f"{where}.{key}: got {getattr(self, key)}, expected an integer >= {minimum}")
        for key in ("eps_train", "eps_test", "init_lr", "converge_tol"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{where}.{key}: got {getattr(self, key)}, expected a number > 0")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"{where}.val_fraction: got {self.val_fraction}, expected a fraction in (0, 1) "
                              "(model selection needs a validation split)")
        if self.model == "standard" and self.loss != "CE":
            raise ConfigError(f"{where}.loss: got {self.loss!r}; a standard model trains with plain 'CE'")
        for positive in ("steps", "restarts"):
            if getattr(self.attack, positive) < 1:
                raise ConfigError(f"{where}.attack.{positive}: expected an integer >= 1")
        for positive in ("global_pairs", "global_steps", "local_centres", "local_steps"):
            if getattr(self.lower_bound, positive) < 1:
                raise ConfigError(f"{where}.lower_bound.{positive}: expected an integer >= 1")
        try:
            self.schedule()
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None

    @property
    def robust(self) -> bool:
        return self.model == "gloro"

    @property
    def trades(self) -> bool:
        return self.robust and self.loss != "CE"

    @property
    def selection_metric(self) -> str:
        """What picks the best checkpoint on the validation split."""
        return "val/vra" if self.robust else "val/clean"

    def schedule(self) -> TrainingSchedule:
        """The warm-up, eps, TRADES-lambda and LR schedules parsed from their paper strings."""
        return TrainingSchedule(
            warmup=self.warmup,
            eps=EpsSchedule.parse(self.eps_schedule, self.eps_train, self.epochs),
            lam=LambdaSchedule.parse(self.loss if self.trades else 0),
            lr=LRSchedule.parse(self.lr_decay, self.init_lr, self.epochs))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Experiment:
        """Rebuild from ``as_dict`` output (e.g. a checkpoint's hyperparameters), validating again."""
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
    """All of params.yaml: the experiments, the ``run`` selection, W&B and data sources."""

    run: tuple[str, ...]
    experiments: dict[str, Experiment]
    wandb: WandbConfig = field(default_factory=WandbConfig)
    sources: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.run:
            if name not in self.experiments:
                raise ConfigError(f"run: unknown experiment {name!r}; expected one of {sorted(self.experiments)}")
        for dataset in self.sources:
            _choice(f"sources.{dataset}", dataset, SOURCES)

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"unknown experiment {name!r}; expected one of {sorted(self.experiments)}")
        return self.experiments[name]


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


def parse_params(data: dict) -> Params:
    """Validate a params mapping (as read from params.yaml) into ``Params``."""
    if not isinstance(data, dict):
        raise ConfigError(f"params: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(Params)})
    if unknown:
        raise ConfigError(f"params: unknown top-level key(s) {unknown}; expected run, experiments, wandb, sources")
    for key in ("run", "experiments"):
        if key not in data:
            raise ConfigError(f"params: missing top-level key {key!r}")
    experiments = data["experiments"]
    if not isinstance(experiments, dict) or not experiments:
        raise ConfigError("experiments: expected a non-empty mapping of experiment name -> settings")
    run = data["run"]
    if isinstance(run, str):
        run = [run]
    if not isinstance(run, list) or not all(isinstance(n, str) for n in run):
        raise ConfigError(f"run: got {run!r}, expected a list of experiment names")
    sources = data.get("sources") or {}
    if not isinstance(sources, dict) or not all(v is None or isinstance(v, str) for v in sources.values()):
        raise ConfigError(f"sources: got {sources!r}, expected dataset -> folder of original files (or null)")
    return Params(
        run=tuple(run),
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
