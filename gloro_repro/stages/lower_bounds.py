"""DVC stage: Appendix F's optimised lower bounds on the Lipschitz constant of the selected model.

    python -m gloro_repro.stages.lower_bounds <experiment>

Global: the largest margin ratio |m(x1) - m(x2)| / ||x1 - x2|| found by Adam from
``global_pairs`` random test-point pairs in ``global_steps`` steps. Local: the mean over
``local_centres`` test points x0 of the largest ratio with x1, x2 kept in the eps-ball around x0
(``local_steps`` steps). Every ratio is attained by a concrete pair, re-checked in float64.
Writes ``results/lower_bounds/<experiment>.json`` with the budget used and the device it ran on
(``GLORO_ACCELERATOR``), in IEEE float32.
"""
from __future__ import annotations

import sys
import time

import torch

from gloro_repro.artifacts import own_network
from gloro_repro.data.arrays import DatasetArrays
from gloro_repro.exported import read_bounds
from gloro_repro.gloro import float32_precision, global_lower_bound, local_lower_bound
from gloro_repro.hardware import Hardware, describe
from gloro_repro.io import write_json
from gloro_repro.stages.common import check_exported_eps, prepared_data, run_stage


def lower_bounds(params, experiment) -> None:
    name, budget = experiment.name, experiment.lower_bound
    device = Hardware.from_env().device()
    data = DatasetArrays.load(prepared_data(experiment), experiment.data.dataset)
    pool = torch.from_numpy(data.x_test).to(device).float() / data.max_value
    folder = f"models/{name}/best"
    bounds = read_bounds(folder)  # model.pt2 itself is certify's to check; its weights are gloro.pt's
    check_exported_eps(bounds["eps"], experiment, folder)
    f = own_network(folder, bounds).f.to(device)  # model.pt2's function, a cheaper backward
    generator = torch.Generator(device=device).manual_seed(experiment.training.seed)
    with float32_precision("ieee"):
        start = time.perf_counter()
        print(f"{name}: global lower bound, {budget.global_pairs} pairs x {budget.global_steps} Adam steps ...",
              flush=True)
        best_global = global_lower_bound(f, pool, budget.global_pairs, budget.global_steps, budget.lr, generator)
        mid = time.perf_counter()
        print(f"{name}: {best_global.value:.4g} in {mid - start:.1f} s; local lower bound, {budget.local_centres} "
              f"centres x {budget.local_steps} steps ...", flush=True)
        local = local_lower_bound(f, pool, experiment.eps_test, budget.local_centres, budget.local_steps, budget.lr,
                                  generator)
    result = {"experiment": name, "lipschitz_global_lb": best_global.value, "lipschitz_local_lb": local.value,
              "lipschitz_global_ub": float(bounds["K"].max()), "eps": experiment.eps_test,
              "budget": vars(budget) | {"paper": "100 pairs x 7500 steps; 100 centres x 5000 steps"},
              "global_seconds": mid - start, "local_seconds": time.perf_counter() - mid, "device": describe(device),
              "torch_threads": torch.get_num_threads()}
    write_json(f"results/lower_bounds/{name}.json", result)
    print(f"{name}: global lower bound {best_global.value:.4g}, mean local lower bound {local.value:.4g} "
          f"(upper bound {result['lipschitz_global_ub']:.4g})")


def main(argv=None) -> int:
    return run_stage(__doc__, lower_bounds, argv)


if __name__ == "__main__":
    sys.exit(main())
