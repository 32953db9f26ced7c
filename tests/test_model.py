"""Tolerant parsing of job objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import UTC8

from ft_exporter.model import (
    JobParseError,
    normalise_status,
    parse_job,
    parse_learning_rate,
    parse_time,
    parse_timezone,
)

VENDOR_EXAMPLE: dict[str, Any] = {
    "job_id": "ft-202410291653-1c7f",
    "job_name": "ft-202410291653-1c7f",
    "status": "SUCCEEDED",
    "finetuned_output": "qwen3-14b-suffix-ft-202410291653-1c7f",
    "model": "qwen3-14b",
    "base_model": "qwen3-14b",
    "training_file_ids": ["976bd01a-f30b-4414-86fd-50c54486e3ef"],
    "validation_file_ids": [],
    "hyper_parameters": {"n_epochs": 3, "learning_rate": "1.6e-5"},
    "training_type": "sft",
    "create_time": "2024-10-29 16:53:53",
    "workspace_id": "llm-v71tlv***",
    "end_time": "2024-10-29 17:11:26",
    "group": "llm",
    "usage": 279808,
}


def test_vendor_example_parses_exactly() -> None:
    job = parse_job(VENDOR_EXAMPLE, UTC8)
    assert job.job_id == "ft-202410291653-1c7f"
    assert job.status == "SUCCEEDED"
    assert job.terminal
    assert job.finetuned_output == "qwen3-14b-suffix-ft-202410291653-1c7f"
    assert job.usage_tokens == 279808
    # 16:53:53 at UTC+8 is 08:53:53 UTC.
    assert job.created == datetime(2024, 10, 29, 8, 53, 53, tzinfo=UTC).timestamp()
    assert job.ended == datetime(2024, 10, 29, 9, 11, 26, tzinfo=UTC).timestamp()


def test_zone_is_configurable() -> None:
    utc = parse_job(VENDOR_EXAMPLE, parse_timezone("UTC"))
    cst = parse_job(VENDOR_EXAMPLE, parse_timezone("+08:00"))
    assert utc.created is not None and cst.created is not None
    assert utc.created - cst.created == 8 * 3600


def test_minimal_job_gets_neutral_defaults() -> None:
    job = parse_job({"job_id": "ft-1"}, UTC8)
    assert (job.job_name, job.status, job.model, job.training_type) == (
        "ft-1",
        "UNKNOWN",
        "unknown",
        "sft",
    )
    assert (job.created, job.ended, job.usage_tokens, job.finetuned_output) == (None, None, 0, "")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SUCCEEDED", "SUCCEEDED"),
        ("SUCCEED", "SUCCEEDED"),
        ("succeeded", "SUCCEEDED"),
        (" running ", "RUNNING"),
        ("Suspended", "SUSPENDED"),
        ("NEW_STATE", "NEW_STATE"),
        (None, "UNKNOWN"),
        ("", "UNKNOWN"),
        (3, "UNKNOWN"),
    ],
)
def test_status_normalisation(raw: object, expected: str) -> None:
    assert normalise_status(raw) == expected


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        (None, 0),
        (12, 12),
        ("4096", 4096),
        (1.9e3, 1900),
        (-5, 0),
        ("x", 0),
        (True, 0),
        ([1], 0),
        (float("nan"), 0),
    ],
)
def test_usage_shapes(usage: object, tokens: int) -> None:
    assert parse_job({"job_id": "ft-1", "usage": usage}, UTC8).usage_tokens == tokens


def test_missing_usage_key() -> None:
    assert parse_job({"job_id": "ft-1"}, UTC8).usage_tokens == 0


@pytest.mark.parametrize(
    ("raw", "rate"),
    [("1.6e-5", 1.6e-5), (0.000016, 1.6e-5), ("x", None), (None, None), (True, None)],
)
def test_learning_rate_as_string_or_number(raw: object, rate: float | None) -> None:
    assert parse_learning_rate(raw) == rate


def test_both_learning_rate_shapes_parse_as_jobs() -> None:
    for lr in ("1.6e-5", 0.000016):
        job = parse_job({**VENDOR_EXAMPLE, "hyper_parameters": {"learning_rate": lr}}, UTC8)
        assert job.job_id == VENDOR_EXAMPLE["job_id"]


def test_unknown_fields_and_types_are_kept_or_ignored() -> None:
    job = parse_job(
        {
            **VENDOR_EXAMPLE,
            "training_type": "reinforcement",
            "code": "1",
            "output_cnt": 3,
            "brand_new": {"nested": [1]},
        },
        UTC8,
    )
    assert job.training_type == "reinforcement"


@pytest.mark.parametrize(
    "bad", [None, [], "ft-1", 7, {}, {"job_id": ""}, {"job_id": None}, {"job_id": {"x": 1}}]
)
def test_unidentifiable_jobs_raise(bad: object) -> None:
    with pytest.raises(JobParseError):
        parse_job(bad, UTC8)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-10-29 16:53:53", 1730192033.0),
        ("2024-10-29T16:53:53", 1730192033.0),
        ("2024-10-29T08:53:53+00:00", 1730192033.0),
        (1730192033, 1730192033.0),
        (1730192033000, 1730192033.0),
        ("garbage", None),
        ("", None),
        (None, None),
        (0, None),
    ],
)
def test_time_shapes(raw: object, expected: float | None) -> None:
    assert parse_time(raw, UTC8) == expected


@pytest.mark.parametrize(
    ("text", "offset_h"),
    [("UTC", 0), ("+08:00", 8), ("UTC+8", 8), ("-0530", -5.5), ("Asia/Shanghai", 8)],
)
def test_timezones(text: str, offset_h: float) -> None:
    tz = parse_timezone(text)
    offset = datetime(2024, 1, 1, tzinfo=tz).utcoffset()
    assert offset is not None and offset.total_seconds() == offset_h * 3600


@pytest.mark.parametrize("bad", ["Mars/Olympus", "+25:00", "", "8"])
def test_bad_timezones(bad: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_timezone(bad)
