"""DVC stage: certify the test set with the exported model, under both bounds, and attack it.

    python -m gloro_repro.stages.certify <experiment>

For the validation-selected (``best``, the headline) and ``last`` models, using only their
exported ``model.pt2`` and ``lipschitz.json``: clean accuracy, accuracy under the L2 attack,
VRA with the power-iteration bound and with the provable bound, rejection rate, certification
time and memory, and the theorem checks. Writes ``results/certification/<experiment>.json`` and
the certified-accuracy-vs-radius curve ``results/plots/radius/<experiment>.csv``. Exits 1 if a
certificate is contradicted (after writing the numbers) or the export disagrees with the model.
Runs on the ``GLORO_ACCELERATOR`` device (recorded as ``device``), in IEEE arithmetic.
"""
from __future__ import annotations

import sys

from gloro_repro import wandb_first  # noqa: F401  (before torch)

# isort: split
import torch
import wandb

from gloro_repro.artifacts import SELECTIONS, own_network
from gloro_repro.data.arrays import DatasetArrays
from gloro_repro.evaluation import AttackSettings, certify_test_set, theorem_failures
from gloro_repro.exported import ExportedModel
from gloro_repro.gloro.model import BOUNDS
from gloro_repro.hardware import Hardware
from gloro_repro.io import atomic_open, write_json
from gloro_repro.stages.common import check_exported_eps, prepared_data, run_stage
from gloro_repro.tracking import start_run


def export_mismatches(net, exported: ExportedModel, x: torch.Tensor) -> int:
    """Inputs whose certified flag (under each bound) from the exported files differs from that of the
    project's own GloroNet (``own_network``), its bounds computed afresh; both run on x's device."""
    ours = ExportedModel.of(net).to(x.device)
    return sum(int((exported.certify(x, bound=b).certified != ours.certify(x, bound=b).certified).sum())
               for b in BOUNDS)


def certify(params, experiment) -> int:
    name = experiment.name
    device = Hardware.from_env().device()
    data = DatasetArrays.load(prepared_data(experiment), experiment.data.dataset)
    x = torch.from_numpy(data.x_test).to(device).float() / data.max_value
    y = torch.from_numpy(data.y_test).to(device)
    attack = AttackSettings(experiment.attack.steps, experiment.attack.restarts)
    results = {}
    for which in SELECTIONS:
        directory = f"models/{name}/{which}"
        model = ExportedModel.load(directory)
        check_exported_eps(model.eps, experiment, directory)
        if results and model.info["epoch"] == results["best"]["epoch"]:  # the same checkpoint
            results[which] = dict(results["best"])
            continue
        model, net = model.to(device), own_network(directory, model.info)
        print(f"{name}/{which} (epoch {model.info['epoch']}): certifying {len(x)} test points with both bounds, "
              f"then attacking them ({attack.steps} steps x {attack.restarts} restarts x {len(attack.objectives)} "
              "objectives, and plain PGD-50) and checking the theorems ...", flush=True)
        metrics = certify_test_set(model, x, y, attack, seed=experiment.training.seed, search=net.f.to(device))
        metrics |= {"epoch": model.info["epoch"], "lipschitz_global_ub": model.lipschitz_global_ub("power"),
                    "lipschitz_global_ub_sound": model.lipschitz_global_ub("sound"),
                    "lipschitz_layer_product": model.info["layer_product"],
                    "layer_bounds": [{key: layer[key] for key in ("layer", "method", "sound_over_power")}
                                     for layer in model.info["layers"]],
                    "export_mismatches": export_mismatches(net, model, x)}
        results[which] = metrics
    curve = results["best"].pop("radius_curve")
    results["last"].pop("radius_curve")
    summary = {"experiment": name, "selection": experiment.selection,
               **results["best"], "last": results["last"]}
    write_json(f"results/certification/{name}.json", summary)
    with atomic_open(f"results/plots/radius/{name}.csv", "w") as handle:
        handle.write("radius,certified_accuracy,certified_accuracy_sound\n")
        for row in zip(*curve.values()):
            handle.write(",".join(f"{v:.6g}" for v in row) + "\n")
    run = start_run(params.wandb, name, "certify", experiment.as_dict())
    run.log({f"test/{k}": v for k, v in results["best"].items() if isinstance(v, (int, float))})
    table = wandb.Table(columns=list(curve), data=[list(r) for r in zip(*curve.values())])
    run.log({"test/certified_accuracy_vs_radius": wandb.plot.line(table, "radius", "certified_accuracy",
                                                                  title=f"{name}: certified accuracy vs radius")})
    run.finish()
    failures = {which: theorem_failures(r) for which, r in results.items() if theorem_failures(r)}
    mismatched = {which: r["export_mismatches"] for which, r in results.items() if r["export_mismatches"]}
    best = results["best"]
    print(f"{name}: clean {best['clean']:.4f}  attack {best['pgd']:.4f}  VRA {best['vra']:.4f} "
          f"(provable bound {best['vra_sound']:.4f})  certify {best['cert_seconds']:.3f} s")
    if failures or mismatched:
        print(f"error: certificates contradicted {failures}, export mismatches {mismatched}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return run_stage(__doc__, certify, argv)


if __name__ == "__main__":
    sys.exit(main())
