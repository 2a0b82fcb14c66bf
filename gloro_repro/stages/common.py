"""What every stage entry point shares: the experiment argument, params loading, error exits, and
the experiment's prepared dataset."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from gloro_repro.config import ConfigError, Experiment, Params, load_params
from gloro_repro.console import quiet_libraries
from gloro_repro.data.arrays import prepared_folder
from gloro_repro.hardware import Hardware, use_threads
from gloro_repro.io import MismatchError
from gloro_repro.preemption import PREEMPTED, Preempted


def experiment_parser(doc: str) -> argparse.ArgumentParser:
    """An argparse parser taking the experiment name and the params file (no hyperparameters)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="an experiment name from params.yaml (e.g. digits_minmax)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return parser


def run_stage(doc: str, body: Callable[[Params, Experiment], int | None], argv=None) -> int:
    """Parse the command line, validate params, run ``body`` (its return value is the exit status;
    None means 0) with torch's threads set (``GLORO_THREADS``); a bad params value or ``GLORO_*``
    hardware variable exits 2 with its message, a preempted training ``PREEMPTED`` (75) with what it kept."""
    args = experiment_parser(doc).parse_args(argv)
    quiet_libraries()
    try:
        params = load_params(args.params)
        experiment = params.experiment(args.experiment)
        use_threads(Hardware.from_env())
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return body(params, experiment) or 0
    except ConfigError as error:  # e.g. a batch the GLORO_* hardware cannot share
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MismatchError as error:  # stale data, a mismatched export: say which files
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Preempted as stop:  # SIGTERM or SIGUSR1 from a scheduler
        print(f"preempted by {stop}", file=sys.stderr)
        return PREEMPTED


class StaleInputError(MismatchError):
    """A stage's input no longer matches params.yaml (changed behind DVC's back): run ``dvc repro``."""


def dataset_record(experiment: Experiment) -> Path:
    """``models/<experiment>/dataset.json``: which prepared dataset the experiment uses, and its digest."""
    return Path("models") / experiment.name / "dataset.json"


def prepared_digest(dataset: str) -> str | None:
    """The ``arrays_sha256`` that ``data/<dataset>/<dataset>.json`` records, or None if not prepared."""
    meta = prepared_folder(dataset) / f"{dataset}.json"
    return json.loads(meta.read_text()).get("arrays_sha256") if meta.exists() else None


def prepared_data(experiment: Experiment) -> Path:
    """``data/<dataset>``, checked to hold the arrays that ``dataset_record`` names.

    The stages after ``dataset`` depend (in dvc.yaml) on that small record rather than on the shared
    folder, so preparing another dataset re-runs nothing of this experiment; this check makes sure
    the folder was not changed behind DVC's back.
    """
    folder = prepared_folder(experiment.data.dataset)
    record = json.loads(dataset_record(experiment).read_text())
    found = prepared_digest(experiment.data.dataset)
    if record.get("dataset") != experiment.data.dataset or found != record.get("arrays_sha256"):
        raise StaleInputError(f"{folder} holds {found and found[:12]!r}, but {dataset_record(experiment)} records "
                             f"{record.get('dataset')!r} with {str(record.get('arrays_sha256'))[:12]!r}; "
                             "run `dvc repro` to prepare and record the dataset again")
    return folder


def prepared_labels(experiment: Experiment) -> dict:
    """``classes`` and ``max_value`` of the experiment's prepared data, for the exported model's record."""
    meta = json.loads((prepared_data(experiment) / f"{experiment.data.dataset}.json").read_text())
    return {"classes": meta["classes"], "max_value": meta["max_value"]}


def check_exported_eps(eps: float, experiment: Experiment, folder) -> None:
    """The exported ``lipschitz.json`` is certified at the experiment's one test radius, ``eps_test``."""
    if eps != experiment.eps_test:
        raise StaleInputError(f"{folder}/lipschitz.json was exported at eps {eps}, but "
                              f"experiments.{experiment.name}.eps_test is {experiment.eps_test}; run `dvc repro`")
