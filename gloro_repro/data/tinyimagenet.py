"""Tiny-ImageNet-200 read from the original ``tiny-imagenet-200.zip``, verified by its md5.

Training images come from ``train/<wnid>/images``; the labelled test split is the official
validation set (``val/images`` with labels from ``val/val_annotations.txt``), since the test
set's labels were never released. Class order is that of ``wnids.txt``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from tqdm import tqdm

from .arrays import DatasetArrays
from .verify import DataIntegrityError, verify_file

ARCHIVE = "tiny-imagenet-200.zip"
ARCHIVE_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ROOT = "tiny-imagenet-200"


def _read_text(archive: zipfile.ZipFile, name: str, path: Path) -> str:
    try:
        return archive.read(f"{ROOT}/{name}").decode()
    except KeyError:
        raise DataIntegrityError(f"{path} has no member {ROOT}/{name}; is it the original Tiny-ImageNet archive?") from None


def _decode(archive: zipfile.ZipFile, members: list[str], desc: str) -> np.ndarray:
    """Decode JPEGs to uint8 RGB ``[N, 3, 64, 64]`` (grayscale images are expanded to RGB)."""
    images = np.empty((len(members), 3, 64, 64), dtype=np.uint8)
    for i, member in enumerate(tqdm(members, desc=desc, unit="img", mininterval=2.0)):
        data = torch.frombuffer(bytearray(archive.read(member)), dtype=torch.uint8)
        images[i] = decode_image(data, mode=ImageReadMode.RGB).numpy()
    return images


def read_archive(path: Path) -> DatasetArrays:
    """Verify and read the archive in place (no extraction to disk)."""
    verify_file(path, ARCHIVE_MD5)
    with zipfile.ZipFile(path) as archive:
        wnids = _read_text(archive, "wnids.txt", path).split()
        label = {wnid: i for i, wnid in enumerate(wnids)}
        words = dict(line.split("\t", 1) for line in _read_text(archive, "words.txt", path).splitlines() if "\t" in line)
        train = sorted(n for n in archive.namelist()
                       if n.startswith(f"{ROOT}/train/") and "/images/" in n and n.lower().endswith(".jpeg"))
        y_train = np.array([label[n.split("/")[2]] for n in train], dtype=np.int64)
        val = [line.split("\t")[:2] for line in _read_text(archive, "val/val_annotations.txt", path).splitlines() if line]
        y_test = np.array([label[wnid] for _, wnid in val], dtype=np.int64)
        x_train = _decode(archive, train, "tiny-imagenet train")
        x_test = _decode(archive, [f"{ROOT}/val/images/{name}" for name, _ in val], "tiny-imagenet val")
    return DatasetArrays(x_train, y_train, x_test, y_test,
                         classes=[words.get(w, w).strip() for w in wnids],
                         metadata={"source": f"Tiny-ImageNet-200 ({URL})", "md5": {ARCHIVE: ARCHIVE_MD5},
                                   "wnids": wnids, "split": "train (500 per class) / official val as test (50 per class)"})

