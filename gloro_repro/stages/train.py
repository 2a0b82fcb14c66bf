"""DVC stage: robust GloRo training (or Standard training) after the warm-up, resumable.

    python -m gloro_repro.stages.train <experiment>

Writes ``models/<experiment>/train/{best,last}.ckpt`` (best = highest VRA on the validation
split, clean accuracy for Standard models) and ``results/training/<experiment>.json``. If a
previous run was killed, the same command resumes from ``last.ckpt``; a previous run it cannot
resume (other trained settings, or finished) is moved to ``models/<experiment>/set_aside/``.
Runs on the hardware the ``GLORO_*`` variables name (``gloro_repro.hardware``), on several devices with DDP.
"""
from __future__ import annotations

import sys

from gloro_repro import wandb_first  # noqa: F401  (before torch)
from gloro_repro.io import write_json
from gloro_repro.stages.common import prepared_data, run_stage


def train(params, experiment) -> None:
    from gloro_repro.training import train as run

    name = experiment.name
    for note in experiment.ramp_notes():
        print(f"note: {note}", file=sys.stderr)
    summary = run(params, experiment, prepared_data(experiment), f"models/{name}/warmup.ckpt", f"models/{name}/train")
    if summary is None:  # a DDP rank other than 0: rank 0 writes the results
        return
    write_json(f"results/training/{name}.json", summary)
    chosen = "" if summary["best_val"] is None else f" {summary['best_val']:.4f}"
    print(f"{name}: best ({summary['selection']}){chosen} at epoch {summary['best_epoch']}"
          f" of {summary['epochs']}, {summary['sec_per_epoch']:.2f} s/epoch")


def main(argv=None) -> int:
    return run_stage(__doc__, train, argv)


if __name__ == "__main__":
    sys.exit(main())
