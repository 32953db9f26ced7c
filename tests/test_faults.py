"""Fault injection: the real exporter against the real simulator switched to each fault.

One test per outcome, parametrized by the faults that lead to it:

- absorbed: a burst the retries ride out inside one sweep; ``up`` never drops;
- retried until the sweep fails: every attempt the policy allows meets the fault;
- fails at once: an answer no retry can fix (a 200 of the wrong shape) fails the sweep;
- rejected as a whole: every page answers, but the listing they make up is refused.

For every fault: the exporter keeps serving, values stay the last good ones, the right
code is counted, the requests made are exactly what the retry policy allows, a
``Retry-After`` is waited out between the attempts themselves, it recovers when the
fault ends, and the key shows up in no log line or metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Exporter, Simulator, api_errors, http_get, value, wait_for

from ft_exporter.config import TEST_MIN_POLL_INTERVAL_ENV

ATTEMPTS = 3
KEY = "sk-fault-SECRET-key-31337"
#: The simulator stamps a request when it arrives, the client starts its wait when the
#: answer is in: a gap is never shorter than the wait, but allow for clock granularity.
CLOCK_SLACK = 0.05


@dataclass(frozen=True)
class Case:
    mode: str
    code: str
    http_status: str
    #: Faulty answers served, i.e. API requests the faulty sweep makes.
    fault_requests: int
    #: What the one "sweep failed" line (or, absorbed, each retry line) says.
    message: str
    options: dict[str, Any] = field(default_factory=dict)
    page_size: int = 100
    #: Requests a healthy sweep makes at this page size (static scenario: 20 entries).
    good_pages: int = 1
    extra_args: tuple[str, ...] = ()
    #: At least 1.5 s longer than the faulty sweep can take (backoff is at most 0.5 s, then
    #: 1 s), so a failed sweep's up == 0 stays visible on a loaded box until the next sweep.
    #: Sub-second where no sweep fails (the test-only floor allows it).
    interval: str = "1s"

    @property
    def id(self) -> str:
        retry_after = "-retry-after" if self.options.get("retry_after") else ""
        return f"{self.mode}-{self.fault_requests}{retry_after}"


THROTTLED = "Throttling HTTP 429: Too many requests, please retry later. request_id=sim-"
ERROR500 = "InternalError HTTP 500: Internal server error! request_id=sim-"

ABSORBED = [
    Case("error500", "InternalError", "500", 2, ERROR500, interval="500ms"),
    # Retried after exactly the Retry-After, not the (shorter) backoff.
    Case("throttle", "Throttling", "429", 2, THROTTLED, {"retry_after": "1"}, interval="500ms"),
]
RETRIED_UNTIL_FAILED = [
    Case("throttle", "Throttling", "429", ATTEMPTS, THROTTLED, interval="3s"),
    # Two 1 s waits, then a third: a sweep due before it runs out would fail unsent.
    Case(
        "throttle",
        "Throttling",
        "429",
        ATTEMPTS,
        THROTTLED,
        {"retry_after": "1"},
        interval="4s",
    ),
    Case("error500", "InternalError", "500", ATTEMPTS, ERROR500, interval="3s"),
    Case(
        "slow",
        "Timeout",
        "",
        ATTEMPTS,
        "Timeout: no answer within 0.3s",
        {"delay": 1.0},
        extra_args=("--dashscope.timeout=300ms",),
        interval="4s",
    ),
    Case("reset", "ConnectionError", "", ATTEMPTS, "ConnectionError: ", interval="3s"),
    Case(
        "html502",
        "InvalidResponse",
        "502",
        ATTEMPTS,
        "InvalidResponse HTTP 502: HTTP 502 with body without an error code",
        interval="3s",
    ),
    Case(
        "empty502",
        "InvalidResponse",
        "502",
        ATTEMPTS,
        "InvalidResponse HTTP 502: HTTP 502 with empty body",
        interval="3s",
    ),
]
FAILED_AT_ONCE = [
    Case("truncated", "InvalidResponse", "200", 1, "InvalidResponse HTTP 200: body is not JSON"),
    Case(
        "jobs_null",
        "InvalidResponse",
        "200",
        1,
        "InvalidResponse HTTP 200: 'output.jobs' is not a list request_id=sim-",
    ),
    Case(
        "huge",
        "InvalidResponse",
        "200",
        1,
        "InvalidResponse HTTP 200: response of 52428873 bytes exceeds 16777216",
    ),
    Case(
        "bad_utf8",
        "InvalidResponse",
        "200",
        1,
        "InvalidResponse HTTP 200: body is not valid UTF-8",
    ),
]
REJECTED_AS_A_WHOLE = [
    Case(
        "total_high",
        "InvalidResponse",
        "200",
        1,
        "InvalidResponse HTTP 200: the list announced total=70 but held 20 jobs (model=*)",
    ),
    Case(
        "total_low",
        "InvalidResponse",
        "200",
        1,
        "InvalidResponse HTTP 200: the list announced total=15 but held 20 jobs (model=*)",
    ),
    # Page 1 (5 of the 20 entries) again and again: page 1, then 3 pages with no new job.
    # Its total of 1,000,000 would need 200,000 requests, over an hour at 50 a second: the
    # deadline is raised so that the sweep gets past page 1 (test_deadline.py has the
    # sweep that cannot fit its deadline).
    Case(
        "endless",
        "InvalidResponse",
        "200",
        4,
        "InvalidResponse HTTP 200: 3 pages in a row brought no new job (model=*, page 4)",
        page_size=5,
        # 20 entries at 5 a page: the sweep stops on page 4, where total is reached (it
        # used to confirm a full last page with an empty page 5). Every sweep is full:
        # the static scenario lists jobs out of create_time order and holds a malformed
        # entry, so it is never swept incrementally.
        good_pages=4,
        extra_args=("--poll.sweep-timeout=2h",),
    ),
]


def counters(exp: Exporter) -> dict[str, float]:
    text = exp.metrics()
    return {
        "requests": value(
            text, "dashscope_finetune_api_requests_total", account="default", endpoint="list"
        )
        or 0,
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


@dataclass
class Run:
    """What one fault did, seen from both ends."""

    case: Case
    #: Every scrape from the fault switched on until the sweep failed (or, absorbed,
    #: until the exporter had recovered).
    seen: list[dict[str, float]]
    base: dict[str, float]
    end: dict[str, float]
    errors: float
    healthy_while_failed: int
    #: (arrival, fault) of each API request from the fault switched on, in order.
    requests: list[tuple[float, str]]
    logs: str
    metrics: str

    def retries(self) -> list[str]:
        """The client's debug lines for an attempt that failed and is tried again."""
        return [line for line in self.logs.splitlines() if "; retrying in " in line]

    def faulted(self) -> list[int]:
        """Indexes in ``requests`` of the requests answered with the fault."""
        return [i for i, (_, mode) in enumerate(self.requests) if mode == self.case.mode]


