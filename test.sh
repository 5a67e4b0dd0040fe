#!/usr/bin/env bash
# Set up (venv, pinned requirements, test requirements, chromium) and run every test:
# fast unit tests, slow ones (worker processes, builds, RPC), and the real-browser test.
# GPU tests run only where a CUDA device exists. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh --dev
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m pytest -q "$@"
