#!/usr/bin/env bash
# Create bench/.venv with plezi (editable) and the peers from bench/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
PYTHON="${PYTHON:-python3}"
[ -x bench/.venv/bin/python ] || "$PYTHON" -m venv bench/.venv
bench/.venv/bin/python -m pip install --quiet --upgrade pip
bench/.venv/bin/python -m pip install --quiet -e . -r bench/requirements.txt
