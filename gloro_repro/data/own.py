"""Your own data, declared in params.yaml alone: ``sources.<name>: {npz: FILE}`` or ``{imagefolder: DIR}``.

* ``npz``: an archive holding ``x_train``, ``y_train``, ``x_test``, ``y_test``; images uint8
  ``[N, H, W]`` or ``[N, H, W, C]``, labels integers 0..K-1.
* ``imagefolder``: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` image files (PNG, JPEG, ...
  whatever Pillow reads); classes are the train folder's subfolder names, sorted.

Every check runs before anything is written, and a failure names the file and what was expected.
The prepared record keeps the class names and a sha256 of the source (the file, or every file of
the folder with its path).
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from ..io import file_digest
from .arrays import KEYS, DatasetArrays

SPLITS = ("train", "test")


class BadDataError(ValueError):
    """A user dataset that cannot be prepared; the message names the file and what was expected."""


def _images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 ``[N, H, W]`` or ``[N, H, W, C]`` as ``[N, C, H, W]``."""
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise BadDataError(f"{where}: contains NaN; expected uint8 pixel values 0..255")
    if x.dtype != np.uint8:
        raise BadDataError(f"{where}: dtype {x.dtype}, expected uint8 pixel values 0..255 (from floats in [0, 1]: "
                           "(x * 255).round().astype(np.uint8))")
    if x.ndim not in (3, 4):
        raise BadDataError(f"{where}: shape {list(x.shape)}, expected [N, H, W] or [N, H, W, C]")
    if len(x) == 0:
        raise BadDataError(f"{where}: empty split (no images)")
    return np.ascontiguousarray(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise BadDataError(f"{where}: dtype {y.dtype}, expected integer class labels 0..K-1")
    if y.shape != (n,):
        raise BadDataError(f"{where}: shape {list(y.shape)}, expected [{n}] (one label per image)")
    return y.astype(np.int64)


def checked_dataset(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    where: str, classes: list[str] | None = None, source: dict | None = None) -> DatasetArrays:
    """Validate arrays in the numpy/PIL layout into ``DatasetArrays``; the class count comes from
    the training labels (0..K-1, every class present) unless ``classes`` names them."""
    x = {split: _images(value, f"{where}: x_{split}") for split, value in zip(SPLITS, (x_train, x_test))}
    y = {split: _labels(value, len(x[split]), f"{where}: y_{split}") for split, value in zip(SPLITS, (y_train, y_test))}
    if x["train"].shape[1:] != x["test"].shape[1:]:
        raise BadDataError(f"{where}: x_test images have shape {list(x['test'].shape[1:])} [C, H, W], x_train's "
                           f"{list(x['train'].shape[1:])}; expected one size")
    k = len(classes) if classes is not None else int(y["train"].max()) + 1
    missing = sorted(set(range(k)) - set(np.unique(y["train"]).tolist()))
    if y["train"].min() < 0 or missing:
        raise BadDataError(f"{where}: y_train labels in [{y['train'].min()}, {y['train'].max()}]; expected every "
                           f"class 0..{k - 1}" + (f" (missing {missing[:10]})" if missing else ""))
    if y["test"].min() < 0 or y["test"].max() >= k:
        raise BadDataError(f"{where}: y_test labels in [{y['test'].min()}, {y['test'].max()}]; expected 0..{k - 1} "
                           "(the classes of y_train)")
    return DatasetArrays(x["train"], y["train"], x["test"], y["test"], classes or [str(i) for i in range(k)],
                         max_value=255, metadata={"source": source or {}})


def read_npz(path: Path) -> DatasetArrays:
    """An npz archive with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise BadDataError(f"{path}: no such file (sources: {{npz: FILE}})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in KEYS if key in archive}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise BadDataError(f"{path}: not a readable npz archive ({type(error).__name__}: {error})") from None
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise BadDataError(f"{path}: missing arrays {missing}; expected {', '.join(KEYS)}")
    return checked_dataset(**arrays, where=str(path), source={"npz": str(path), "sha256": file_digest(path)})


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB") if image.mode in ("P", "RGBA", "CMYK", "YCbCr") else image
            if image.mode not in ("L", "RGB"):
                raise BadDataError(f"{path}: image mode {image.mode}; expected grayscale (L) or RGB")
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise BadDataError(f"{path}: unreadable image ({type(error).__name__}: {error})") from None


def read_imagefolder(root: Path) -> DatasetArrays:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` image files (see the module docstring)."""
    root = Path(root)
    for split in SPLITS:
        if not (root / split).is_dir():
            raise BadDataError(f"{root / split}: no such folder; expected {root}/train/<class>/* and "
                               f"{root}/test/<class>/* (sources: {{imagefolder: DIR}})")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise BadDataError(f"{root / 'train'}: no class folders; expected {root}/train/<class>/<image files>")
    digest, arrays, first = hashlib.sha256(), {}, None
    for split in SPLITS:
        unknown = sorted({p.name for p in (root / split).iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise BadDataError(f"{root / split}: class folders {unknown} have no folder in {root / 'train'}")
        images, labels = [], []
        for label, name in enumerate(classes):
            folder = root / split / name
            files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            if split == "train" and not files:
                raise BadDataError(f"{folder}: a class folder with no images")
            for path in files:
                image = _read_image(path)
                first = first or (path, image.shape)
                if image.shape != first[1]:
                    raise BadDataError(f"{path}: image of shape {list(image.shape)} [H, W(, C)], but {first[0]} is "
                                       f"{list(first[1])}; expected one size (resize them first)")
                digest.update(f"{path.relative_to(root)}\n".encode() + path.read_bytes())
                images.append(image)
                labels.append(label)
        if not images:
            raise BadDataError(f"{root / split}: empty split (no images)")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = np.stack(images), np.array(labels, dtype=np.int64)
    return checked_dataset(**arrays, where=str(root), classes=classes,
                           source={"imagefolder": str(root), "sha256": digest.hexdigest(),
                                   "files": sum(len(arrays[f"y_{s}"]) for s in SPLITS)})


READERS = {"npz": read_npz, "imagefolder": read_imagefolder}
