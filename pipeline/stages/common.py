"""What every stage entry point shares: the experiment argument, params loading, error exits."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from pipeline.config import ConfigError, Experiment, Params, load_params


def experiment_parser(doc: str) -> argparse.ArgumentParser:
    """An argparse parser taking the experiment name and the params file (no hyperparameters)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="an experiment name from params.yaml (e.g. digits_minmax)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return parser


def run_stage(doc: str, body: Callable[[Params, Experiment], int | None], argv=None) -> int:
    """Parse the command line, validate params, run ``body`` (its return value is the exit status;
    None means 0); a bad params value exits 2 with its message."""
    args = experiment_parser(doc).parse_args(argv)
    try:
        params = load_params(args.params)
        experiment = params.experiment(args.experiment)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return body(params, experiment) or 0
