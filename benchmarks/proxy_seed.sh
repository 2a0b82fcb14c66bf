#!/usr/bin/env bash
# An MNIST-proxy experiment (default mnist_t10k_2c2f_minmax) through the pipeline's own stages at
# another seed, in a scratch folder (/tmp/proxy_seed<S>_<experiment>), with params.yaml's settings
# otherwise; prints clean accuracy, VRA (power bound), provable VRA and s/epoch on the 2,000 test
# images. Seed 0 is what `dvc exp run` gives.
#
#   bash benchmarks/proxy_seed.sh 1                          # about 2 min on 2 CPU cores
#   bash benchmarks/proxy_seed.sh 1 mnist_t10k_liresnet
set -euo pipefail
seed=${1:?usage: proxy_seed.sh SEED [EXPERIMENT]}
experiment=${2:-mnist_t10k_2c2f_minmax}
root=$(cd "$(dirname "$0")/.." && pwd)
py=$root/.venv/bin/python
dir=/tmp/proxy_seed${seed}_$experiment
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
export PYTHONPATH=$root WANDB_MODE=disabled
"$py" - "$root" "$seed" "$experiment" <<'PY'
import sys, yaml
root, seed, experiment = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = yaml.safe_load(open(f"{root}/params.yaml"))
p["run"], p["datasets"] = [experiment], ["mnist_t10k"]
p["experiments"][experiment]["training"]["seed"] = seed
p["sources"] = {k: f"{root}/{v}" if isinstance(v, str) and not v.startswith("/") else v
                for k, v in p["sources"].items()}
yaml.safe_dump(p, open("params.yaml", "w"))
PY
for stage in "prepare mnist_t10k" dataset warmup train converge; do
    set -- $stage
    "$py" -m "gloro_repro.stages.$1" "${2:-$experiment}" > /dev/null 2>&1 || { echo "stage $stage failed in $dir"; exit 1; }
done
"$py" - "$seed" "$experiment" <<'PY'
import json, sys
import numpy as np, torch
from gloro_repro.exported import ExportedModel
seed, experiment = sys.argv[1], sys.argv[2]
d = np.load("data/mnist_t10k/mnist_t10k.npz")
x, y = torch.from_numpy(d["x_test"]).float() / 255, torch.from_numpy(d["y_test"])
model = ExportedModel.load(f"models/{experiment}/best")
c, s = model.certify(x, bound="power"), model.certify(x)
ok = c.prediction == y
seconds = json.load(open(f"results/training/{experiment}.json"))["sec_per_epoch"]
print(f"{experiment} seed {seed}: clean {100 * ok.float().mean():.2f} VRA {100 * (ok & c.certified).float().mean():.2f} "
      f"provable VRA {100 * ((s.prediction == y) & s.certified).float().mean():.2f} s/epoch {seconds:.2f}")
PY
