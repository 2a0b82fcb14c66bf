#!/usr/bin/env bash
# The MNIST proxy (mnist_t10k_2c2f_minmax) through the pipeline's own stages at another seed, in a
# scratch folder (/tmp/proxy_seed<S>), with params.yaml's settings otherwise; prints clean accuracy
# and VRA (power bound) on the 2,000 test images. Seed 0 is what `dvc exp run` gives.
#
#   bash benchmarks/proxy_seed.sh 1        # about 2 min on 2 CPU cores
set -euo pipefail
seed=${1:?usage: proxy_seed.sh SEED}
root=$(cd "$(dirname "$0")/.." && pwd)
py=$root/.venv/bin/python
dir=/tmp/proxy_seed$seed
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
export PYTHONPATH=$root WANDB_MODE=disabled
"$py" - "$root" "$seed" <<'PY'
import sys, yaml
root, seed = sys.argv[1], int(sys.argv[2])
p = yaml.safe_load(open(f"{root}/params.yaml"))
p["run"], p["datasets"] = ["mnist_t10k_2c2f_minmax"], ["mnist_t10k"]
p["experiments"]["mnist_t10k_2c2f_minmax"]["training"]["seed"] = seed
p["sources"] = {k: v if v is None or str(v).startswith("/") else f"{root}/{v}" for k, v in p["sources"].items()}
yaml.safe_dump(p, open("params.yaml", "w"))
PY
for stage in "prepare mnist_t10k" dataset warmup train converge; do
    set -- $stage
    "$py" -m "gloro_repro.stages.$1" "${2:-mnist_t10k_2c2f_minmax}" > /dev/null 2>&1 || { echo "stage $stage failed in $dir"; exit 1; }
done
"$py" - "$seed" <<'PY'
import sys
import numpy as np, torch
from gloro_repro.exported import ExportedModel
d = np.load("data/mnist_t10k/mnist_t10k.npz")
x, y = torch.from_numpy(d["x_test"]).float() / 255, torch.from_numpy(d["y_test"])
c = ExportedModel.load("models/mnist_t10k_2c2f_minmax/best").certify(x, bound="power")
ok = c.prediction == y
print(f"seed {sys.argv[1]}: clean {100 * ok.float().mean():.2f} VRA {100 * (ok & c.certified).float().mean():.2f}")
PY
