"""One experiment, or a variant of it, through the pipeline's own stages at several seeds.

Each seed runs in a scratch folder (``--scratch``, one sub-folder per variant and seed) holding a
``params.yaml`` with only that experiment, its seed and the ``-S`` overrides (keys within the
experiment, YAML values): prepare, dataset, warmup, train and converge, then the exported ``best``
model certifies the test split. Prints a Markdown row per seed (clean accuracy, VRA with the power
bound, provable VRA, s/epoch, the global upper bound) and the mean and sd over the seeds.

    python -m benchmarks.variant_run mnist_t10k_liresnet --seeds 0 1 2 --jobs 2
    python -m benchmarks.variant_run mnist_t10k_liresnet -S model.architecture=c32k4s2-c32k4s2-c64k3s1-d256-d10

Seed 0 with no overrides is what ``dvc exp run`` gives for the experiment (up to the thread count:
``--jobs`` seeds at a time share the machine's cores).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("dataset", "warmup", "train", "converge")
EVALUATE = """
import json, sys
import numpy as np, torch
from gloro_repro.exported import ExportedModel
name, dataset = sys.argv[1], sys.argv[2]
arrays, meta = np.load(f"data/{dataset}/{dataset}.npz"), json.load(open(f"data/{dataset}/{dataset}.json"))
x, y = torch.from_numpy(arrays["x_test"]).float() / meta["max_value"], torch.from_numpy(arrays["y_test"])
model = ExportedModel.load(f"models/{name}/best")
power, sound = model.certify(x, bound="power"), model.certify(x)
ok = power.prediction == y
print(json.dumps({"clean": float(ok.float().mean()), "vra": float((ok & power.certified).float().mean()),
                  "vra_sound": float(((sound.prediction == y) & sound.certified).float().mean()),
                  "ub": model.lipschitz_global_ub("power"),
                  "sec_per_epoch": json.load(open(f"results/training/{name}.json"))["sec_per_epoch"]}))
"""


def override(experiment: dict, assignment: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) inside the experiment's settings."""
    key, sep, value = assignment.partition("=")
    *path, last = key.split(".")
    node = experiment
    for part in path:
        if not isinstance(node.get(part), dict):
            raise SystemExit(f"error: -S {assignment}: no settings group {part!r} in the experiment")
        node = node[part]
    if not sep or last not in node:
        raise SystemExit(f"error: -S {assignment}: expected KEY=VALUE with KEY one of the experiment's settings")
    node[last] = yaml.safe_load(value)


def project_params(name: str, seed: int, assignments: list[str]) -> dict:
    """params.yaml with only experiment ``name`` (at ``seed``, overridden), its dataset and source."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    experiment = params["experiments"][name]
    for assignment in assignments:
        override(experiment, assignment)
    experiment["training"]["seed"] = seed
    dataset = experiment["data"]["dataset"]
    source = params["sources"].get(dataset)
    if isinstance(source, str) and not Path(source).is_absolute():
        params["sources"][dataset] = str(ROOT / source)
    return params | {"experiments": {name: experiment}, "run": [name], "datasets": [dataset]}


def run_seed(name: str, seed: int, assignments: list[str], folder: Path, threads: int) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    params = project_params(name, seed, assignments)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dataset = params["datasets"][0]
    env = os.environ | {"PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "GLORO_THREADS": str(threads)}
    for stage, argument in (("prepare", dataset), *((stage, name) for stage in STAGES)):
        done = subprocess.run([sys.executable, "-m", f"gloro_repro.stages.{stage}", argument], cwd=folder, env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"error: seed {seed}: stage {stage} failed in {folder}:\n{done.stderr[-3000:]}")
    done = subprocess.run([sys.executable, "-c", EVALUATE, name, dataset], cwd=folder, env=env, capture_output=True,
                          text=True, check=True)
    return {"seed": seed, **json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="an experiment name from params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("-S", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the experiment, e.g. training.loss=trades (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at a time (default 1)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/gloro-variants"), help="scratch folder")
    args = parser.parse_args(argv)
    if args.experiment not in yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"]:
        parser.error(f"unknown experiment {args.experiment!r}")
    variant = hashlib.sha256("\n".join(args.assignments).encode()).hexdigest()[:8]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda seed: run_seed(args.experiment, seed, args.assignments,
                                                   args.scratch / f"{args.experiment}-{variant}-s{seed}", threads),
                             args.seeds))
    print(f"{args.experiment} {' '.join(f'-S {a}' for a in args.assignments)}".rstrip())
    print("| seed | clean | VRA | provable VRA | global UB | s/epoch |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {100 * r['clean']:.2f} | {100 * r['vra']:.2f} | {100 * r['vra_sound']:.2f} "
              f"| {r['ub']:.3g} | {r['sec_per_epoch']:.2f} |")
    if len(rows) > 1:
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("clean", "vra", "vra_sound")}
        sd = {k: statistics.stdev(r[k] for r in rows) for k in ("clean", "vra", "vra_sound")}
        print("| mean (sd) | " + " | ".join(f"{100 * mean[k]:.2f} ({100 * sd[k]:.2f})" for k in mean) + " | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
