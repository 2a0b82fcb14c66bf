"""The dataset sources by name."""
from __future__ import annotations

from pathlib import Path

from . import cifar10, digits, mnist, tinyimagenet
from .arrays import DatasetArrays

SOURCES = ("digits", "mnist", "cifar10", "tinyimagenet")


def load_source(name: str, from_dir: Path | None = None, cache: Path = Path("data/downloads")) -> DatasetArrays:
    """Load dataset ``name`` from the original files in ``from_dir``, or download them into ``cache``.

    ``digits`` ships with scikit-learn and needs neither.
    """
    if name == "digits":
        return digits.load()
    loaders = {"mnist": mnist.load, "cifar10": cifar10.load, "tinyimagenet": tinyimagenet.load}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; expected one of {SOURCES}")
    if from_dir is not None and not Path(from_dir).is_dir():
        raise FileNotFoundError(f"--from {from_dir}: no such directory")
    return loaders[name](from_dir, Path(cache))
