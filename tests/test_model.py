"""Tolerant parsing of job objects."""

from __future__ import annotations

import hashlib
import json
from dataclasses import FrozenInstanceError, fields
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from conftest import UTC8

from ft_exporter import model
from ft_exporter.model import (
    MAX_LABEL_CHARS,
    Job,
    JobParseError,
    clean_text,
    estimated_end,
    normalise_status,
    parse_job,
    parse_learning_rate,
    parse_time,
    parse_timezone,
    progress_ratio,
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


# --- Exact values for what scripts/mutation.sh found unpinned ----------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("CANCELLED", "CANCELED"), ("cancelled", "CANCELED"), ("SUCCESS", "SUCCEEDED")],
)
def test_vendor_spellings_map_to_the_documented_status(raw: str, expected: str) -> None:
    """A CANCELLED job that stayed CANCELLED would count against the quota."""
    job = parse_job({"job_id": "ft-1", "status": raw}, UTC8)
    assert job.status == expected
    assert job.terminal


@pytest.mark.parametrize("text", ["utc", " Utc ", "z", "Z", "gmt", "GMT"])
def test_utc_names_in_any_case(text: str) -> None:
    assert parse_timezone(text) is UTC


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("+14:00", 14 * 60), ("-14", -14 * 60), ("+13:59", 13 * 60 + 59), ("+05:45", 345)],
)
def test_offsets_at_the_edges_of_the_range(text: str, minutes: int) -> None:
    assert parse_timezone(text) == timezone(timedelta(minutes=minutes))


@pytest.mark.parametrize("bad", ["+15:00", "+14:60", "-12:60"])
def test_offsets_past_the_range(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^timezone offset out of range: "):
        parse_timezone(bad)


@pytest.mark.parametrize(
    ("text", "limit", "cleaned"),
    [
        ("abcd", 4, "abcd"),  # exactly the limit: kept whole
        ("abcde", 4, "abc\u2026"),  # one past it: clipped to end in the ellipsis
        ("a\tb\nc", 10, "a b c"),
        ("a\x1bb", 10, "a\ufffdb"),
        ("a\x7fb\x9f", 10, "a\ufffdb\ufffd"),
        ("\u2028x\u2029", 10, "x"),
        (" padded ", 10, "padded"),
        (" abcd", 4, "abcd"),  # exactly the limit once stripped: not clipped
    ],
)
def test_clean_text_exactly(text: str, limit: int, cleaned: str) -> None:
    assert clean_text(text, limit) == cleaned


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, None),
        (False, None),
        (1, 1.0),
        (0.5, 0.5),
        (-3, None),
        (100_000_000_000, 100_000_000_000.0),  # the threshold itself: still seconds
        (100_000_000_001, 100_000_000.001),  # past it: milliseconds
        ("  ", None),
        ([], None),
        ("2024-10-29 16:53:53.250000", 1730192033.25),
        ("2024-10-29T16:53:53", 1730192033.0),
        ("2024-10-29", 1730131200.0),  # ISO date alone: midnight in the configured zone
        ("2024-10-29T08:53:53Z", 1730192033.0),
    ],
)
def test_time_shapes_exactly(raw: object, expected: float | None) -> None:
    assert parse_time(raw, UTC8) == expected


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        (0.9, 0),
        (-0.5, 0),
        ("0.9", 0),
        ("-7", 0),
        (float("inf"), 0),
        (float("-inf"), 0),
        ("1e3", 1000),
    ],
)
def test_usage_never_rounds_up_or_goes_negative(usage: object, tokens: int) -> None:
    assert parse_job({"job_id": "ft-1", "usage": usage}, UTC8).usage_tokens == tokens


def test_each_text_field_comes_from_its_own_key() -> None:
    job = parse_job(
        {
            "job_id": 12345,
            "job_name": " name ",
            "model": "qwen-ft",
            "base_model": "qwen-base",
            "training_type": "DPO",
            "finetuned_output": "out",
        },
        UTC8,
    )
    assert (job.job_id, job.job_name, job.model, job.base_model, job.training_type) == (
        "12345",
        "name",
        "qwen-ft",
        "qwen-base",
        "dpo",
    )
    assert job.finetuned_output == "out"
    only_base = parse_job({"job_id": "ft-2", "base_model": "qwen-base"}, UTC8)
    assert (only_base.model, only_base.base_model) == ("qwen-base", "qwen-base")
    only_model = parse_job({"job_id": "ft-3", "model": "qwen-ft"}, UTC8)
    assert (only_model.model, only_model.base_model) == ("qwen-ft", "qwen-ft")
    assert parse_job({"job_id": 7, "job_name": 8.5}, UTC8).job_name == "8.5"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "job is a list, not an object"),
        ("ft-1", "job is a str, not an object"),
        ({"job_id": ""}, "job has no job_id"),
        ({"job_id": True}, "job has no job_id"),
    ],
)
def test_unidentifiable_jobs_say_why(raw: object, message: str) -> None:
    with pytest.raises(JobParseError) as caught:
        parse_job(raw, UTC8)
    assert str(caught.value) == message


