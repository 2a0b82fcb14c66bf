"""DVC stage: power iteration to convergence on the selected and last checkpoints, then export.

    python -m gloro_repro.stages.converge <experiment>

For ``best`` (selected on the validation split) and ``last``: runs every layer's power iteration
until the estimate's remaining rise is below ``converge_tol`` (relative; see
``LipschitzLinear.converge``), computes the provable per-layer bounds, and writes
``models/<experiment>/<best|last>/`` = ``gloro.pt``, ``model.pt2``, ``lipschitz.json`` (see
``gloro_repro.artifacts``). Power iteration runs on the ``GLORO_ACCELERATOR``
device in IEEE float32; the provable bounds and the export run on the CPU in float64, so they are
the same whatever machine converged the model.
"""
from __future__ import annotations

import sys
import time

import torch

from gloro_repro.artifacts import SELECTIONS, export_converged, read_checkpoint
from gloro_repro.gloro.precision import float32_precision
from gloro_repro.hardware import Hardware, describe
from gloro_repro.stages.common import StaleInputError, prepared_labels, run_stage


def converge(params, experiment) -> None:
    device = Hardware.from_env().device()
    for which in SELECTIONS:
        checkpoint = f"models/{experiment.name}/train/{which}.ckpt"
        trained, net, info = read_checkpoint(checkpoint)
        if trained.trained_settings() != experiment.trained_settings():
            raise StaleInputError(f"{checkpoint} was trained with other settings than params.yaml's "
                                  f"experiments.{experiment.name}; run `dvc repro`")
        start = time.perf_counter()
        with float32_precision("ieee"):
            iterations = net.to(device).converge(experiment.training.converge_tol)
        info |= {"selection": which, **prepared_labels(experiment), "converge_tol": experiment.training.converge_tol,
                 "converge_device": describe(device), "torch_threads": torch.get_num_threads(),
                 "converge_iterations": iterations,
                 "converge_seconds": time.perf_counter() - start}
        net = net.cpu()
        summary = export_converged(net, experiment, info, f"models/{experiment.name}/{which}")
        print(f"{experiment.name}/{which} (epoch {info['epoch']}): {sum(iterations)} iterations, "
              f"layer product {summary['layer_product']:.4g} (provable {summary['layer_product_sound']:.4g})")


def main(argv=None) -> int:
    return run_stage(__doc__, converge, argv)


if __name__ == "__main__":
    sys.exit(main())
