"""Retries, Retry-After, the sweep deadline and the client-side rate limit (no real sleeping)."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import pytest
import responses
from conftest import UTC8, Recorder

from ft_exporter.client import ApiError, FineTuneClient
from ft_exporter.retry import RetryPolicy, TokenBucket, is_retryable, parse_retry_after
from ft_exporter.secret import Secret

URL = "https://dashscope-intl.aliyuncs.com/api/v1/fine-tunes"
OK_BODY = {"request_id": "r", "output": {"total": 1, "jobs": [{"job_id": "ft-1"}]}}


class FakeTime:
    """monotonic() and an interruptible wait() that only advance a number."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


Codes = Recorder


def client(ft: FakeTime, codes: Codes | None = None, **kw: Any) -> FineTuneClient:
    return FineTuneClient(
        "https://dashscope-intl.aliyuncs.com",
        Secret("sk-k"),
        tz=UTC8,
        observer=codes,
        monotonic=ft.monotonic,
        wait=ft.wait,
        clock=lambda: 1_700_000_000.0,
        **kw,
    )


def throttled(retry_after: str | None = None) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    responses.add(
        responses.GET,
        URL,
        status=429,
        headers=headers,
        json={"code": "Throttling", "message": "Too many requests"},
    )


@responses.activate
def test_429_storm_without_retry_after_is_bounded_with_jittered_backoff() -> None:
    for _ in range(10):
        throttled()
    ft, codes = FakeTime(), Codes()
    with pytest.raises(ApiError) as info:
        client(ft, codes).sweep()
    assert info.value.code == "Throttling"
    assert len(responses.calls) == 4  # max_attempts
    assert codes.seen == ["Throttling/429"] * 4
    assert len(ft.waits) == 3
    for attempt, delay in enumerate(ft.waits, start=1):
        assert 0 <= delay <= 0.5 * 2 ** (attempt - 1)


@responses.activate
def test_retry_after_seconds_is_honoured_exactly() -> None:
    throttled("3")
    throttled("5")
    responses.add(responses.GET, URL, json=OK_BODY)
    ft, codes = FakeTime(), Codes()
    snap = client(ft, codes).sweep()
    assert [j.job_id for j in snap.jobs] == ["ft-1"]
    assert ft.waits == [3.0, 5.0]
    assert codes.seen == ["Throttling/429", "Throttling/429", "ok"]


@responses.activate
def test_retry_after_http_date() -> None:
    throttled(formatdate(1_700_000_007.0, usegmt=True))
    responses.add(responses.GET, URL, json=OK_BODY)
    ft = FakeTime()
    client(ft).sweep()
    assert ft.waits == [7.0]


@responses.activate
def test_retry_after_beyond_the_deadline_fails_now_and_holds_off_the_next_sweep() -> None:
    throttled("600")
    ft, codes = FakeTime(), Codes()
    c = client(ft, codes, sweep_timeout=60)
    with pytest.raises(ApiError):
        c.sweep()
    assert len(responses.calls) == 1
    assert ft.waits == []
    ft.now += 100  # the next sweep, 100 s later, is still inside Retry-After (capped at 300 s)
    with pytest.raises(ApiError) as info:
        c.sweep()
    assert info.value.code == "Throttling"
    assert "honouring Retry-After" in info.value.message
    assert len(responses.calls) == 1, "no request while Retry-After runs"
    ft.now += 201
    responses.add(responses.GET, URL, json=OK_BODY)
    c.sweep()
    assert len(responses.calls) == 2


@responses.activate
def test_500_burst_then_success() -> None:
    for _ in range(2):
        responses.add(
            responses.GET,
            URL,
            status=500,
            json={"code": "InternalError", "message": "Internal server error!"},
        )
    responses.add(responses.GET, URL, json=OK_BODY)
    ft, codes = FakeTime(), Codes()
    assert len(client(ft, codes).sweep().jobs) == 1
    assert codes.seen == ["InternalError/500", "InternalError/500", "ok"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "InvalidParameter"), (401, "InvalidApiKey"), (403, "AccessDenied"), (404, "NotFound")],
)
@responses.activate
def test_client_errors_are_never_retried(status: int, code: str) -> None:
    for _ in range(4):
        responses.add(responses.GET, URL, status=status, json={"code": code})
    ft = FakeTime()
    with pytest.raises(ApiError):
        client(ft).sweep()
    assert len(responses.calls) == 1
    assert ft.waits == []


