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
