"""DVC stage: prepare an experiment's dataset as ``data/<experiment>/<dataset>.npz`` + ``.json``.

    python -m pipeline.stages.prepare digits_minmax        # the experiment's dataset, per params.yaml
    python -m pipeline.stages.prepare --dataset mnist --from /path/to/original/files --out data/mnist

Sources are verified by checksum before anything is written; on any error nothing is written.
In the pipeline, ``sources.<dataset>`` in params.yaml names a folder holding the original files
(null: download them into ``data/downloads``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.config import ConfigError, load_params
from pipeline.data.sources import SOURCES, load_source
from pipeline.data.verify import DataIntegrityError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", help="experiment name from params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--dataset", choices=SOURCES, help="prepare this dataset instead of an experiment's")
    parser.add_argument("--from", dest="from_dir", type=Path, default=None,
                        help="with --dataset: read the original files from this folder instead of downloading "
                             "them (MNIST: the four .gz IDX files; CIFAR-10: cifar-10-python.tar.gz; "
                             "Tiny-ImageNet: tiny-imagenet-200.zip)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/<experiment or dataset>)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"),
                        help="where downloads are kept (default: data/downloads)")
    args = parser.parse_args(argv)
    if (args.experiment is None) == (args.dataset is None):
        parser.error("give an experiment name, or --dataset (not both)")
    dataset, from_dir, out = args.dataset, args.from_dir, args.out
    try:
        if args.experiment is not None:
            params = load_params(args.params)
            dataset = params.experiment(args.experiment).dataset
            from_dir = params.sources.get(dataset)
        out = out or Path("data") / (args.experiment or dataset)
        start = time.perf_counter()
        arrays = load_source(dataset, from_dir and Path(from_dir), args.cache)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DataIntegrityError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    npz, meta = arrays.save(out, dataset)
    print(f"{dataset}: {len(arrays.x_train)} train + {len(arrays.x_test)} test images "
          f"{list(arrays.x_train.shape[1:])} -> {npz}, {meta} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
