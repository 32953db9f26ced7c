"""Property-based tests: arbitrary input never raises anything but the classified error."""

from __future__ import annotations

import json
from typing import Any

from conftest import UTC8
from hypothesis import given, settings
from hypothesis import strategies as st

from ft_exporter.client import ApiError, Page, classify_response, decode_page
from ft_exporter.model import JobParseError, parse_job

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
job_keys = st.sampled_from(
    [
        "job_id",
        "job_name",
        "status",
        "model",
        "base_model",
        "usage",
        "training_type",
        "create_time",
        "end_time",
        "finetuned_output",
        "hyper_parameters",
    ]
)
job_like = st.dictionaries(job_keys, json_values, max_size=11)
page_like = st.fixed_dictionaries(
    {
        "request_id": json_values,
        "output": st.fixed_dictionaries(
            {
                "total": json_values,
                "jobs": st.lists(job_like | json_values, max_size=5) | json_values,
            }
        ),
    }
)


def check_page(body: bytes) -> None:
    try:
        page = decode_page(body)
    except ApiError as err:
        assert err.code == "InvalidResponse"
        assert err.http_status == "200"
        return
    assert isinstance(page, Page)
    assert isinstance(page.jobs, list)
    assert page.total is None or page.total >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_invalid_response(body: bytes) -> None:
    check_page(body)


@settings(max_examples=300, deadline=None)
@given(json_values | page_like)
def test_any_json_decodes_or_invalid_response(doc: Any) -> None:
    check_page(json.dumps(doc).encode())


@settings(max_examples=500, deadline=None)
@given(job_like | json_values)
def test_any_job_parses_or_is_skipped(raw: Any) -> None:
    try:
        job = parse_job(raw, UTC8)
    except JobParseError:
        return
    assert job.job_id
    assert job.usage_tokens >= 0
    assert job.status == job.status.upper()
    assert job.created is None or isinstance(job.created, float)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=100, max_value=599),
    st.binary(max_size=200) | (json_values | page_like).map(lambda d: json.dumps(d).encode()),
)
def test_any_error_answer_is_classified(status: int, body: bytes) -> None:
    err = classify_response(status, body)
    assert err.http_status == str(status)
    assert 0 < len(err.code) <= 64
    assert all(ch.isalnum() or ch in "._-" for ch in err.code)
