#!/usr/bin/env bash
# Idempotent setup: a venv in .venv with the pinned requirements; with --dev also the test
# requirements and Debian's chromium (for the real-browser test). Safe to run again: it only
# installs what changed (the requirement files' hash is kept in .venv/.installed).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null; then
      py=$c; break
    fi
  done
fi
[ -n "$py" ] || { echo "setup: Python 3.11+ is needed" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
fi

req=requirements.txt
[ $dev = 1 ] && req=requirements-dev.txt
want=$(cat requirements.txt "$req" | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed-$dev 2>/dev/null)" != "$want" ]; then
  echo "setup: installing $req"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > ".venv/.installed-$dev"
fi

if [ $dev = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium (for the browser test)"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
fi