def run_fault(
    case: Case,
    tmp_path: Path,
    exporter_factory: Callable[..., Exporter],
    *,
    sweep_fails: bool,
) -> Run:
    """Switch ``case``'s fault on right after a sweep, for ``fault_requests`` requests."""
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
            env={"DASHSCOPE_API_KEY": KEY, TEST_MIN_POLL_INTERVAL_ENV: "0.2"},
        )
        # Ready means the first sweep just ended; the next is an interval away and meets
        # the fault first (assert_common checks it did: the first request after the switch).
        base = counters(exp)
        assert (base["quota"], base["succeeded"]) == (16, 3)
        base_errors = api_errors(exp, case.code, case.http_status)
        before = len(sim.stats()["request_log"])
        sim.fault(case.mode, count=case.fault_requests, **case.options)

        seen: list[dict[str, float]] = []
        healthy = 0
        if sweep_fails:

            def failed() -> bool:
                seen.append(counters(exp))
                return seen[-1]["failures"] > base["failures"]

            wait_for(failed, timeout=30, interval=0.05, what=f"a sweep failing on {case.mode}")
            healthy = http_get(exp.url + "/-/healthy")[0]

        def used_up() -> bool:
            seen.append(counters(exp))
            return bool(sim.stats()["fault"] == "none")

        wait_for(used_up, timeout=30, interval=0.05, what="fault used up")

        def recovered() -> bool:
            seen.append(counters(exp))
            return seen[-1]["up"] == 1 and seen[-1]["sweeps"] > base["sweeps"] + 1

        wait_for(recovered, timeout=30, interval=0.05, what="recovery")

        def exact() -> bool:
            now = counters(exp)
            good_sweeps = now["sweeps"] - base["sweeps"] - (now["failures"] - base["failures"])
            made = now["requests"] - base["requests"] - good_sweeps * case.good_pages
            return made == case.fault_requests

        wait_for(exact, timeout=10, what="request count matching the retry policy")
        end = counters(exp)
        errors = api_errors(exp, case.code, case.http_status) - base_errors
        log = sim.stats()["request_log"][before:]
        metrics = exp.metrics()
        exp.stop()
        return Run(
            case=case,
            seen=seen,
            base=base,
            end=end,
            errors=errors,
            healthy_while_failed=healthy,
            requests=[(entry["at"], entry["fault"]) for entry in log],
            logs=exp.output(),
            metrics=metrics,
        )
    finally:
        sim.stop()