def test_an_id_that_cleaning_changes_gets_a_digest_of_the_original() -> None:
    raw = "ft-\udc80\n" + "x" * 300
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    job_id = parse_job({"job_id": raw}, UTC8).job_id
    assert len(job_id) == MAX_LABEL_CHARS
    assert job_id == "ft-\ufffd " + "x" * (MAX_LABEL_CHARS - 16 - 1 - 5 - 1) + "\u2026~" + digest
    short = parse_job({"job_id": "a\tb"}, UTC8).job_id
    assert short == "a b~" + hashlib.sha256(b"a\tb").hexdigest()[:16]


def test_planned_epochs_and_tailability_come_from_the_job() -> None:
    job = parse_job({"job_id": "ft-1", "hyper_parameters": {"n_epochs": 3}}, UTC8)
    assert (job.n_epochs, job.tailable) == (3, True)
    for dots in (".", ".."):  # a path segment of its own: no log URL can name it
        assert parse_job({"job_id": dots}, UTC8).tailable is False


@pytest.mark.parametrize(
    ("epoch", "epochs", "ratio"),
    [
        (0.5, 1, 0.5),
        (1.5, 3, 0.5),
        (4.0, 3, 1.0),  # clamped: the summary line may round past the plan
        (-1.0, 3, 0.0),
        (1.0, 0, None),  # no plan to measure against
        (1.0, -2, None),
        (float("nan"), 3, None),
        (float("inf"), 3, None),
        (None, 3, None),
        (1.0, None, None),
    ],
)
def test_progress_ratio(epoch: float | None, epochs: float | None, ratio: float | None) -> None:
    assert progress_ratio(epoch, epochs) == ratio


@pytest.mark.parametrize(
    ("started", "now", "progress", "end"),
    [
        (100.0, 200.0, 0.5, 300.0),
        (100.0, 200.0, 1.0, 200.0),
        (100.0, 200.0, 0.0, None),  # no progress yet: no pace
        (100.0, 200.0, -0.1, None),
        (100.0, 100.0, 0.5, None),  # no time has passed: no pace
        (100.0, 50.0, 0.5, None),
        (None, 200.0, 0.5, None),
        (100.0, 200.0, None, None),
    ],
)
def test_estimated_end(
    started: float | None, now: float, progress: float | None, end: float | None
) -> None:
    assert estimated_end(started, now, progress) == end


# --- Shared values: one object per repeated value, never one job's value in another -----


@pytest.fixture(autouse=True)
def fresh_tables() -> None:
    """Each test starts with empty tables: what earlier tests shared must not hide a bug."""
    for table in (
        model._shared_names,
        model._shared_statuses,
        model._shared_types,
        model._shared_epochs,
    ):
        table.clear()


def api_job(**fields: Any) -> dict[str, Any]:
    """A job as json.loads makes it: strings of its own, equal to but not those of others."""
    job: dict[str, Any] = json.loads(json.dumps({**VENDOR_EXAMPLE, **fields}))
    return job


def test_equal_values_are_one_object_across_jobs() -> None:
    a = parse_job(api_job(job_id="ft-a", job_name="ft-a"), UTC8)
    b = parse_job(api_job(job_id="ft-b", job_name="ft-b"), UTC8)
    for name in ("status", "model", "base_model", "training_type", "n_epochs"):
        assert getattr(a, name) is getattr(b, name), name
    assert a.base_model is a.model
    assert a.job_name is a.job_id  # equal text, kept once
    assert (a.n_epochs, b.n_epochs) == (3.0, 3.0)


def test_sharing_never_makes_different_values_equal() -> None:
    """Values equal but for case, a space, a look-alike or a type each keep their own."""
    models = [
        "qwen3-8b",
        "qwen3-8B",
        "qwen3\u20118b",
        "qwen3-8b\u200b",
        " qwen3-8b",
        "qwen3-8b\x00",
    ]
    jobs = [parse_job({"job_id": f"ft-{i}", "model": m}, UTC8) for i, m in enumerate(models)]
    assert [j.model for j in jobs] == [
        "qwen3-8b",
        "qwen3-8B",
        "qwen3\u20118b",
        "qwen3-8b\u200b",
        "qwen3-8b",  # stripped: the same label
        "qwen3-8b\ufffd",
    ]
    # n_epochs 1 and True hash alike: True is no count, and 1 must not lend it 1.0.
    for order in ([1, True, "1", 1.0, "1.0", " 1 "], [True, "1.0", 1.0, 1, " 1 ", "1"]):
        epochs = {
            repr(n): parse_job({"job_id": "e", "hyper_parameters": {"n_epochs": n}}, UTC8).n_epochs
            for n in order
        }
        assert epochs == {
            "1": 1.0,
            "True": None,
            "'1'": 1.0,
            "1.0": 1.0,
            "'1.0'": 1.0,
            "' 1 '": 1.0,
        }
    statuses = ["succeed", "SUCCEEDED", "Succeeded", "SUCCEEDED ", "SUCCESS", "STATUS_1"]
    assert [parse_job({"job_id": "s", "status": s}, UTC8).status for s in statuses] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "STATUS_1",
    ]
    assert parse_job({"job_id": "t", "training_type": "SFT"}, UTC8).training_type == "sft"
    assert parse_job({"job_id": "t", "training_type": "Sft "}, UTC8).training_type == "sft"