@responses.activate
def test_malformed_200_is_not_retried() -> None:
    responses.add(responses.GET, URL, body=b"{not json")
    with pytest.raises(ApiError):
        client(FakeTime()).sweep()
    assert len(responses.calls) == 1


@responses.activate
def test_sweep_deadline_stops_backoff() -> None:
    for _ in range(10):
        responses.add(responses.GET, URL, status=503, body=b"")
    ft = FakeTime()
    with pytest.raises(ApiError):
        client(
            ft, retry=RetryPolicy(max_attempts=10, base_delay=4, max_delay=4), sweep_timeout=9
        ).sweep()
    assert sum(ft.waits) <= 9


@responses.activate
def test_rate_limit_spaces_requests() -> None:
    pages = 5
    for n in range(1, pages + 1):
        jobs = [{"job_id": f"ft-{n}-{i}"} for i in range(2)]
        responses.add(
            responses.GET,
            URL,
            json={"output": {"total": 2 * pages - 1, "jobs": jobs}}
            if n < pages
            else {"output": {"total": 2 * pages - 1, "jobs": jobs[:1]}},
        )
    ft = FakeTime()
    c = client(ft, page_size=2, max_requests_per_second=2)
    assert len(c.sweep().jobs) == 2 * pages - 1
    # The first request is free (burst 1); each later one waits 0.5 s.
    assert ft.waits == [0.5] * (pages - 1)


def test_token_bucket_refills() -> None:
    ft = FakeTime()
    bucket = TokenBucket(4, monotonic=ft.monotonic)
    assert bucket.reserve() == 0
    assert bucket.reserve() == 0.25
    assert bucket.reserve() == 0.5
    ft.now += 10
    assert bucket.reserve() == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("100000", 300.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=1_700_000_000.0) == seconds


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("Throttling", "429", True),
        ("InternalError", "500", True),
        ("InvalidResponse", "502", True),
        ("InvalidResponse", "503", True),
        ("Timeout", "", True),
        ("ConnectionError", "", True),
        ("InvalidParameter", "400", False),
        ("InvalidApiKey", "401", False),
        ("X", "403", False),
        ("NotFound", "404", False),
        ("InvalidResponse", "200", False),
    ],
)
def test_retryable(code: str, status: str, retry: bool) -> None:
    assert is_retryable(code, status) is retry


def test_backoff_bounds() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=5)
    assert policy.backoff(1, rng=lambda: 1.0) == 1
    assert policy.backoff(3, rng=lambda: 1.0) == 4
    assert policy.backoff(10, rng=lambda: 1.0) == 5
    assert policy.backoff(10, rng=lambda: 0.0) == 0


def pages_of_one(
    total: int, ft: FakeTime | None = None, seconds: float = 0.0, announce: bool = True
) -> None:
    """``total`` pages of one job each (``announce``: with ``total`` in the answers); every
    answer takes ``seconds`` of fake time."""
    for n in range(1, total + 1):
        output: dict[str, Any] = {"jobs": [{"job_id": f"ft-{n}"}]}
        if announce:
            output["total"] = total
        body = {"output": output}

        def answer(_: Any, body: dict[str, Any] = body) -> tuple[int, dict[str, str], str]:
            if ft is not None:
                ft.now += seconds
            return 200, {}, json.dumps(body)

        responses.add_callback(responses.GET, URL, callback=answer)


@responses.activate
def test_the_sweep_deadline_is_checked_before_every_request() -> None:
    """A slow API: each page takes 20 s; no request starts after the 50 s deadline."""
    ft = FakeTime()
    pages_of_one(5, ft, seconds=20)
    with pytest.raises(ApiError) as caught:
        client(ft, page_size=1, sweep_timeout=50).sweep()
    assert caught.value.code == "SweepTimeout"
    assert str(caught.value) == (
        "SweepTimeout: the sweep's deadline (--poll.sweep-timeout=50s) came before its next request"
    )
    assert len(responses.calls) == 3  # started at 0, 20 and 40 s; the 4th would start at 60 s
    assert ft.now == 1060.0  # over the deadline by one request's time, no more


