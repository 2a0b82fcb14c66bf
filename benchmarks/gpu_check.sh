#!/usr/bin/env bash
# The checks a CUDA machine runs (the CPU machines that run CI cannot): the CUDA-marked tests, the
# test suite with every stage on the GPU (GLORO_ACCELERATOR=auto picks it), and the cost ratios of
# benchmarks.run on the GPU. Logs and the benchmark report go to $OUT (default ./gpu_check).
#
#   bash benchmarks/gpu_check.sh            # python3 must hold torch with CUDA, lightning, pytest
#
# Packages the machine lacks may lie as wheels in .whl/ (they are installed into /tmp/site first).
# The DVC tests (no dvc there), the PostgreSQL tests (no server) and the DDP tests (CPU processes) are left out.
set -uo pipefail
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi -L
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 1
fi
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"

echo "== CUDA-marked tests"
python3 -m pytest -q -p no:cacheprovider tests/test_precision.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -4

echo "== the suite, stages on the GPU"
# several workers when pytest-xdist is there, each with 2 CPU threads (16 threads each would oversubscribe the cores)
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${WORKERS:-6}")
per_test=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout 150")
OMP_NUM_THREADS=2 timeout "${SUITE_LIMIT:-240}" python3 -m pytest -q -p no:cacheprovider -p no:benchmark $workers \
    $per_test --durations=15 --ignore tests/test_dvc.py --ignore tests/test_search_postgres.py --ignore tests/test_ddp.py \
    2>&1 | tee "$OUT/suite.log" | tail -45

echo "== benchmarks on the GPU"
timeout "${BENCH_LIMIT:-150}" python3 -m benchmarks.run --sections ${SECTIONS:-architectures epochs} --repeats 3 \
    --out "$OUT/benchmarks_gpu" 2>&1 | grep -v "it/s\]$" | tail -5
cat "$OUT/benchmarks_gpu.md" 2>/dev/null | head -60
