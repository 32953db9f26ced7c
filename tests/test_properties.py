"""Property-based tests: arbitrary input never raises anything but the classified error."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import reference_model
from conftest import UTC8
from hypothesis import given, settings
from hypothesis import strategies as st

from ft_exporter.client import ApiError, Page, classify_response, decode_page
from ft_exporter.model import Job, JobParseError, parse_job

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


# --- parse_job gives what it gave before it was made cheap (tests/reference_model.py) ---

#: Values a job's fields take in the wild and near it: equal after cleaning but not
#: before, different by a case, a space, a look-alike or a type; in one field or another.
plausible = st.sampled_from(
    [
        "qwen3-8b",
        "qwen3-8B",
        " qwen3-8b",
        "qwen3-8b\n",
        "qwen3\u20118b",
        "qwen3-8b\u200b",
        "qwen3-8b\x00",
        "qwen3-8b\udc80",
        "SUCCEEDED",
        "succeeded",
        "SUCCEED",
        "cancelled",
        "Running",
        "\u00df",
        "sft",
        "SFT",
        "efficient_sft",
        "\u0130",
        "ft-1",
        "ft-2",
        "ft-1 ",
        ".",
        "..",
        "",
        " ",
        "x" * 256,
        "x" * 257,
        "2024-10-29 16:53:53",
        "2024-10-29T16:53:53.5",
        "2024-02-30 00:00:00",
        "2024-10-29 16:53:5\u0663",
        "1730192033",
        "3",
        "3.0",
        "nan",
        1,
        3,
        0,
        -1,
        3.0,
        1.5,
        True,
        False,
        None,
        10**10,
        1730192033000,
    ]
)
epochs_like = st.fixed_dictionaries({"n_epochs": plausible | json_values}) | json_values
rich_job = st.fixed_dictionaries(
    {},
    optional={
        "job_id": plausible,
        "job_name": plausible,
        "status": plausible,
        "model": plausible,
        "base_model": plausible,
        "training_type": plausible,
        "finetuned_output": plausible,
        "create_time": plausible | json_values,
        "end_time": plausible,
        "usage": plausible,
        "hyper_parameters": epochs_like,
    },
)
zones = st.sampled_from([UTC8, UTC, ZoneInfo("America/New_York")])


def exactly(parse: Any, raw: Any, tz: tzinfo) -> tuple[tuple[str, str], ...]:
    """Every field's type and repr (so 3 is not 3.0, nor -0.0 0.0), or the error."""
    try:
        job: Job = parse(raw, tz)
    except JobParseError as exc:
        return (("JobParseError", str(exc)),)
    return tuple((type(v).__name__, repr(v)) for v in (getattr(job, f.name) for f in fields(job)))


@settings(max_examples=300, deadline=None)
@given(st.lists(rich_job | job_like | json_values, min_size=1, max_size=8), zones)
def test_any_jobs_parse_exactly_as_before(raws: list[Any], tz: tzinfo) -> None:
    """One after another, as in a sweep: what one job leaves shared changes no other."""
    for raw in raws:
        assert exactly(parse_job, raw, tz) == exactly(reference_model.parse_job, raw, tz)
