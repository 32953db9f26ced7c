"""The API client against ``responses``: pagination, de-duplication, error classification."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from conftest import UTC8, Recorder
from responses import matchers

from ft_exporter import __version__, simulator
from ft_exporter.client import (
    ApiError,
    FineTuneClient,
    Page,
    classify_response,
    decode_log_page,
    decode_page,
    log_path,
    normalise_base_url,
)
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import Secret

BASE = "https://dashscope-intl.aliyuncs.com"
URL = BASE + "/api/v1/fine-tunes"
KEY = "sk-client-test-key-abcdef"


def job(n: int, status: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    return {
        "job_id": f"ft-{n:04d}",
        "status": status,
        "model": "qwen3-8b",
        "training_type": "sft",
        "create_time": "2024-10-29 16:53:53",
        **extra,
    }


def page(jobs: list[Any], total: int | None, page_no: int = 1) -> dict[str, Any]:
    output: dict[str, Any] = {"page_no": page_no, "page_size": 2, "jobs": jobs}
    if total is not None:
        output["total"] = total
    return {"request_id": f"rid-{page_no}", "output": output}


def add_page(
    body: Any, page_no: int, status: int = 200, model: str | None = None, page_size: int = 2
) -> None:
    params = {"page_no": str(page_no), "page_size": str(page_size)}
    if model:
        params["model"] = model
    responses.add(
        responses.GET, URL, json=body, status=status, match=[matchers.query_param_matcher(params)]
    )


def make_client(
    recorder: Recorder | None = None,
    page_size: int = 2,
    retry: RetryPolicy | None = None,
    **kw: Any,
) -> FineTuneClient:
    """A client that never retries unless told to (retries have tests of their own)."""
    return FineTuneClient(
        BASE,
        Secret(KEY),
        page_size=page_size,
        timeout=2.0,
        tz=UTC8,
        observer=recorder,
        retry=retry or RetryPolicy(max_attempts=1),
        **kw,
    )


@responses.activate
def test_walks_every_page_until_total_seen() -> None:
    add_page(page([job(1), job(2)], 5), 1)
    add_page(page([job(3), job(4)], 5, 2), 2)
    add_page(page([job(5)], 5, 3), 3)
    rec = Recorder()
    snap = make_client(rec).sweep()
    assert sorted(j.job_id for j in snap.jobs) == [f"ft-{n:04d}" for n in range(1, 6)]
    assert len(responses.calls) == 3
    assert rec.codes == [None, None, None]


@responses.activate
def test_total_larger_than_the_list_is_invalid_response() -> None:
    add_page(page([job(1), job(2)], 50), 1)
    add_page(page([], 50, 2), 2)
    rec = Recorder()
    with pytest.raises(ApiError) as info:
        make_client(rec).sweep()
    assert rec.codes == [None, None, ("InvalidResponse", "200")]
    assert info.value.code == "InvalidResponse"
    assert info.value.message == "the list announced total=50 but held 2 jobs (model=*)"
    assert info.value.request_id == "rid-2"
    assert len(responses.calls) == 2


@responses.activate
def test_total_smaller_than_the_list_is_invalid_response() -> None:
    # Page 1 already holds more than the total: the sweep stops there and rejects it.
    add_page(page([job(1), job(2)], 1), 1)
    add_page(page([job(3)], 1, 2), 2)
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.message == "the list announced total=1 but held 2 jobs (model=*)"
    assert len(responses.calls) == 1


@responses.activate
def test_a_full_last_page_that_reaches_the_total_ends_the_sweep() -> None:
    """ceil(total / page_size) requests: no extra empty page when total fills the pages."""
    add_page(page([job(1), job(2)], 4), 1)
    add_page(page([job(3), job(4)], 4, 2), 2)
    add_page(page([], 4, 3), 3)
    assert len(make_client().sweep().jobs) == 4
    assert len(responses.calls) == 2


@responses.activate
def test_without_a_total_a_full_last_page_is_confirmed_by_an_empty_one() -> None:
    add_page(page([job(1), job(2)], None), 1)
    add_page(page([job(3), job(4)], None, 2), 2)
    add_page(page([], None, 3), 3)
    assert len(make_client().sweep().jobs) == 4
    assert len(responses.calls) == 3


@responses.activate
def test_stops_at_short_page_without_total() -> None:
    add_page(page([job(1), job(2)], None), 1)
    add_page(page([job(3)], None, 2), 2)
    snap = make_client().sweep()
    assert len(snap.jobs) == 3
    assert len(responses.calls) == 2


@responses.activate
def test_total_growing_mid_sweep_is_followed_and_duplicates_collapse() -> None:
    # A job created during the sweep pushes ft-0002 onto page 2: seen twice, counted once.
    add_page(page([job(1), job(2)], 3), 1)
    add_page(page([job(2), job(3)], 4, 2), 2)
    add_page(page([job(4)], 4, 3), 3)
    snap = make_client().sweep()
    assert sorted(j.job_id for j in snap.jobs) == ["ft-0001", "ft-0002", "ft-0003", "ft-0004"]
    assert len(responses.calls) == 3


@responses.activate
def test_total_shrinking_mid_sweep_is_followed() -> None:
    add_page(page([job(1), job(2)], 6), 1)
    add_page(page([job(3), job(4)], 4, 2), 2)
    add_page(page([], 4, 3), 3)
    snap = make_client().sweep()
    assert len(snap.jobs) == 4
    assert len(responses.calls) == 2  # page 2's total is reached on page 2


@responses.activate
def test_repeating_page_is_invalid_response_not_an_endless_loop() -> None:
    for n in range(1, 6):
        add_page(page([job(1), job(2)], 1000, n), n)
    rec = Recorder()
    with pytest.raises(ApiError) as info:
        make_client(rec).sweep()
    assert info.value.code == "InvalidResponse"
    assert "no new job" in info.value.message
    assert len(responses.calls) == 4  # page 1, then 3 pages without a new job
    # Four good requests, then the listing as a whole is rejected and counted.
    assert rec.codes == [None, None, None, None, ("InvalidResponse", "200")]
    assert rec.calls[-1][0] == -1.0


@responses.activate
def test_page_cap_bounds_a_list_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ft_exporter.listing.HARD_PAGE_CAP", 4)
    for n in range(1, 8):
        add_page(page([job(2 * n), job(2 * n + 1)], None, n), n)
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.code == "InvalidResponse"
    assert "page cap of 4 pages" in info.value.message
    assert len(responses.calls) == 4


@responses.activate
def test_the_real_page_cap_is_1000_pages() -> None:
    """Without a total, only the hard cap ends a list that never ends: 1000 pages, no more."""

    def new_page(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        n = int(parse_qs(urlsplit(str(request.url)).query)["page_no"][0])
        return 200, {}, json.dumps(page([job(2 * n), job(2 * n + 1)], None, n))

    responses.add_callback(responses.GET, URL, callback=new_page)
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.code == "InvalidResponse"
    assert "page cap of 1000 pages hit before the list ended" in info.value.message
    assert len(responses.calls) == 1000


@responses.activate
def test_one_sweep_per_model_filter_and_dedup_across_them() -> None:
    add_page(page([job(1), job(2)], 3), 1, model="qwen3-8b")
    add_page(page([job(5)], 3), 2, model="qwen3-8b")
    add_page(page([job(2)], 1), 1, model="qwen3-14b")
    snap = make_client().sweep(["qwen3-8b", "qwen3-14b"])
    assert sorted(j.job_id for j in snap.jobs) == ["ft-0001", "ft-0002", "ft-0005"]
    assert len(responses.calls) == 3


@responses.activate
def test_malformed_job_is_skipped_and_counted() -> None:
    add_page(page([job(1), {"status": "RUNNING"}], 3), 1)
    add_page(page(["not an object"], 3, 2), 2)
    snap = make_client().sweep()
    assert [j.job_id for j in snap.jobs] == ["ft-0001"]
    assert snap.malformed_jobs == 2


@responses.activate
def test_request_headers_and_timeout() -> None:
    responses.add(
        responses.GET,
        URL,
        json=page([], 0),
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"Bearer {KEY}",
                    "X-DashScope-WorkSpace": "llm-ws1",
                    "User-Agent": f"ft-exporter/{__version__} (+Prometheus exporter; "
                    "python-requests)",
                }
            )
        ],
    )
    client = make_client(workspace="llm-ws1")
    client.sweep()
    client.sweep()
    assert len(responses.calls) == 2
    sent = responses.calls[0].request
    assert sent.req_kwargs["timeout"] == 2.0  # type: ignore[attr-defined]


def test_one_session_one_connection_for_every_page_and_sweep() -> None:
    """Keep-alive: three sweeps of three pages each go over one TCP connection.

    Three full sweeps: the static scenario is out of create_time order and holds a
    malformed entry, so no sweep of it is incremental.
    """
    sim = simulator.serve(key=KEY, scenario="static")
    try:
        client = FineTuneClient(sim.url, Secret(KEY), page_size=7, tz=UTC8)
        for _ in range(3):
            assert len(client.sweep().jobs) == 19
        client.close()
        assert (sim.account.list_requests, sim.account.connections) == (9, 1)
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "InvalidParameter"),
        (400, "UnsupportedOperation"),
        (401, "InvalidApiKey"),
        (404, "NotFound"),
        (409, "Conflict"),
        (429, "Throttling"),
        (500, "InternalError"),
    ],
)
@responses.activate
def test_documented_error_codes_are_classified(status: int, code: str) -> None:
    responses.add(
        responses.GET,
        URL,
        status=status,
        json={"code": code, "message": "m", "request_id": "rid-err"},
    )
    rec = Recorder()
    with pytest.raises(ApiError) as info:
        make_client(rec).sweep()
    assert (info.value.code, info.value.http_status) == (code, str(status))
    assert info.value.request_id == "rid-err"
    assert rec.codes == [(code, str(status))]


@responses.activate
def test_msg_is_accepted_for_message() -> None:
    responses.add(responses.GET, URL, status=429, json={"code": "Throttling", "msg": "slow down"})
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.message == "slow down"


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "text/html"),
        (503, b"", "text/plain"),
        (504, b'{"code": ', "application/json"),
        (500, b'{"message": "no code here"}', "application/json"),
        (200, b"<html>login</html>", "text/html"),
        (200, b'{"request_id": "r", "output": {"jobs": [', "application/json"),
        (200, b'{"request_id": "r"}', "application/json"),
        (200, b'{"request_id": "r", "output": {"jobs": null}}', "application/json"),
        (200, b'{"output": {"jobs": [], "total": "many"}}', "application/json"),
        (200, b"[1, 2]", "application/json"),
        (200, b"\xff\xfe not utf-8", "application/json"),
    ],
)
@responses.activate
def test_bodies_without_a_code_are_invalid_response(
    status: int, body: bytes, content_type: str
) -> None:
    responses.add(responses.GET, URL, status=status, body=body, content_type=content_type)
    rec = Recorder()
    with pytest.raises(ApiError) as info:
        make_client(rec).sweep()
    assert (info.value.code, info.value.http_status) == ("InvalidResponse", str(status))
    assert rec.codes == [("InvalidResponse", str(status))]


@responses.activate
def test_timeout_and_refused_connection() -> None:
    responses.add(responses.GET, URL, body=requests.ReadTimeout("read timed out"))
    responses.add(responses.GET, URL, body=requests.ConnectionError("refused"))
    rec = Recorder()
    client = make_client(rec)
    with pytest.raises(ApiError) as first:
        client.sweep()
    with pytest.raises(ApiError) as second:
        client.sweep()
    assert (first.value.code, first.value.http_status) == ("Timeout", "")
    assert (second.value.code, second.value.http_status) == ("ConnectionError", "")
    assert rec.codes == [("Timeout", ""), ("ConnectionError", "")]


def test_refused_connection_for_real() -> None:
    from conftest import free_port

    client = FineTuneClient(
        f"http://127.0.0.1:{free_port()}",
        Secret(KEY),
        tz=UTC8,
        timeout=1,
        retry=RetryPolicy(max_attempts=1),
    )
    with pytest.raises(ApiError) as info:
        client.sweep()
    assert info.value.code == "ConnectionError"


@responses.activate
def test_unknown_code_is_kept_but_bounded() -> None:
    responses.add(
        responses.GET, URL, status=403, json={"code": "AccessDenied.Workspace" + "x" * 200 + ' {"}'}
    )
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.code.startswith("AccessDenied.Workspacexxx")
    assert len(info.value.code) == 64


@responses.activate
def test_failure_on_a_later_page_fails_the_sweep() -> None:
    add_page(page([job(1), job(2)], 4), 1)
    responses.add(responses.GET, URL, status=429, json={"code": "Throttling", "message": "m"})
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.code == "Throttling"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://dashscope-intl.aliyuncs.com", "https://dashscope-intl.aliyuncs.com"),
        ("https://dashscope.aliyuncs.com/api/v1", "https://dashscope.aliyuncs.com"),
        ("https://dashscope.aliyuncs.com/api/v1/", "https://dashscope.aliyuncs.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://proxy.example/dashscope/api/v1", "https://proxy.example/dashscope"),
    ],
)
def test_base_url_forms(given: str, expected: str) -> None:
    assert normalise_base_url(given) == expected


@pytest.mark.parametrize(
    "bad", ["dashscope.aliyuncs.com", "ftp://x", "https://", "http://h:99999", "https://u:p@h"]
)
def test_bad_base_urls(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message checked in test_config
        normalise_base_url(bad)


def test_key_not_in_repr_or_errors() -> None:
    client = make_client()
    assert KEY not in repr(client)
    assert KEY not in str(Secret(KEY)) + repr(Secret(KEY)) + f"{Secret(KEY)}"
    assert json.dumps({"k": str(Secret(KEY))}).count(KEY) == 0


@responses.activate
def test_a_key_echoed_by_the_api_is_in_no_error() -> None:
    """The API may quote the key it refused; the error the client raises must not."""
    responses.add(
        responses.GET,
        URL,
        status=401,
        json={
            "code": "InvalidApiKey",
            "message": f"Invalid API-key provided: {KEY}",
            "request_id": f"rid-{KEY}",
        },
    )
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    err = info.value
    assert (err.code, err.http_status) == ("InvalidApiKey", "401")
    assert err.message.startswith("Invalid API-key provided: ")
    assert KEY not in str(err) + repr(err) + err.message + err.request_id


# --- Exact values for what scripts/mutation.sh found unpinned ----------------------------

HOST = "(scheme 'https', host 'api.example')"


def test_api_error_prints_code_status_message_and_request_id() -> None:
    bare = ApiError("Timeout", "no answer within 2s")
    assert (str(bare), bare.args, bare.http_status, bare.request_id, bare.retry_after) == (
        "Timeout: no answer within 2s",
        ("no answer within 2s",),
        "",
        "",
        None,
    )
    full = ApiError("Throttling", "slow down", "429", "rid-9")
    assert str(full) == "Throttling HTTP 429: slow down request_id=rid-9"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "api.example",
            "not an http(s) base URL: no scheme (use e.g. https://dashscope-intl.aliyuncs.com)",
        ),
        ("https://[::1", "not an http(s) base URL: it does not parse as a URL"),
        (
            "ftp://api.example",
            "not an http(s) base URL with a host (scheme 'ftp', host 'api.example')",
        ),
        ("https:///api/v1", "not an http(s) base URL with a host (scheme 'https', host '')"),
        ("https://api.example/ api/v1", f"base URL holds whitespace or control characters {HOST}"),
        ("https://u@api.example", f"base URL must not carry credentials {HOST}"),
        ("https://api.example:port", f"base URL has a malformed port {HOST}"),
        ("https://api.example?", f"base URL must not have a query or fragment {HOST}"),
        ("https://api.example#", f"base URL must not have a query or fragment {HOST}"),
        ("https://api.example/#top", f"base URL must not have a query or fragment {HOST}"),
        ("https://api.example/?a=1", f"base URL must not have a query or fragment {HOST}"),
        ("https://api.example/v2", f"base URL path must be empty or end in /api/v1 {HOST}"),
    ],
)
def test_bad_base_urls_say_exactly_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        normalise_base_url(url)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.example/", "https://api.example"),
        ("https://api.example/api/v1/", "https://api.example"),
        ("https://api.example/pre/api/v1/fine-tunes", "https://api.example/pre"),
        ("http://api.example:8080/api/v1", "http://api.example:8080"),
        ("https://API.EXAMPLEX/", "https://API.EXAMPLEX"),
    ],
)
def test_base_url_origin_form(url: str, origin: str) -> None:
    assert normalise_base_url(url) == origin


def classify(body: object, status: int = 400, key: Secret | None = None) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_response(status, raw, key)


def test_classification_keeps_the_api_fields_bounded_and_exact() -> None:
    err = classify({"code": " Bad.Code_1-x!? ", "message": 12345, "request_id": "r" * 150}, 400)
    assert (err.code, err.message, err.http_status, err.request_id) == (
        "Bad.Code_1-x",
        "12345",
        "400",
        "r" * 100,
    )
    assert classify({"code": "C" * 100, "message": "m" * 300}).code == "C" * 64
    assert classify({"code": "C", "message": "m" * 300}).message == "m" * 200
    no_message = classify({"code": "InternalError"}, 500)
    assert (no_message.message, no_message.request_id) == ("HTTP 500", "")
    assert classify({"code": "!!"}).code == "InvalidResponse"


def test_classification_scrubs_the_key_from_every_field() -> None:
    err = classify({"code": KEY, "message": f"bad {KEY}", "request_id": KEY}, 401, Secret(KEY))
    assert (err.code, err.message, err.request_id) == ("redacted", "bad <redacted>", "<redacted>")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "HTTP 502 with empty body"),
        (b"  \n", "HTTP 502 with empty body"),
        (b"<html>bad gateway</html>", "HTTP 502 with body without an error code"),
        (b'{"message": "no code"}', "HTTP 502 with body without an error code"),
        (b'{"code": 7}', "HTTP 502 with body without an error code"),
    ],
)
def test_answers_without_a_code_say_what_came(body: bytes, message: str) -> None:
    err = classify(body, 502)
    assert (err.code, err.message, err.http_status, err.request_id) == (
        "InvalidResponse",
        message,
        "502",
        "",
    )


@pytest.mark.parametrize(
    ("body", "message", "request_id"),
    [
        (b"\xff", "body is not valid UTF-8", ""),
        (b"{", "body is not JSON", ""),
        (b"[]", "body is not a JSON object", ""),
        (b'{"request_id": "r1"}', "body has no 'output' object", "r1"),
        (b'{"request_id": "r2", "output": {"jobs": {}}}', "'output.jobs' is not a list", "r2"),
        (
            b'{"request_id": "r3", "output": {"jobs": [], "total": -1}}',
            "'output.total' is not a count",
            "r3",
        ),
        (
            b'{"request_id": 5, "output": {"jobs": [], "total": true}}',
            "'output.total' is not a count",
            "",
        ),
    ],
)
def test_bad_pages_say_exactly_what_is_wrong(body: bytes, message: str, request_id: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_page(body)
    err = caught.value
    assert (err.code, err.message, err.http_status, err.request_id) == (
        "InvalidResponse",
        message,
        "200",
        request_id,
    )


def test_a_good_page_keeps_a_bounded_scrubbed_request_id() -> None:
    body = {"request_id": f"{KEY}-" + "r" * 200, "output": {"jobs": [], "total": 0}}
    got = decode_page(json.dumps(body).encode(), 200, Secret(KEY))
    assert got == Page(jobs=[], total=0, request_id=("<redacted>-" + "r" * 200)[:100])
    plain = decode_page(json.dumps({"request_id": 7, "output": {"jobs": [1]}}).encode())
    assert plain == Page(jobs=[1], total=None, request_id="")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@responses.activate
def test_retry_after_holds_off_the_next_sweep_until_exactly_its_end() -> None:
    clock = Clock()
    responses.add(
        responses.GET,
        URL,
        json={"code": "Throttling", "message": "slow down"},
        status=429,
        headers={"Retry-After": "30"},
    )
    client = make_client(monotonic=clock, clock=lambda: 5000.0)
    with pytest.raises(ApiError):
        client.sweep()
    clock.now += 29.6
    with pytest.raises(ApiError) as held:
        client.sweep()
    assert str(held.value) == (
        "Throttling HTTP 429: honouring Retry-After: no request for another 0s"
    )
    clock.now = 110.0
    with pytest.raises(ApiError) as held:
        client.sweep()
    assert held.value.message == "honouring Retry-After: no request for another 20s"
    assert len(responses.calls) == 1
    responses.replace(responses.GET, URL, json=page([job(1)], 1))
    clock.now = 130.0  # exactly the end of the wait: allowed
    snapshot = client.sweep()
    assert (snapshot.taken_at, [j.job_id for j in snapshot.jobs]) == (5000.0, ["ft-0001"])
    assert len(responses.calls) == 2


class FixedBackoff(RetryPolicy):
    """Always one second between attempts (waited for by a wait() that returns at once)."""

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return 1.0


@responses.activate
@pytest.mark.parametrize(("sweep_timeout", "attempts"), [(0.5, 1), (100.0, 3)])
def test_retries_stop_at_the_sweep_deadline(sweep_timeout: float, attempts: int) -> None:
    responses.add(responses.GET, URL, json={"code": "ServiceUnavailable"}, status=503)
    client = make_client(
        retry=FixedBackoff(max_attempts=3), sweep_timeout=sweep_timeout, wait=lambda _: False
    )
    with pytest.raises(ApiError):
        client.sweep()
    assert len(responses.calls) == attempts
    # Outside a sweep there is no deadline: fetch_page retries to max_attempts.
    with pytest.raises(ApiError):
        client.fetch_page(1)
    assert len(responses.calls) == attempts + 3


@responses.activate
def test_malformed_jobs_add_up_across_filters_and_are_logged_on_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ft_exporter.client")
    caplog.set_level(logging.DEBUG, logger="ft_exporter.listing")
    for model in ("m1", "m2"):
        add_page(page([{"job_id": ""}, job(1 if model == "m1" else 2)], None), 1, model=model)
        add_page(page([], None, 2), 2, model=model)
    client = make_client()

    def warnings() -> list[str]:
        out = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        return out

    snapshot = client.sweep(["m1", "m2"])
    assert snapshot.malformed_jobs == 2
    assert sorted(j.job_id for j in snapshot.jobs) == ["ft-0001", "ft-0002"]
    assert [j.created for j in snapshot.jobs] == [1730192033.0, 1730192033.0]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.count("skipping malformed job on page 1: job has no job_id") == 2
    assert warnings() == [
        "1 malformed job(s) in the list skipped (model=m1)",
        "1 malformed job(s) in the list skipped (model=m2)",
    ]
    caplog.clear()
    client.sweep(["m1", "m2"])
    assert warnings() == []


@responses.activate
def test_a_clean_first_sweep_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    add_page(page([job(1)], 1), 1)
    make_client().sweep()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@responses.activate
def test_two_pages_of_known_or_malformed_jobs_are_tolerated_three_are_not() -> None:
    bad = {"job_id": ""}
    add_page(page([bad, bad], None, 1), 1)
    add_page(page([bad, bad], None, 2), 2)
    add_page(page([job(1)], None, 3), 3)
    snapshot = make_client().sweep()
    assert (snapshot.malformed_jobs, [j.job_id for j in snapshot.jobs]) == (4, ["ft-0001"])
    responses.reset()
    for n in (1, 2, 3):
        add_page(page([bad, bad], None, n), n)
    with pytest.raises(ApiError) as caught:
        make_client().sweep()
    assert (caught.value.message, caught.value.request_id) == (
        "3 pages in a row brought no new job (model=*, page 3)",
        "rid-3",
    )


@responses.activate
def test_a_total_that_disagrees_counts_malformed_jobs_too() -> None:
    add_page(page([{"job_id": ""}, job(1)], 5), 1)
    add_page(page([], 5, 2), 2)
    with pytest.raises(ApiError) as caught:
        make_client().sweep()
    assert (caught.value.message, caught.value.request_id) == (
        "the list announced total=5 but held 2 jobs (model=*)",
        "rid-2",
    )


@responses.activate
@pytest.mark.parametrize(
    ("announce", "cap"),
    [
        # total=14 at 2 a page: 7 pages, plus 5 of slack.
        ({1: 14}, 12),
        # A total announced late still allows the next page.
        ({20: 23}, 21),
    ],
)
def test_the_page_cap_follows_the_announced_total(announce: dict[int, int], cap: int) -> None:
    # Each page after the first brings one new job (and ft-0001 again), so the jobs seen
    # stay short of the total and only the cap ends the sweep.
    for n in range(1, cap + 2):
        add_page(page([job(1), job(n + 1)], announce.get(n), n), n)
    with pytest.raises(ApiError) as caught:
        make_client().sweep()
    assert (caught.value.message, caught.value.request_id) == (
        f"page cap of {cap} pages hit before the list ended (model=*, {cap + 1} jobs seen)",
        f"rid-{cap}",
    )
    assert len(responses.calls) == cap


def test_the_log_path_quotes_the_whole_id_and_refuses_dot_segments() -> None:
    assert log_path("ft-a/b c") == "/api/v1/fine-tunes/ft-a%2Fb%20c/logs"
    for bad in ("", ".", ".."):
        with pytest.raises(
            ValueError, match=re.escape(f"job id {bad!r} cannot be put in a URL path")
        ):
            log_path(bad)


def test_a_log_page_decodes_its_total_lines_and_request_id() -> None:
    body = {"request_id": "rid-1", "output": {"total": 9, "logs": ["a", None, 3, "b"]}}
    page = decode_log_page(json.dumps(body).encode())
    # A line that is no string is an empty line: counted, and the offsets after it hold.
    assert (page.total, page.lines, page.request_id) == (9, ["a", "", "", "b"], "rid-1")


def test_a_log_page_without_lines_is_an_empty_page() -> None:
    page = decode_log_page(json.dumps({"request_id": "r", "output": {"total": 4}}).encode())
    assert (page.total, page.lines) == (4, [])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"total": "4", "logs": []}, "'output.total' is not a count"),
        ({"total": 4, "logs": "a"}, "'output.logs' is not a list"),
    ],
)
def test_a_malformed_log_page_names_what_is_wrong(output: dict[str, Any], message: str) -> None:
    body = json.dumps({"request_id": "rid-2", "output": output}).encode()
    with pytest.raises(ApiError) as raised:
        decode_log_page(body)
    err = raised.value
    assert (err.code, err.message, err.http_status, err.request_id) == (
        "InvalidResponse",
        message,
        "200",
        "rid-2",
    )


def test_a_log_page_that_is_no_json_keeps_its_status() -> None:
    with pytest.raises(ApiError) as raised:
        decode_log_page(b"<html>", 203)
    assert (raised.value.code, raised.value.http_status) == ("InvalidResponse", "203")


def test_a_log_pages_request_id_loses_the_key() -> None:
    body = {"request_id": f"r-{KEY}", "output": {"total": 0, "logs": []}}
    page = decode_log_page(json.dumps(body).encode(), 200, Secret(KEY))
    assert KEY not in page.request_id
    assert page.request_id.startswith("r-")


@responses.activate
@pytest.mark.parametrize(("sweep_timeout", "calls"), [(1.9, 1), (2.0, 5)])
def test_a_full_sweep_that_cannot_fit_its_deadline_fails_after_page_one(
    sweep_timeout: float, calls: int
) -> None:
    """9 jobs at 2 a page are 5 requests: the 4 after the first take 2 s at 2 a second."""
    for n in range(1, 6):
        add_page(page([job(2 * n - 1), job(2 * n)][: 1 if n == 5 else 2], 9, n), n)
    clock = Clock()
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.now += seconds
        return False

    client = make_client(
        max_requests_per_second=2, sweep_timeout=sweep_timeout, monotonic=clock, wait=wait
    )
    if calls == 5:
        assert len(client.sweep().jobs) == 9
        assert waits == [0.5] * 4
    else:
        with pytest.raises(ApiError) as caught:
            client.sweep()
        assert str(caught.value) == (
            "SweepTimeout: a full sweep of 9 jobs needs 5 requests at "
            "--dashscope.page-size=2, about 2s at --dashscope.max-requests-per-second=2: "
            "more than --poll.sweep-timeout=1.9s allows; raise the timeout or the rate "
            "(poll_sweep_timeout, max_requests_per_second in a config file)"
        )
    assert len(responses.calls) == calls
