"""DVC stage: warm-up epochs of plain cross-entropy (Lee et al., 2020), the robust run's start.

    python -m gloro_repro.stages.warmup <experiment>

Writes ``models/<experiment>/warmup.ckpt`` (with 0 warm-up epochs: the seeded initial weights).
"""
from __future__ import annotations

import sys

from gloro_repro.artifacts import save_initial
from gloro_repro.stages.common import prepared_data, run_stage


def warm_up(params, experiment) -> None:
    checkpoint, data = f"models/{experiment.name}/warmup.ckpt", prepared_data(experiment)
    if experiment.training.warmup:
        from gloro_repro.training import warm_up as run  # Lightning: imported only when there are epochs to train

        run(params, experiment, data, checkpoint)
    else:
        save_initial(experiment, data, checkpoint)
    print(f"{experiment.name}: {experiment.training.warmup} warm-up epoch(s) -> {checkpoint}")


def main(argv=None) -> int:
    return run_stage(__doc__, warm_up, argv)


if __name__ == "__main__":
    sys.exit(main())
