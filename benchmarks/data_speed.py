"""Data-layer timings: load times and augmentation throughput.

Augmentation: 256-image batches of 32x32x3 through the batched ``Augment('default')`` against a
per-item loop of torchvision ``transforms.v2`` (RandomAffine + RandomHorizontalFlip with the
closest settings), measured in the same run.

    .venv/bin/python -m benchmarks.data_speed --mnist ../shared/data/mnist
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torchvision.transforms import v2

from gloro_repro.data import digits
from gloro_repro.data.augment import Augment
from gloro_repro.data.mnist import read_mnist_split


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--batches", type=int, default=20, help="batches per timing")
    args = parser.parse_args(argv)
    batch = torch.rand(256, 3, 32, 32)
    batched = Augment("default", seed=0)
    per_item = v2.Compose([v2.RandomAffine(degrees=20, translate=(0.2, 0.2), scale=(0.9, 1.1), shear=0.1,
                                           interpolation=v2.InterpolationMode.BILINEAR),
                           v2.RandomHorizontalFlip()])
    t_batched = best_of(lambda: [batched(batch) for _ in range(args.batches)], 3)
    t_loop = best_of(lambda: [torch.stack([per_item(img) for img in batch]) for _ in range(args.batches)], 3)
    images = 256 * args.batches
    print(json.dumps({
        "digits_load_s": round(best_of(digits.load, 3), 4),
        "mnist_10k_verify_and_read_s": round(best_of(lambda: read_mnist_split(args.mnist, "test"), 3), 4),
        "augment_batched_img_per_s": round(images / t_batched),
        "augment_per_item_v2_img_per_s": round(images / t_loop),
        "speedup": round(t_loop / t_batched, 1),
        "threads": torch.get_num_threads(),
    }, indent=1))


if __name__ == "__main__":
    main()
