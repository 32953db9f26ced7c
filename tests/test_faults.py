"""Fault injection: the real exporter against the real simulator switched to each fault.

For every fault: the exporter keeps serving, values stay the last good ones, the
right code is counted, the requests made are exactly what the retry policy allows,
it recovers when the fault ends, and the key shows up in no log line or metric.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import Exporter, Simulator, api_errors, http_get, value, wait_for

ATTEMPTS = 3
KEY = "sk-fault-SECRET-key-31337"


@dataclass(frozen=True)
class Case:
    mode: str
    code: str
    http_status: str
    #: Faulty answers served, i.e. API requests the failing sweep makes.
    fault_requests: int
    options: dict[str, Any] = field(default_factory=dict)
    page_size: int = 100
    #: Requests a healthy sweep makes at this page size (static scenario: 20 entries).
    good_pages: int = 1
    #: Errors counted for the failing sweep (per request, or once for a rejected listing).
    errors: int = 0
    sweep_fails: bool = True
    extra_args: tuple[str, ...] = ()
    #: Long enough that a failed sweep's up == 0 is visible before the next sweep.
    interval: str = "1s"


CASES = [
    Case("throttle", "Throttling", "429", ATTEMPTS, errors=ATTEMPTS, interval="3s"),
    # Two 1 s waits; the next sweep starts after the last Retry-After has run out.
    Case(
        "throttle",
        "Throttling",
        "429",
        ATTEMPTS,
        {"retry_after": "1"},
        errors=ATTEMPTS,
        interval="4s",
    ),
    Case("error500", "InternalError", "500", 2, errors=2, sweep_fails=False),  # a burst, absorbed
    Case("error500", "InternalError", "500", ATTEMPTS, errors=ATTEMPTS, interval="3s"),
    Case(
        "slow",
        "Timeout",
        "",
        ATTEMPTS,
        {"delay": 1.5},
        errors=ATTEMPTS,
        extra_args=("--dashscope.timeout=500ms",),
        interval="5s",
    ),
    Case("reset", "ConnectionError", "", ATTEMPTS, errors=ATTEMPTS, interval="3s"),
    Case("truncated", "InvalidResponse", "200", 1, errors=1),
    Case("html502", "InvalidResponse", "502", ATTEMPTS, errors=ATTEMPTS, interval="3s"),
    Case("empty502", "InvalidResponse", "502", ATTEMPTS, errors=ATTEMPTS, interval="3s"),
    Case("jobs_null", "InvalidResponse", "200", 1, errors=1),
    Case("total_high", "InvalidResponse", "200", 1, errors=1),
    Case("total_low", "InvalidResponse", "200", 1, errors=1),
    # Page 1 (5 of the 20 entries) again and again: page 1, then 3 pages with no new job.
    Case("endless", "InvalidResponse", "200", 4, page_size=5, good_pages=5, errors=1),
    Case("huge", "InvalidResponse", "200", 1, errors=1),
    Case("bad_utf8", "InvalidResponse", "200", 1, errors=1),
]


def counters(exp: Exporter) -> dict[str, float]:
    text = exp.metrics()
    return {
        "requests": value(text, "dashscope_finetune_api_requests_total", account="default") or 0,
        "sweeps": value(text, "dashscope_finetune_sweeps_total", account="default") or 0,
        "failures": value(text, "dashscope_finetune_sweep_failures_total", account="default") or 0,
        "up": value(text, "dashscope_finetune_up", account="default") or 0,
        "quota": value(text, "dashscope_finetune_quota_used_jobs", account="default") or -1,
        "succeeded": value(
            text,
            "dashscope_finetune_jobs",
            account="default",
            model="qwen3-14b",
            training_type="sft",
            status="SUCCEEDED",
        )
        or -1,
    }


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        f"{c.mode}-{c.fault_requests}" + ("-retry-after" if c.options.get("retry_after") else "")
    ),
)
def test_fault(case: Case, tmp_path: Any, exporter_factory: Callable[..., Exporter]) -> None:
    sim = Simulator(tmp_path, key=KEY)
    try:
        exp = exporter_factory(
            [
                f"--dashscope.base-url={sim.url}",
                f"--poll.interval={case.interval}",
                f"--dashscope.page-size={case.page_size}",
                f"--dashscope.max-attempts={ATTEMPTS}",
                "--dashscope.max-requests-per-second=50",
                "--log.level=debug",
                *case.extra_args,
            ],
            env={"DASHSCOPE_API_KEY": KEY},
        )
        good = counters(exp)
        assert (good["quota"], good["succeeded"]) == (16, 3)
        # Switch the fault on right after a sweep ends: the next one meets it first.
        sweeps = good["sweeps"]
        wait_for(lambda: counters(exp)["sweeps"] > sweeps, what="a sweep boundary")
        base = counters(exp)
        base_errors = api_errors(exp, case.code, case.http_status)
        sim.fault(case.mode, count=case.fault_requests, **case.options)
        started = time.monotonic()

        if case.sweep_fails:
            seen: list[dict[str, float]] = []

            def failed() -> bool:
                seen.append(counters(exp))
                return seen[-1]["failures"] > base["failures"]

            wait_for(failed, timeout=30, what=f"a sweep failing on {case.mode}")
            failed_at = time.monotonic()
            during = seen[-1]
            assert during["up"] == 0
            # The last good values stay.
            assert (during["quota"], during["succeeded"]) == (16, 3)
            assert http_get(exp.url + "/-/healthy")[0] == 200
        wait_for(lambda: sim.stats()["fault"] == "none", timeout=30, what="fault used up")
        wait_for(
            lambda: counters(exp)["up"] == 1 and counters(exp)["sweeps"] > base["sweeps"] + 1,
            timeout=30,
            what="recovery",
        )
        recovered_at = time.monotonic()

        def exact() -> bool:
            now = counters(exp)
            good_sweeps = now["sweeps"] - base["sweeps"] - (now["failures"] - base["failures"])
            made = now["requests"] - base["requests"] - good_sweeps * case.good_pages
            return made == case.fault_requests

        wait_for(exact, timeout=10, what="request count matching the retry policy")
        end = counters(exp)
        assert end["failures"] - base["failures"] == (1 if case.sweep_fails else 0)
        assert api_errors(exp, case.code, case.http_status) - base_errors == case.errors
        assert (end["quota"], end["succeeded"]) == (16, 3)

        times = sim.stats()["request_times"]
        if case.options.get("retry_after"):
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert sum(1 for g in gaps if g >= 0.95) >= ATTEMPTS - 1, gaps
        text = exp.metrics()
        exp.stop()
        logs = exp.output()
        assert KEY not in logs
        assert KEY not in text
        if case.sweep_fails:
            assert logs.count("sweep failed") == 1, logs
            print(
                f"\nFAULT {case.mode}{'+retry-after' if case.options.get('retry_after') else ''}: "
                f"{case.fault_requests} faulty requests, failed after "
                f"{failed_at - started:.2f}s, recovered {recovered_at - failed_at:.2f}s later"
            )
        else:
            print(
                f"\nFAULT {case.mode} burst of {case.fault_requests}: absorbed by retries, "
                f"up the whole time, {recovered_at - started:.2f}s"
            )
    finally:
        sim.stop()


def test_retry_after_beyond_the_deadline_holds_off_later_sweeps(
    tmp_path: Any, exporter_factory: Callable[..., Exporter]
) -> None:
    sim = Simulator(tmp_path, key=KEY)
    try:
        exp = exporter_factory(
            [f"--dashscope.base-url={sim.url}", "--poll.interval=1s", "--poll.sweep-timeout=2s"],
            env={"DASHSCOPE_API_KEY": KEY},
        )
        sim.fault("throttle", retry_after="4")
        before = sim.stats()["list_requests"]
        wait_for(lambda: api_errors(exp, "Throttling", "429") >= 1, what="first 429")
        first = time.monotonic()
        # Sweeps keep running (and failing) every second, but send nothing for 4 s.
        wait_for(lambda: counters(exp)["failures"] >= 3, timeout=10, what="held-off sweeps")
        assert sim.stats()["list_requests"] == before + 1
        assert api_errors(exp, "Throttling", "429") == 1
        sim.clear_fault()
        wait_for(lambda: counters(exp)["up"] == 1, timeout=10, what="recovery")
        assert time.monotonic() - first >= 3.5
    finally:
        sim.stop()


def test_sigterm_during_a_slow_sweep_exits_within_5s(
    tmp_path: Any, exporter_factory: Callable[..., Exporter]
) -> None:
    sim = Simulator(tmp_path, key=KEY)
    try:
        exp = exporter_factory(
            [f"--dashscope.base-url={sim.url}", "--poll.interval=1s", "--dashscope.timeout=30s"],
            env={"DASHSCOPE_API_KEY": KEY},
        )
        sim.fault("slow", delay=20)
        requests_before = sim.stats()["list_requests"]
        wait_for(lambda: sim.stats()["list_requests"] > requests_before, what="slow request")
        started = time.monotonic()
        exp.proc.terminate()
        assert exp.proc.wait(6) == 0
        assert time.monotonic() - started < 5
    finally:
        sim.stop()