@responses.activate
def test_no_rate_limit_wait_crosses_the_deadline_and_no_token_is_lost() -> None:
    ft = FakeTime()
    pages_of_one(5, announce=False)  # no total: nothing tells the sweep it cannot fit
    c = client(ft, page_size=1, sweep_timeout=1.2, max_requests_per_second=2)
    with pytest.raises(ApiError) as caught:
        c.sweep()
    assert caught.value.code == "SweepTimeout"
    # Requests at 0, 0.5 and 1.0 s; the next would start at 1.5 s, past the 1.2 s deadline,
    # so it is neither waited for nor made.
    assert len(responses.calls) == 3
    assert ft.waits == [0.5, 0.5]
    # The token it did not use is still there: the next sweep's first request waits no longer.
    ft.now += 0.5
    assert c._bucket is not None and c._bucket.reserve() == 0.0


@pytest.mark.parametrize(("takes", "calls", "ok"), [(9.0, 2, True), (11.0, 1, False)])
@responses.activate
def test_an_error_inside_the_deadline_is_retried_one_after_it_is_not(
    takes: float, calls: int, ok: bool
) -> None:
    ft = FakeTime()

    def failing(_: Any) -> tuple[int, dict[str, str], str]:
        ft.now += takes
        return 503, {}, ""

    responses.add_callback(responses.GET, URL, callback=failing)
    responses.add(responses.GET, URL, json=OK_BODY)
    c = client(
        ft, retry=RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=0.5), sweep_timeout=10
    )
    if ok:
        assert [job.job_id for job in c.sweep().jobs] == ["ft-1"]
    else:
        with pytest.raises(ApiError) as caught:
            c.sweep()
        assert (caught.value.code, caught.value.http_status) == ("InvalidResponse", "503")
    assert len(responses.calls) == calls


@pytest.mark.parametrize(("sweep_timeout", "requests"), [(4.0, 1), (4.5, 10)])
@responses.activate
def test_a_full_sweep_that_cannot_fit_its_deadline_says_so_after_page_one(
    sweep_timeout: float, requests: int
) -> None:
    """999 jobs at 100 a page are 10 requests: 9 after the first take 4.5 s at 2 a second."""
    for n in range(10):
        jobs = [{"job_id": f"ft-{n}-{i}"} for i in range(100 if n < 9 else 99)]
        responses.add(responses.GET, URL, json={"output": {"total": 999, "jobs": jobs}})
    ft = FakeTime()
    c = client(ft, sweep_timeout=sweep_timeout, max_requests_per_second=2)
    if requests == 10:
        assert len(c.sweep().jobs) == 999
    else:
        with pytest.raises(ApiError) as caught:
            c.sweep()
        assert str(caught.value) == (
            "SweepTimeout: a full sweep of 999 jobs needs 10 requests at "
            "--dashscope.page-size=100, about 4s at --dashscope.max-requests-per-second=2: "
            "more than --poll.sweep-timeout=4s allows; raise the timeout or the rate "
            "(poll_sweep_timeout, max_requests_per_second in a config file)"
        )
    assert len(responses.calls) == requests


@responses.activate
def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    pages_of_one(8, announce=False)
    responses.add(responses.GET, URL, json={"output": {"jobs": []}})
    ft = FakeTime()
    c = client(ft, page_size=1, max_requests_per_second=2, burst=5)
    assert len(c.sweep().jobs) == 8  # 9 requests: the list ends on an empty page
    assert ft.waits == [0.5, 0.5, 0.5, 0.5]  # 5 at once, then one every 0.5 s


def test_the_bucket_never_holds_more_than_its_burst() -> None:
    ft = FakeTime()
    bucket = TokenBucket(2, burst=5, monotonic=ft.monotonic)
    ft.now += 3600  # an hour's quiet earns 5 tokens, not 7200
    assert [bucket.reserve() for _ in range(7)] == [0, 0, 0, 0, 0, 0.5, 1.0]
    assert bucket.time_for(3) == 2.5  # the 3 after those: 1.5, 2.0 and 2.5 s from now


def test_reserve_within_takes_no_token_it_cannot_use_in_time() -> None:
    ft = FakeTime()
    bucket = TokenBucket(2, monotonic=ft.monotonic)
    assert bucket.reserve_within(0.0) == 0.0
    assert bucket.reserve_within(0.4) is None  # the next token is 0.5 s away
    assert bucket.reserve_within(0.5) == 0.5
    ft.now += 1.0
    assert bucket.reserve_within(0.0) == 0.0  # nothing owed for the refused reservation
