#!/usr/bin/env bash
# Installs everything the tests need, then runs lint, type checks and the whole suite in
# parallel (pytest-xdist). Used as-is by CI (.ci/run). Extra arguments go to pytest.
#
#   ./scripts/test.sh            everything: apt tools, ruff, mypy, every test (in parallel,
#                                then the few marked `serial` alone)
#   ./scripts/test.sh --fast     the fast loop: ruff and every test that starts no process
#                                (-m "not e2e"); no apt, no mypy, pip only when missing
#
# FT_TEST_WORKERS sets the number of xdist workers (default: 4; the suite mostly waits on
# real processes, so more workers than cores pays).
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
if [ "${1:-}" = "--fast" ]; then
    fast=1
    shift
fi
workers="${FT_TEST_WORKERS:-4}"

if [ "$fast" -eq 0 ]; then
    need_apt=()
    command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
    command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
    # The status page in a real headless browser (tests/test_statuspage_browser.py).
    command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
    if [ ${#need_apt[@]} -gt 0 ]; then
        echo "==> installing Debian packages: ${need_apt[*]}"
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
            "${need_apt[@]}" >/dev/null
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    python3 -m venv .venv
fi
installed() {
    # The package (editable, from this tree) and the test tools the fast loop uses.
    .venv/bin/python - <<'EOF' 2>/dev/null
import pathlib, ft_exporter, pytest, xdist, responses, hypothesis, ruff  # noqa: F401
assert pathlib.Path(ft_exporter.__file__).resolve().parent == pathlib.Path("ft_exporter").resolve()
EOF
}
if [ "$fast" -eq 0 ] || ! installed; then
    echo "==> installing the package with its test dependencies"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
fi

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Three kinds of test: most run in parallel (xdist); those marked `isolated` (they trace
# their whole process) run meanwhile in a pytest process of their own; those marked
# `serial` (they bound times under machine-wide load) run last, alone.
run_tests() {
    local only="${1:+$1 and }"
    shift
    local isolated_log
    isolated_log="$(mktemp)"
    set +e
    .venv/bin/python -m pytest -m "${only}isolated" "$@" >"$isolated_log" 2>&1 &
    local isolated_pid=$!
    echo "==> pytest (parallel; the isolated tests in a process of their own meanwhile)"
    .venv/bin/python -m pytest -n "$workers" --dist loadgroup \
        -m "${only}not serial and not isolated" "$@"
    local parallel=$?
    wait "$isolated_pid"
    local isolated=$?
    echo "==> pytest (isolated)"
    cat "$isolated_log"
    rm -f "$isolated_log"
    echo "==> pytest (serial: tests that need the machine to themselves)"
    .venv/bin/python -m pytest -m "${only}serial" "$@"
    local alone=$?
    set -e
    # 5 is "no test selected", as with -k or a file that has none of one kind.
    local status any=0
    for status in "$parallel" "$isolated" "$alone"; do
        if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
            exit "$status"
        fi
        [ "$status" -eq 5 ] || any=1
    done
    [ "$any" -eq 1 ] || exit 5
    exit 0
}

if [ "$fast" -eq 1 ]; then
    run_tests "not e2e" "$@"
fi
echo "==> mypy"
.venv/bin/mypy
run_tests "" "$@"
