"""DVC stage: record which prepared dataset an experiment uses, with the digest of its arrays.

    python -m gloro_repro.stages.dataset <experiment>

Writes ``models/<experiment>/dataset.json`` (``dataset``, ``arrays_sha256``) from
``data/<dataset>/<dataset>.json``. Every dataset is prepared once, into ``data/<dataset>/``, and
shared; the experiment's later stages depend on this record instead of on that folder, so
preparing another dataset, or the same arrays again, re-runs none of them. They check the
digest before reading the arrays.
"""
from __future__ import annotations

import sys

from gloro_repro.data.arrays import prepared_folder
from gloro_repro.io import write_json
from gloro_repro.stages.common import dataset_record, prepared_digest, run_stage


def record(params, experiment) -> int:
    dataset = experiment.data.dataset
    digest = prepared_digest(dataset)
    if digest is None:
        print(f"error: {prepared_folder(dataset)} holds no prepared {dataset}; prepare it first: "
              f"python -m gloro_repro.stages.prepare {dataset}", file=sys.stderr)
        return 1
    write_json(dataset_record(experiment), {"dataset": dataset, "arrays_sha256": digest})
    print(f"{experiment.name}: {prepared_folder(dataset)} (arrays {digest[:12]})")
    return 0


def main(argv=None) -> int:
    return run_stage(__doc__, record, argv)


if __name__ == "__main__":
    sys.exit(main())