def assert_common(run: Run) -> None:
    """What every fault must leave: exact faulty requests, no key, Retry-After obeyed."""
    case = run.case
    faulted = run.faulted()
    # The first request after the switch met the fault, and exactly fault_requests did.
    assert faulted == list(range(case.fault_requests)), run.requests
    assert (run.end["quota"], run.end["succeeded"]) == (16, 3)
    assert KEY not in run.logs
    assert KEY not in run.metrics
    retry_after = case.options.get("retry_after")
    if retry_after:
        # Each throttled attempt is followed by a wait of at least Retry-After: between the
        # attempts of one sweep, and from the last one to the next sweep's first request.
        gaps = [run.requests[i + 1][0] - run.requests[i][0] for i in faulted]
        assert len(gaps) == case.fault_requests, run.requests
        assert all(gap >= float(retry_after) - CLOCK_SLACK for gap in gaps), gaps


def assert_failed_once(run: Run, attempts: int) -> None:
    """One sweep failed after ``attempts`` tries (each counted): up 0 with the last good
    values, one log line saying why, then recovery."""
    case = run.case
    first = next(i for i, s in enumerate(run.seen) if s["failures"] > run.base["failures"])
    assert all(s["up"] == 1 for s in run.seen[:first]), run.seen
    failed = run.seen[first]
    assert failed["up"] == 0, run.seen
    assert (failed["quota"], failed["succeeded"]) == (16, 3)  # the last good values stay
    assert run.healthy_while_failed == 200
    assert run.end["failures"] - run.base["failures"] == 1
    assert run.end["up"] == 1
    assert run.logs.count("sweep failed") == 1, run.logs
    [line] = [line for line in run.logs.splitlines() if "sweep failed" in line]
    assert case.message in line, line
    assert run.logs.count("sweep recovered after 1 failure(s)") == 1, run.logs
    assert run.errors == attempts
    retried = [line.count(f"attempt {n} failed") for n, line in enumerate(run.retries(), 1)]
    assert retried == [1] * (attempts - 1), run.retries()


@pytest.mark.parametrize("case", ABSORBED, ids=lambda c: c.id)
def test_fault_absorbed_within_the_sweep(
    case: Case, tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    run = run_fault(case, tmp_path, exporter_factory, sweep_fails=False)
    assert_common(run)
    # Up the whole time, no sweep failed, and the burst's own sweep ended well.
    assert all(s["up"] == 1 for s in run.seen), run.seen
    assert run.end["failures"] == run.base["failures"]
    assert run.errors == case.fault_requests
    assert run.requests[case.fault_requests][1] == "none"  # the retry after the burst
    assert "sweep failed" not in run.logs
    retried = [line.count(f"attempt {n} failed") for n, line in enumerate(run.retries(), 1)]
    assert retried == [1] * case.fault_requests, run.retries()
    assert all(case.message in line for line in run.retries()), run.retries()


@pytest.mark.parametrize("case", RETRIED_UNTIL_FAILED, ids=lambda c: c.id)
def test_fault_retried_until_the_sweep_fails(
    case: Case, tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    run = run_fault(case, tmp_path, exporter_factory, sweep_fails=True)
    assert_common(run)
    # Every attempt the policy allows, each counted: no more, no fewer.
    assert_failed_once(run, attempts=ATTEMPTS)


@pytest.mark.parametrize("case", FAILED_AT_ONCE, ids=lambda c: c.id)
def test_fault_fails_the_sweep_without_a_retry(
    case: Case, tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    run = run_fault(case, tmp_path, exporter_factory, sweep_fails=True)
    assert_common(run)
    # A 200 of the wrong shape is not worth another try: one request, one error.
    assert_failed_once(run, attempts=1)
    assert run.requests[1][1] == "none"  # the next request is the next sweep's


@pytest.mark.parametrize("case", REJECTED_AS_A_WHOLE, ids=lambda c: c.id)
def test_listing_rejected_as_a_whole(
    case: Case, tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    run = run_fault(case, tmp_path, exporter_factory, sweep_fails=True)
    assert_common(run)
    # Every page was a good answer (exact request count above); the listing counts once.
    assert_failed_once(run, attempts=1)


def test_retry_after_beyond_the_deadline_holds_off_later_sweeps(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
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
        log = [(entry["at"], entry["fault"]) for entry in sim.stats()["request_log"]]
        throttled = [i for i, (_, mode) in enumerate(log) if mode == "throttle"]
        assert len(throttled) == 1, log
        assert log[throttled[0] + 1][0] - log[throttled[0]][0] >= 4 - CLOCK_SLACK, log
    finally:
        sim.stop()


def test_sigterm_during_a_slow_sweep_exits_within_5s(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
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
