#!/usr/bin/env bash
# Set up (venv, pinned requirements) and start Schedule Playground on http://127.0.0.1:8501
# Extra arguments go to streamlit, e.g. ./run.sh --server.port 8600
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python -m ui.serve run app.py --server.address "${PLAYGROUND_ADDRESS:-127.0.0.1}" \
  --server.port "${PLAYGROUND_PORT:-8501}" --server.headless true \
  --browser.gatherUsageStats false --server.maxUploadSize 64 --server.fileWatcherType none \
  --server.runOnSave false --runner.postScriptGC false "$@"
