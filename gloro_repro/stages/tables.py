"""DVC stage: regenerate the paper's tables from every experiment's results.

    python -m gloro_repro.stages.tables

Writes ``results/metrics/<experiment>.json`` (the metrics contract), ``results/table_{D1a,D1b,
D1c,B1,B2,C1}.{md,csv}`` and ``results/figure_radius.png``, and logs the tables to W&B.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gloro_repro import wandb_first  # noqa: F401  (before torch)
from gloro_repro.config import ConfigError, load_params
from gloro_repro.console import quiet_libraries
from gloro_repro.tables import write_all
from gloro_repro.tracking import start_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results)")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        params = load_params(args.params)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tables = write_all(params, args.results)
    import wandb

    run = start_run(params.wandb, "tables", "tables", {"run": list(params.run)})
    run.log({name: wandb.Table(dataframe=df.astype(str)) for name, df in tables.items()})
    run.finish()
    print("\n".join(f"{args.results / name}.md: {len(df)} rows" for name, df in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
