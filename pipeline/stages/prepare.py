"""DVC stage: prepare one dataset as ``<out>/<dataset>.npz`` + ``<out>/<dataset>.json``.

    python -m pipeline.stages.prepare digits
    python -m pipeline.stages.prepare mnist --from /path/to/original/files

Sources are verified by checksum before anything is written; on any error nothing is written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.data.sources import SOURCES, load_source
from pipeline.data.verify import DataIntegrityError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=SOURCES)
    parser.add_argument("--from", dest="from_dir", type=Path, default=None,
                        help="read the original files from this folder instead of downloading them "
                             "(MNIST: the four .gz IDX files; CIFAR-10: cifar-10-python.tar.gz; "
                             "Tiny-ImageNet: tiny-imagenet-200.zip)")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder (default: data)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"),
                        help="where downloads are kept (default: data/downloads)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        arrays = load_source(args.dataset, args.from_dir, args.cache)
    except (DataIntegrityError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    npz, meta = arrays.save(args.out, args.dataset)
    print(f"{args.dataset}: {len(arrays.x_train)} train + {len(arrays.x_test)} test images "
          f"{list(arrays.x_train.shape[1:])} -> {npz}, {meta} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
