"""DVC stage: prepare a dataset once, as ``data/<dataset>/<dataset>.npz`` + ``.json``, for every
experiment that uses it.

    python -m gloro_repro.stages.prepare digits                     # the source named by params.yaml
    python -m gloro_repro.stages.prepare mnist --from /path/to/original/files --out /tmp/mnist
    python -m gloro_repro.stages.prepare mine     # sources.mine: {npz: FILE} or {imagefolder: DIR}

Sources are verified (checksums of the paper's files; the layout, labels and images of your own)
before anything is written; on any error nothing is written. For the paper's datasets,
``sources.<dataset>`` in params.yaml names a folder holding the original files (null: download
them into ``downloads/``; digits ship with scikit-learn); for your own, ``{npz: FILE}`` or
``{imagefolder: DIR}`` (see ``gloro_repro/data/own.py``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gloro_repro.config import ConfigError, load_params
from gloro_repro.data import SOURCES
from gloro_repro.data.arrays import prepared_folder
from gloro_repro.data.own import BadDataError
from gloro_repro.data.sources import DownloadError, load_source
from gloro_repro.data.verify import DataIntegrityError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help=f"the dataset to prepare: one of {', '.join(SOURCES)}, or one of your own "
                                        "declared under sources in the params file")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file whose sources.<dataset> names the original files (default: params.yaml)")
    parser.add_argument("--from", dest="from_dir", type=Path, default=None,
                        help="read the original files from this folder instead of sources.<dataset> "
                             "(MNIST: the four .gz IDX files; CIFAR-10: cifar-10-python.tar.gz; "
                             "Tiny-ImageNet: tiny-imagenet-200.zip)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/<dataset>)")
    parser.add_argument("--cache", type=Path, default=Path("downloads"),
                        help="where downloads are kept (default: downloads)")
    args = parser.parse_args(argv)
    dataset, from_dir = args.dataset, args.from_dir
    try:
        if from_dir is None:
            from_dir = load_params(args.params).sources.get(dataset)
        if dataset not in SOURCES and not isinstance(from_dir, dict):
            raise ConfigError(f"unknown dataset {dataset!r}: expected one of {list(SOURCES)}, or a dataset of your "
                              f"own declared in {args.params} as sources.{dataset}: {{npz: FILE}} or "
                              "{imagefolder: DIR}")
        start = time.perf_counter()
        arrays = load_source(dataset, Path(from_dir) if isinstance(from_dir, str) else from_dir, args.cache)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DataIntegrityError, BadDataError, FileNotFoundError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    npz, meta = arrays.save(args.out or prepared_folder(dataset), dataset)
    print(f"{dataset}: {len(arrays.x_train)} train + {len(arrays.x_test)} test images "
          f"{list(arrays.x_train.shape[1:])} -> {npz}, {meta} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
