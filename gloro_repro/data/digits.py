"""scikit-learn's bundled 8x8 digits: the offline default dataset."""
from __future__ import annotations

import numpy as np
import sklearn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .arrays import DatasetArrays

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def load() -> DatasetArrays:
    """1,797 images of 8x8 pixels with values 0..16, split 75/25 stratified by class with a fixed seed."""
    data = load_digits()
    images = data.images.astype(np.uint8)[:, None]  # [1797, 1, 8, 8], exact integers 0..16
    labels = data.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                           stratify=labels, random_state=SPLIT_SEED)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return DatasetArrays(
        images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        classes=[str(c) for c in data.target_names], max_value=16,
        metadata={"source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
                  "split": {"method": "stratified train_test_split", "test_fraction": TEST_FRACTION,
                            "seed": SPLIT_SEED, "test_indices": test_idx.tolist()}})
