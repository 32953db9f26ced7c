"""How long the shipped alerts take to go active, through a real Prometheus.

Starts the same stack as tests/test_e2e_prometheus.py (simulator, exporter, a Prometheus
with the shipped rules, scraping and evaluating every second), breaks one thing at a time
and prints the seconds until each alert is firing (or pending, for a ``for:`` too long to
wait out). Needs the ``prometheus`` binary (scripts/test.sh installs it). Rerun it any time:

    .venv/bin/python benchmarks/alerts.py

Figures are printed, never asserted on here: the end-to-end tests check that each alert
fires, with its labels and value.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import http_json  # noqa: E402 - the test harness starts the stack
from test_e2e_prometheus import (  # noqa: E402
    Stack,
    failed_and_stuck_jobs,
    start_stack,
    stop_stack,
)


def timed(stack: Stack, cause: Callable[[Stack], None], *alerts: tuple[str, str]) -> list[str]:
    started = time.monotonic()
    cause(stack)
    lines = []
    for name, state in alerts:
        stack.wait_alert(name, state, timeout=60)
        lines.append(f"{name} {state} {time.monotonic() - started:.1f}s")
    return lines


def main() -> int:
    cases: list[tuple[str, Callable[[Stack], None], list[tuple[str, str]]]] = [
        (
            "throttling",
            lambda s: s.sim.fault("throttle"),
            [("DashScopeFineTuneThrottled", "firing")],
        ),
        (
            "a full quota",
            lambda s: http_json(s.sim.url + "/_sim/jobs", "POST", {"fill_quota": 20}),
            [
                ("DashScopeFineTuneQuotaFull", "firing"),
                ("DashScopeFineTuneQuotaNearlyFull", "pending"),
            ],
        ),
        (
            "a failed and a stuck job",
            lambda s: http_json(
                s.sim.url + "/_sim/jobs", "POST", {"jobs": failed_and_stuck_jobs()}
            ),
            [("DashScopeFineTuneJobFailed", "firing"), ("DashScopeFineTuneJobStuck", "firing")],
        ),
    ]
    for what, cause, alerts in cases:
        with tempfile.TemporaryDirectory() as tmp:
            stack = start_stack(Path(tmp))
            try:
                stack.wait_healthy()
                lines = timed(stack, cause, *alerts)
            finally:
                stop_stack(stack)
        print(f"after {what}: " + "; ".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