def test_a_string_subclass_that_equals_anything_is_never_shared() -> None:
    class Liar(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash("qwen3-8b")

    assert parse_job({"job_id": "ft-1", "model": "qwen3-8b"}, UTC8).model == "qwen3-8b"
    job = parse_job({"job_id": "ft-2", "model": Liar("other"), "status": Liar("RUNNING")}, UTC8)
    assert (str.__str__(job.model), str.__str__(job.status)) == ("other", "RUNNING")


def test_shared_tables_stay_bounded_whatever_the_api_sends() -> None:
    def fill(count: int, start: int = 0) -> None:
        for i in range(start, start + count):
            parse_job(
                {"job_id": "f", "model": f"m{i}", "hyper_parameters": {"n_epochs": i + 1}}, UTC8
            )

    fill(model.SHARED_VALUES)
    assert len(model._shared_names) == len(model._shared_epochs) == model.SHARED_VALUES
    fill(1, start=model.SHARED_VALUES)  # one more: the table starts afresh
    assert len(model._shared_names) == len(model._shared_epochs) == 1
    for i in range(model.SHARED_VALUES * 3):
        job = parse_job(
            {
                "job_id": f"ft-{i}",
                "model": f"model-{i}",
                "status": f"S{i}",
                "training_type": f"t{i}",
                "hyper_parameters": {"n_epochs": i + 1},
            },
            UTC8,
        )
        # Right after a table starts afresh as well as before.
        assert (job.model, job.status, job.training_type, job.n_epochs) == (
            f"model-{i}",
            f"S{i}",
            f"t{i}",
            float(i + 1),
        )
    tables = (model._shared_names, model._shared_statuses, model._shared_types)
    assert all(0 < len(table) <= model.SHARED_VALUES for table in tables)
    assert 0 < len(model._shared_epochs) <= model.SHARED_VALUES
    longest = "m" * model.SHARED_MAX_CHARS
    assert parse_job({"job_id": "ft-long", "model": " " + longest}, UTC8).model == longest
    assert " " + longest not in model._shared_names  # kept out: a table is bounded in bytes
    assert parse_job({"job_id": "ft-long", "model": longest}, UTC8).model == longest
    assert longest in model._shared_names


def test_epochs_shared_within_bounds_and_the_same_beyond_them() -> None:
    def epochs(n: object) -> float | None:
        return parse_job({"job_id": "e", "hyper_parameters": {"n_epochs": n}}, UTC8).n_epochs

    three = [epochs(n) for n in (3, 3, "3", "3")]
    assert three == [3.0] * 4
    assert three[0] is three[1] and three[2] is three[3]
    assert epochs(10**9) == 1e9 and 10**9 in model._shared_epochs
    assert epochs(10**9 + 1) is None and 10**9 + 1 not in model._shared_epochs
    assert epochs(-(10**9)) is None and -(10**9) in model._shared_epochs
    longest = "0" * (model.SHARED_MAX_CHARS - 1) + "2"
    assert epochs(longest) == 2.0 and longest in model._shared_epochs
    assert epochs(" " + longest) == 2.0 and " " + longest not in model._shared_epochs
    assert epochs(3) == 3.0  # still shared after all that


def test_any_mapping_is_a_job_and_any_mapping_holds_its_epochs() -> None:
    """JSON gives dicts, but parse_job takes any Mapping; the fast paths must not narrow it."""
    job = parse_job(MappingProxyType({**VENDOR_EXAMPLE}), UTC8)
    assert job == parse_job(VENDOR_EXAMPLE, UTC8)
    hyper = MappingProxyType({"n_epochs": 4})
    assert parse_job({"job_id": "m", "hyper_parameters": hyper}, UTC8).n_epochs == 4.0


def test_jobs_built_by_parse_job_are_jobs_like_any_other() -> None:
    """parse_job sets a Job's slots directly: the same object Job(...) makes, still frozen."""
    job = parse_job(VENDOR_EXAMPLE, UTC8)
    values = {f.name: getattr(job, f.name) for f in fields(Job)}
    assert job == Job(**values)
    assert hash(job) == hash(Job(**values))
    assert repr(job) == repr(Job(**values))
    assert not hasattr(Job, "__post_init__")
    with pytest.raises(FrozenInstanceError):
        job.status = "FAILED"  # type: ignore[misc]
    assert model._new_job(*values.values()) == job
