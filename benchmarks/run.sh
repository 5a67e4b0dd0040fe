#!/usr/bin/env bash
# Benchmark the fast presets against PyTorch CPU, the unscheduled chain and unfused schedules.
#
#   benchmarks/run.sh [bench.py options, e.g. --only resnet_conv_relu_conv --rounds 15]
#
# Sets up (once; later runs reuse it) a separate virtual environment .venv-bench with the app's
# pinned requirements plus PyTorch 2.13 CPU from the local wheel (the app itself never needs
# torch), then runs benchmarks/bench.py on 2 threads and writes benchmarks/results.json.
# Run it on a quiet machine: check `uptime` first (load average well under 2 on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
TORCH_WHEEL=${TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
PYTHON=${PYTHON:-python3.11}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if [ -f "$TORCH_WHEEL" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_WHEEL"
    else
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
    fi
fi
# The peak-FLOP reference kernel (C, AVX2 + FMA, OpenMP), rebuilt when its source changes.
if [ ! -f benchmarks/fma_peak.so ] || [ benchmarks/fma_peak.c -nt benchmarks/fma_peak.so ]; then
    cc -O2 -mavx2 -mfma -fopenmp -shared -fPIC -o benchmarks/fma_peak.so benchmarks/fma_peak.c
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
export TVM_NUM_THREADS=2
PYTHONPATH=. exec "$VENV/bin/python" benchmarks/bench.py --json benchmarks/results.json "$@"
