"""DVC stage: record which prepared dataset an experiment uses, with the digest of its arrays.

    python -m pipeline.stages.dataset <experiment>

Writes ``models/<experiment>/dataset.json`` (``dataset``, ``arrays_sha256``) from
``data/<dataset>/<dataset>.json``. Every dataset is prepared once, into ``data/<dataset>/``, and
shared; the experiment's later stages depend on this record instead of on that folder, so
preparing another dataset, or the same arrays again, re-runs none of them. They check the
digest before reading the arrays.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.io import write_json
from pipeline.stages.common import dataset_record, run_stage


def record(params, experiment) -> int:
    dataset = experiment.data.dataset
    meta = Path("data") / dataset / f"{dataset}.json"
    if not meta.exists():
        print(f"error: {meta} not found; prepare it first: python -m pipeline.stages.prepare {dataset}", file=sys.stderr)
        return 1
    digest = json.loads(meta.read_text())["arrays_sha256"]
    write_json(dataset_record(experiment), {"dataset": dataset, "arrays_sha256": digest})
    print(f"{experiment.name}: data/{dataset} (arrays {digest[:12]})")
    return 0


def main(argv=None) -> int:
    return run_stage(__doc__, record, argv)


if __name__ == "__main__":
    sys.exit(main())
