"""Datasets: readers of the original files (``sources``), the prepared-array format (``arrays``),
batched on-device augmentation (``augment``)."""

SOURCES = ("digits", "mnist", "mnist_t10k", "cifar10", "tinyimagenet")  # the paper's datasets, by name
