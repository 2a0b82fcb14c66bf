"""DVC stage: certify the test set with the exported model, under both bounds, and attack it.

    python -m pipeline.stages.certify <experiment>

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

import torch
import wandb

from pipeline.artifacts import SELECTIONS, ExportError, load_exported, load_gloro, weights_digest
from pipeline.data.arrays import DatasetArrays
from pipeline.evaluation import AttackSettings, certify_test_set, theorem_failures
from pipeline.io import atomic_open, write_json
from pipeline.gloro.model import batched_logits, certify_float64, certify_logits
from pipeline.gloro.precision import ieee_arithmetic
from pipeline.hardware import Hardware
from pipeline.stages.common import check_exported_eps, prepared_data, run_stage
from pipeline.tracking import start_run


def export_mismatches(directory, f, bounds: dict[str, torch.Tensor], x: torch.Tensor, eps: float) -> int:
    """Inputs whose certified flag (both bounds) from the exported files differs from the project's GloroNet's.

    The GloroNet's provable bounds are computed on the CPU, as the export's were; both run on x's device.
    """
    _, net, _ = load_gloro(directory)
    if weights_digest(net.f) != bounds["weights_sha256"]:
        raise ExportError(f"{directory}/gloro.pt holds other weights than those {directory}/lipschitz.json describes")
    net_k_sound, net_rounding = net.k_ij_sound().to(x.device), net.rounding(torch.float64).to(x.device)
    net = net.to(x.device)
    with ieee_arithmetic():
        power = certify_logits(batched_logits(f, x), bounds["K"], eps).certified
        net_power = net.certify(x, eps, bound="power").certified
        sound = certify_float64(f, x, bounds["K_sound"], eps, bounds["rounding_float64"]).certified
        net_sound = certify_float64(net.f, x, net_k_sound, eps, net_rounding).certified
    return int((power != net_power).sum() + (sound != net_sound).sum())


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
        f, lipschitz = load_exported(directory)
        check_exported_eps(lipschitz, experiment, directory)
        if results and lipschitz["epoch"] == results["best"]["epoch"]:  # the same checkpoint
            results[which] = dict(results["best"])
            continue
        f = f.to(device)
        bounds = {key: torch.tensor(lipschitz[key], device=device) for key in ("K", "K_sound", "rounding_float64")}
        metrics = certify_test_set(f, bounds["K"], bounds["K_sound"], bounds["rounding_float64"], experiment.eps_test,
                                   x, y, attack, seed=experiment.training.seed)
        metrics |= {"epoch": lipschitz["epoch"], "lipschitz_global_ub": max(map(max, lipschitz["K"])),
                    "lipschitz_global_ub_sound": max(map(max, lipschitz["K_sound"])),
                    "lipschitz_layer_product": lipschitz["global_ub"],
                    "layer_bounds": [{key: layer[key] for key in ("layer", "method", "sound_over_power")}
                                     for layer in lipschitz["layers"]],
                    "export_mismatches": export_mismatches(directory, f, lipschitz | bounds, x, experiment.eps_test)}
        results[which] = metrics
    curve = results["best"].pop("radius_curve")
    results["last"].pop("radius_curve")
    summary = {"experiment": name, "selection": "best on validation split",
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
