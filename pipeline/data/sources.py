"""The dataset sources by name."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from types import ModuleType

from torchvision.datasets.utils import download_url

from . import SOURCES, cifar10, digits, mnist, tinyimagenet
from .arrays import DatasetArrays


def _read_original_archive(source: ModuleType, from_dir: Path | None, cache: Path) -> DatasetArrays:
    """Read ``source.ARCHIVE`` from ``from_dir``, or download it (md5-checked) into ``cache`` first."""
    if from_dir is None:
        download_url(source.URL, cache, source.ARCHIVE, source.ARCHIVE_MD5)
        from_dir = cache
    return source.read_archive(Path(from_dir) / source.ARCHIVE)


def load_source(name: str, from_dir: Path | None = None, cache: Path = Path("downloads")) -> DatasetArrays:
    """Load dataset ``name`` from the original files in ``from_dir``, or download them into ``cache``.

    ``digits`` ships with scikit-learn and needs neither.
    """
    if name == "digits":
        return digits.load()
    loaders = {"mnist": mnist.load, "mnist_t10k": mnist.load_t10k,
               "cifar10": partial(_read_original_archive, cifar10),
               "tinyimagenet": partial(_read_original_archive, tinyimagenet)}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; expected one of {SOURCES}")
    if from_dir is not None and not Path(from_dir).is_dir():
        raise FileNotFoundError(f"--from {from_dir}: no such directory")
    return loaders[name](from_dir, Path(cache))
