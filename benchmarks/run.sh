#!/usr/bin/env bash
# The benchmark of the schedule templates: `auto` against PyTorch CPU, ONNX Runtime (CPU),
# MetaSchedule (64 trials) and the unscheduled chain on the chains of benchmarks/chains.py, and
# the fuse-or-not verdict checked against measurement. Writes benchmarks/auto_results.json.
#
#   benchmarks/run.sh [auto_bench.py options, e.g. --only resnet18_block --rounds 9]
#
# Sets up (once; later runs reuse it) a separate virtual environment .venv-bench with the app's
# pinned requirements plus benchmarks/requirements-bench.txt (PyTorch, onnx, ONNX Runtime: the
# app itself never needs them). Run it on a quiet machine: check `uptime` first (a load average
# well under the number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
PYTHON=${PYTHON:-python3.11}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt \
    -r benchmarks/requirements-bench.txt
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH=. exec "$VENV/bin/python" benchmarks/auto_bench.py "$@"
