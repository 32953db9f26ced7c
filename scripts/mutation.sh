#!/usr/bin/env bash
# Mutation testing of the modules where a silent mistake costs users most (the job model,
# the collector, the client's parsing and classification, logging and redaction, the
# secret, the key file parser), with the fast unit tests only. Which files are mutated
# and which tests run is set in pyproject.toml, [tool.mutmut].
#
# Needs the .venv that ./scripts/test.sh creates. Not part of CI: run it before merging
# a change to those modules and when adding a parser (then add the parser to
# [tool.mutmut] only_mutate). Fails when the score is under 90 % or when a surviving
# mutant is not listed, with why, in tests/mutation-survivors.md.
#
# Usage: ./scripts/mutation.sh [--max-children N]   (default: one per CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    echo "no .venv: run ./scripts/test.sh first" >&2
    exit 2
fi
echo "==> installing mutmut (the dev extra)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'

# A fresh run: results cached from other sources or tests would not be this tree's.
rm -rf mutants
children=$(nproc 2>/dev/null || echo 2)
if [ "${1:-}" = "--max-children" ]; then
    children=$2
    shift 2
fi
echo "==> mutmut run --max-children $children"
start=$(date +%s)
# mutmut redraws a progress line many times a second; keep the last state only.
.venv/bin/mutmut run --max-children "$children" | tr '\r' '\n' | tail -n 3
echo "==> wall time: $(( $(date +%s) - start )) s"
.venv/bin/mutmut results --all true \
    | .venv/bin/python scripts/mutation_report.py tests/mutation-survivors.md 0.90
