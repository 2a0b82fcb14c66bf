"""The prepared-dataset format: one ``.npz`` of arrays plus a metadata ``.json``, written atomically.

Layout of ``<name>.npz``:
    ``x_train`` uint8 ``[N, C, H, W]``, ``y_train`` int64 ``[N]``, ``x_test`` uint8 ``[M, C, H, W]``,
    ``y_test`` int64 ``[M]``. Pixel values are integers in ``[0, max_value]``; the model sees
    ``x / max_value`` in [0, 1] (``max_value`` is 255, or 16 for scikit-learn's digits).
``<name>.json`` records the source, the verified checksums, shapes, class names, the split and
``arrays_sha256``, a digest of the arrays' content that the experiments' stages check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_open, content_digest, write_json

KEYS = ("x_train", "y_train", "x_test", "y_test")


def prepared_folder(dataset: str) -> Path:
    """``data/<dataset>``: where the pipeline prepares a dataset once for every experiment using it."""
    return Path("data") / dataset


def describe_prepared(data_dir: str | Path, dataset: str) -> tuple[list[int], int]:
    """Input shape ``[C, H, W]`` and class count of a prepared dataset, from its metadata alone."""
    meta = json.loads((Path(data_dir) / f"{dataset}.json").read_text())
    return meta["shapes"]["x_train"][1:], len(meta["classes"])


@dataclass
class DatasetArrays:
    """A prepared dataset held in memory as numpy arrays (see the module docstring for the layout)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    max_value: int = 255
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(f"x_{split} must be uint8 [N, C, H, W], got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise ValueError(f"y_{split} must be int64 [{len(x)}], got {y.dtype} {y.shape}")
            if len(y) and not 0 <= y.min() <= y.max() < len(self.classes):
                raise ValueError(f"y_{split} has labels outside [0, {len(self.classes)})")

    def describe(self) -> dict:
        return {
            "classes": self.classes, "max_value": self.max_value,
            "shapes": {k: list(getattr(self, k).shape) for k in KEYS},
            "layout": "x_*: uint8 [N, C, H, W] in [0, max_value]; y_*: int64 [N]",
        }

    def save(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.npz`` then ``<name>.json`` atomically; returns both paths."""
        directory = Path(directory)
        npz, meta = directory / f"{name}.npz", directory / f"{name}.json"
        arrays = {k: getattr(self, k) for k in KEYS}
        with atomic_open(npz) as handle:
            np.savez(handle, **arrays)
        write_json(meta, {**self.metadata, **self.describe(), "dataset": name,
                          "arrays_sha256": content_digest(arrays)})
        return npz, meta

    @classmethod
    def load(cls, directory: Path, name: str) -> DatasetArrays:
        directory = Path(directory)
        meta = json.loads((directory / f"{name}.json").read_text())
        with np.load(directory / f"{name}.npz") as arrays:
            data = {k: arrays[k] for k in KEYS}
        return cls(**data, classes=meta["classes"], max_value=meta["max_value"], metadata=meta)
