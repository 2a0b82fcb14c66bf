"""CIFAR-10 read from the original ``cifar-10-python.tar.gz``, verified by its md5."""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10

from .arrays import DatasetArrays
from .verify import DataIntegrityError, verify_file

ARCHIVE, ARCHIVE_MD5, URL = CIFAR10.filename, CIFAR10.tgz_md5, CIFAR10.url
FOLDER = CIFAR10.base_folder
TRAIN_BATCHES = [name for name, _ in CIFAR10.train_list]
TEST_BATCHES = [name for name, _ in CIFAR10.test_list]


def _unpickle(tar: tarfile.TarFile, member: str, archive: Path) -> dict:
    try:
        handle = tar.extractfile(f"{FOLDER}/{member}")
    except KeyError:
        raise DataIntegrityError(f"{archive} has no member {FOLDER}/{member}; is it the original CIFAR-10 archive?") from None
    return pickle.load(handle, encoding="latin1")


def read_archive(archive: Path) -> DatasetArrays:
    """Verify and read the archive in place (no extraction to disk)."""
    verify_file(archive, ARCHIVE_MD5)
    with tarfile.open(archive, "r:gz") as tar:
        def batches(names):
            parts = [_unpickle(tar, name, archive) for name in names]
            x = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32).astype(np.uint8)
            return x, np.concatenate([p["labels"] for p in parts]).astype(np.int64)
        x_train, y_train = batches(TRAIN_BATCHES)
        x_test, y_test = batches(TEST_BATCHES)
        classes = _unpickle(tar, CIFAR10.meta["filename"], archive)[CIFAR10.meta["key"]]
    return DatasetArrays(x_train, y_train, x_test, y_test, classes=list(classes),
                         metadata={"source": f"CIFAR-10 ({URL})", "md5": {ARCHIVE: ARCHIVE_MD5},
                                   "split": "the official 50,000 / 10,000 split"})

