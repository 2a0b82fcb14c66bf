"""The dataset sources: the paper's by name, and your own (``own.py``) by kind."""
from __future__ import annotations

import urllib.error
from functools import partial
from pathlib import Path
from types import ModuleType

from torchvision.datasets.utils import download_url

from . import SOURCES, cifar10, digits, mnist, own, tinyimagenet
from .arrays import DatasetArrays


def _read_original_archive(source: ModuleType, from_dir: Path | None, cache: Path) -> DatasetArrays:
    """Read ``source.ARCHIVE`` from ``from_dir``, or download it (md5-checked) into ``cache`` first."""
    if from_dir is None:
        download_url(source.URL, cache, source.ARCHIVE, source.ARCHIVE_MD5)
        from_dir = cache
    return source.read_archive(Path(from_dir) / source.ARCHIVE)


class DownloadError(ConnectionError):
    """A dataset could not be downloaded; the message names its files and how to use copies on disk."""


def _original_files(name: str) -> list[str]:
    return sorted(mnist.MD5) if name == "mnist" else [{"cifar10": cifar10, "tinyimagenet": tinyimagenet}[name].ARCHIVE]


def _download_failed(name: str, error: Exception) -> DownloadError:
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return DownloadError(
        f"could not download {name} ({', '.join(_original_files(name))}): {reason}. Offline? Copy those files "
        f"into a folder and name it in params.yaml (dvc exp run -S 'sources.{name}=/path/to/folder' ...), "
        f"or prepare it by hand: python -m gloro_repro.stages.prepare {name} --from /path/to/folder")


def load_source(name: str, from_dir: Path | dict | None = None, cache: Path = Path("downloads")) -> DatasetArrays:
    """Load dataset ``name`` from the original files in ``from_dir``, or download them into ``cache``;
    or your own data, ``from_dir`` being ``{"npz": FILE}`` or ``{"imagefolder": DIR}`` (``own.READERS``).

    ``digits`` ships with scikit-learn and needs neither.
    """
    if isinstance(from_dir, dict):
        ((kind, path),) = from_dir.items()
        return own.READERS[kind](Path(path))
    if name == "digits":
        return digits.load()
    loaders = {"mnist": mnist.load, "mnist_t10k": mnist.load_t10k,
               "cifar10": partial(_read_original_archive, cifar10),
               "tinyimagenet": partial(_read_original_archive, tinyimagenet)}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; expected one of {SOURCES}, or your own declared in params.yaml "
                         f"as sources.{name}: {{npz: FILE}} or {{imagefolder: DIR}}")
    if from_dir is not None and not Path(from_dir).is_dir():
        raise FileNotFoundError(f"--from {from_dir}: no such directory")
    try:
        return loaders[name](from_dir, Path(cache))
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        raise _download_failed(name, error) from None
    except RuntimeError as error:  # torchvision's MNIST wraps each mirror's failure
        if str(error).startswith("Error downloading"):
            raise _download_failed(name, error) from None
        raise
