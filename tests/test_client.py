"""The API client against ``responses``: pagination, de-duplication, error classification."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses
from conftest import UTC8, Recorder
from responses import matchers

from ft_exporter.client import (
    HARD_PAGE_CAP,
    USER_AGENT,
    ApiError,
    FineTuneClient,
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
    add_page(page([job(1), job(2)], 1), 1)
    add_page(page([job(3)], 1, 2), 2)
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.message == "the list announced total=1 but held 3 jobs (model=*)"
    assert len(responses.calls) == 2


@responses.activate
def test_full_last_page_is_confirmed_by_an_empty_one() -> None:
    add_page(page([job(1), job(2)], 4), 1)
    add_page(page([job(3), job(4)], 4, 2), 2)
    add_page(page([], 4, 3), 3)
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
    assert len(responses.calls) == 3


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
    monkeypatch.setattr("ft_exporter.client.HARD_PAGE_CAP", 4)
    for n in range(1, 8):
        add_page(page([job(2 * n), job(2 * n + 1)], None, n), n)
    with pytest.raises(ApiError) as info:
        make_client().sweep()
    assert info.value.code == "InvalidResponse"
    assert "page cap of 4 pages" in info.value.message
    assert len(responses.calls) == 4
    assert HARD_PAGE_CAP == 1000


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
def test_request_headers_session_and_timeout() -> None:
    responses.add(
        responses.GET,
        URL,
        json=page([], 0),
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"Bearer {KEY}",
                    "X-DashScope-WorkSpace": "llm-ws1",
                    "User-Agent": USER_AGENT,
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
    assert "ft-exporter/" in USER_AGENT


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
    err = ApiError("InvalidApiKey", "Invalid API-key provided.", "401", "r")
    assert KEY not in str(err)
    assert json.dumps({"k": str(Secret(KEY))}).count(KEY) == 0
