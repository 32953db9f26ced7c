#!/usr/bin/env bash
# Runs the exporter against its built-in API simulator: no cloud account needed.
# Extra arguments go to ft-exporter (e.g. --poll.interval=10s).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/ft-exporter --demo "$@"
