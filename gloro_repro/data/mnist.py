"""MNIST from the original IDX files, verified against the md5 sums torchvision checks."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import extract_archive

from .arrays import DatasetArrays
from .verify import verify_file

MD5 = dict(MNIST.resources)  # file name -> md5
SPLITS = {"train": "train", "test": "t10k"}


def read_mnist_split(directory: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and verify one split (``train`` or ``test``) from the original ``.gz`` IDX files.

    Returns uint8 images ``[N, 1, 28, 28]`` and int64 labels ``[N]``.
    """
    prefix = SPLITS[split]
    images_gz, labels_gz = (verify_file(Path(directory) / name, MD5[name])
                            for name in (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        images = read_image_file(extract_archive(images_gz, tmp))
        labels = read_label_file(extract_archive(labels_gz, tmp))
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels in {directory}")
    return images[:, None].contiguous(), labels.long()


def load(from_dir: Path | None, cache: Path) -> DatasetArrays:
    """MNIST from ``from_dir`` (the four original ``.gz`` files) or downloaded into ``cache``."""
    if from_dir is None:
        MNIST(cache, download=True)  # torchvision verifies each file's md5 as it downloads
        from_dir = Path(cache) / "MNIST" / "raw"
    x_train, y_train = read_mnist_split(from_dir, "train")
    x_test, y_test = read_mnist_split(from_dir, "test")
    return DatasetArrays(x_train.numpy(), y_train.numpy(), x_test.numpy(), y_test.numpy(),
                         classes=[str(i) for i in range(10)],
                         metadata={"source": "MNIST (LeCun, Cortes, Burges), original IDX files", "md5": MD5,
                                   "split": "the official 60,000 / 10,000 split"})


T10K_TRAIN = 8000


def load_t10k(from_dir: Path | None, cache: Path) -> DatasetArrays:
    """A proxy for MNIST when only its official test files are at hand (as in ``../shared/data/mnist``):
    the first 8,000 of the 10,000 t10k images to train, the last 2,000 to test. Never downloads."""
    if from_dir is None:
        raise FileNotFoundError("mnist_t10k reads t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from a "
                                "folder: set sources.mnist_t10k in params.yaml (e.g. ../shared/data/mnist)")
    x, y = read_mnist_split(from_dir, "test")
    x, y = x.numpy(), y.numpy()
    return DatasetArrays(x[:T10K_TRAIN], y[:T10K_TRAIN], x[T10K_TRAIN:], y[T10K_TRAIN:],
                         classes=[str(i) for i in range(10)],
                         metadata={"source": "MNIST official test set (t10k), original IDX files", "md5": MD5,
                                   "split": f"proxy: t10k images [0, {T10K_TRAIN}) train, [{T10K_TRAIN}, 10000) test"})
