#!/usr/bin/env bash
# The checks a CUDA machine runs (the CPU machines that run CI cannot), in two parts so that each
# fits one call of a time-limited GPU lease. Logs and reports go to $OUT (default ./gpu_check).
#
#   bash benchmarks/gpu_check.sh tests    # the CUDA-marked tests alone
#   bash benchmarks/gpu_check.sh checks   # the CUDA-marked tests, then benchmarks.run's architectures
#                                         # section at batch 256 and 512 (eager and CUDA-graphed, side by side)
#   bash benchmarks/gpu_check.sh epochs   # full-size epochs of every Figure D.1a row (4 each, in the rows'
#                                         # IEEE float32: about 6 minutes on an H200, most of it Tiny-ImageNet)
#   bash benchmarks/gpu_check.sh long     # a long MNIST-shaped run (LONG_EPOCHS, default 500: about 7
#                                         # minutes on an H200) stopped halfway and resumed
#
# python3 must hold torch with CUDA, lightning, torchmetrics, pandas, tabulate and pytest. Packages
# the machine lacks may lie as wheels in .whl/ (they are installed into /tmp/site first).
# DEVICE_NAME names the report files (default h200); BEFORE names an earlier benchmarks JSON for the
# report's before/after table (default none, e.g. BEFORE=results/benchmarks_gpu_h200.json).
set -uo pipefail
OUT=${OUT:-gpu_check}
NAME=${DEVICE_NAME:-h200}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"

cuda_tests() {
    echo "== CUDA-marked tests (and the rest of these files)"
    timeout "${TEST_LIMIT:-180}" python3 -m pytest -q -s -p no:cacheprovider tests/test_graphs.py tests/test_precision.py \
        2>&1 | tee "$OUT/cuda_tests.log" | grep -v "^\.*$" | tail -25
}

case "${1:-checks}" in
tests)
    cuda_tests
    ;;
checks)
    cuda_tests
    echo "== benchmarks.run architectures, batch 256 and 512"
    timeout "${BENCH_LIMIT:-300}" python3 -m benchmarks.run --sections architectures --batch-sizes 256 512 \
        --repeats "${REPEATS:-3}" --before "${BEFORE:-none}" --out "$OUT/benchmarks_gpu_$NAME" 2>&1 | grep -v "it/s\]$" | tail -5
    cat "$OUT/benchmarks_gpu_$NAME.md" 2>/dev/null
    ;;
epochs)
    echo "== full-size epochs of every Figure D.1a row"
    timeout "${EPOCH_LIMIT:-420}" python3 -m benchmarks.full_epochs --out "$OUT/full_epochs_$NAME" 2>&1 | grep "s/epoch\|wrote"
    cat "$OUT/full_epochs_$NAME.md" 2>/dev/null
    ;;
long)
    echo "== long run"
    timeout "${LONG_LIMIT:-480}" python3 -m benchmarks.full_epochs --rows mnist_2c2f_minmax --epochs 1 \
        --long "${LONG_EPOCHS:-500}" --out "$OUT/long_run_$NAME" 2>&1 | grep "s/epoch\|wrote"
    cat "$OUT/long_run_$NAME.md" 2>/dev/null
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh tests|checks|epochs|long" >&2
    exit 2
    ;;
esac
