"""Hostile data from the API: text that could break the exposition, and cardinality.

Whatever text the API sends, every scrape renders (text and OpenMetrics) and
parses back; label values are cleaned and bounded where they enter (model.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC
from typing import Any

import fixtures as fx
import pytest
import reference_model
from conftest import Exporter, Simulator, exporter_exe, require_tool, samples, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from ft_exporter import config
from ft_exporter.collector import (
    CollectorSettings,
    FineTuneCollector,
    JobState,
    build_job_state,
    select_aggregate_series,
    single,
)
from ft_exporter.model import (
    ExporterState,
    Job,
    JobParseError,
    Snapshot,
    clean_text,
    parse_job,
)
from ft_exporter.simulator import (
    TEN_KIB,
    UTC8,
    demo_jobs,
    hostile_jobs,
    sprawl_jobs,
    static_jobs,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TEXT_FIELDS = (
    "job_id",
    "job_name",
    "status",
    "model",
    "base_model",
    "training_type",
    "finetuned_output",
)
INFO_FIELDS = TEXT_FIELDS  # the labels of job_info besides account


#: The longest label value the exporter serves, spelt out: model.MAX_LABEL_CHARS must agree.
LABEL_CHARS = 256


def digest(raw_id: str) -> str:
    """The suffix that keeps a cleaned job_id distinct: 16 hex digits of its SHA-256."""
    return hashlib.sha256(raw_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def clipped(text: str) -> str:
    """A value clipped to the label limit: 255 characters and an ellipsis."""
    return text[:255] + "\u2026"


def parse_om(text: str) -> list[Metric]:
    """prometheus_client's OpenMetrics parser (untyped upstream)."""
    return list(parse_openmetrics(text))  # type: ignore[no-untyped-call]


def info_labels(families: list[Metric]) -> dict[str, dict[str, str]]:
    """job_id -> the other labels of its dashscope_finetune_job_info series."""
    out: dict[str, dict[str, str]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "dashscope_finetune_job_info":
                labels = dict(sample.labels)
                assert labels.pop("account") == "default"
                job_id = labels.pop("job_id")
                assert job_id not in out, f"job_id {job_id!r} twice"
                out[job_id] = labels
    return out


def info(
    job_name: str,
    *,
    model: str = "qwen3-8b",
    base_model: str | None = None,
    training_type: str = "sft",
    status: str = "RUNNING",
    finetuned_output: str = "",
) -> dict[str, str]:
    return {
        "job_name": job_name,
        "model": model,
        "base_model": model if base_model is None else base_model,
        "training_type": training_type,
        "status": status,
        "finetuned_output": finetuned_output,
    }


#: What the simulator's ``hostile`` scenario must become, label for label.
HOSTILE_INFO: dict[str, dict[str, str]] = {
    "ft-h01": info("x \ufffd"),
    "ft-h02": info(
        'say "hi" C:\\new\\table \\x41 \\u12 \\"} 1 # EOF \\',
        model="m \ufffd high",
    ),
    "ft-h03": info(
        "line1 line2  line3 end Tab",
        training_type="sft\ufffd",
        status="SUCCEEDED",
        finetuned_output="nul\ufffd bel\ufffd esc\ufffd[31m del\ufffd c1 \ufffd",
    ),
    "ft-h04": info("para graph end", status="PAUSED \ufffd \ufffd"),
    "ft-h05": info(clipped(TEN_KIB), model=clipped(TEN_KIB), finetuned_output=clipped(TEN_KIB)),
    "ft-h06": info(
        "\U0001f680 tune \U0001f469\u200d\U0001f52c",
        base_model="\u202eevil\u202c \u200fRTL\u200e",
    ),
    "ft-dup\ufffd~" + digest("ft-dup\x01"): info("name-ft-dup\ufffd"),
    "ft-dup\ufffd~" + digest("ft-dup\x02"): info("name-ft-dup\ufffd"),
    "ft-\ufffd~" + digest("ft-\udc80"): info("name-ft-\ufffd"),
    TEN_KIB[:238] + "\u2026~" + digest(TEN_KIB): info("long-id"),
}

#: (model, training_type, status) -> jobs, for every dashscope_finetune_jobs series.
HOSTILE_NONZERO = {
    ("qwen3-8b", "sft", "RUNNING"): 6,
    ("qwen3-8b", "sft", "PAUSED \ufffd \ufffd"): 1,
    ("qwen3-8b", "sft\ufffd", "SUCCEEDED"): 1,
    ("m \ufffd high", "sft", "RUNNING"): 1,
    (clipped(TEN_KIB), "sft", "RUNNING"): 1,
}


def aggregate(families: list[Metric], name: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["model"], s.labels["training_type"], s.labels["status"]): s.value
        for family in families
        for s in family.samples
        if s.name == name
    }


def promtool_check(text: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""


def hostile_exporter(
    tmp_path: Any, exporter_factory: Callable[..., Exporter], scenario: str, *args: str
) -> tuple[Simulator, Exporter]:
    sim = Simulator(tmp_path, scenario=scenario)
    exp = exporter_factory(
        [f"--dashscope.base-url={sim.url}", *args], env={"DASHSCOPE_API_KEY": sim.key}
    )
    return sim, exp


def test_hostile_text_renders_in_both_formats_with_exact_labels(
    tmp_path: Any, exporter_factory: Callable[..., Exporter]
) -> None:
    sim, exp = hostile_exporter(tmp_path, exporter_factory, "hostile", "--poll.interval=1h")
    try:
        status, body = exp.get("/metrics")
        assert status == 200, body[:2000]
        text = body.decode("utf-8")
        families = list(text_string_to_metric_families(text))
        assert info_labels(families) == HOSTILE_INFO
        jobs = aggregate(families, "dashscope_finetune_jobs")
        assert len(jobs) == 4 * 7 + 1  # four groups, PAUSED only where a job has it
        assert {k: v for k, v in jobs.items() if v} == HOSTILE_NONZERO
        assert (
            aggregate(families, "dashscope_finetune_usage_tokens")[
                ("qwen3-8b", "sft\ufffd", "SUCCEEDED")
            ]
            == 10
        )
        promtool_check(text)

        status, body = exp.get("/metrics", headers={"Accept": OPENMETRICS})
        assert status == 200, body[:2000]
        om_families = parse_om(body.decode("utf-8"))
        assert info_labels(om_families) == HOSTILE_INFO
        om_jobs = aggregate(om_families, "dashscope_finetune_jobs")
        assert {k: v for k, v in om_jobs.items() if v} == HOSTILE_NONZERO
        assert len(om_jobs) == 4 * 7 + 1
    finally:
        sim.stop()


def test_issue_example_lone_surrogate_in_job_name(
    tmp_path: Any, exporter_factory: Callable[..., Exporter]
) -> None:
    """The job of the report, sent as the raw JSON text "x \\udc80", to a running exporter."""
    sim, exp = hostile_exporter(tmp_path, exporter_factory, "empty", "--poll.interval=1s")
    try:
        body = b'{"jobs": [{"job_id": "ft-1", "job_name": "x \\udc80", "status": "RUNNING"}]}'
        request = urllib.request.Request(sim.url + "/_sim/jobs", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read()) == {"added": 1}

        def has_job() -> bool:
            status, got = exp.get("/metrics")
            assert status == 200, got[:2000]
            return b"ft-1" in got

        wait_for(has_job, what="the job with a lone surrogate on /metrics")
        text = exp.metrics()
        key = (
            "dashscope_finetune_job_info",
            frozenset(
                {
                    "account": "default",
                    "job_id": "ft-1",
                    "job_name": "x \ufffd",
                    "model": "unknown",
                    "base_model": "unknown",
                    "training_type": "sft",
                    "status": "RUNNING",
                    "finetuned_output": "",
                }.items()
            ),
        )
        assert samples(text)[key] == 1
        status, body = exp.get("/metrics", headers={"Accept": OPENMETRICS})
        assert status == 200
        assert parse_om(body.decode())
    finally:
        sim.stop()


# --- the cleaner, unit by unit ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("qwen3-8b", "qwen3-8b"),
        ("x \udc80", "x \ufffd"),
        ("\ud800\udc00", "\ufffd\ufffd"),  # a pair as two code points is still two lone halves
        ("a\x00b\x01c\x1bd\x7fe\x9ff", "a\ufffdb\ufffdc\ufffdd\ufffde\ufffdf"),
        ("a\nb\rc\r\nd\te\vf\fg", "a b c  d e f g"),
        ("a\x85b\u2028c\u2029d\x1ce\x1df\x1eg", "a b c d e f g"),
        ("  \n padded \t ", "padded"),
        ('quote " and \\ backslash \\n', 'quote " and \\ backslash \\n'),
        (  # format characters (joiners, bidi marks, BOM) are text: kept
            "\U0001f469\u200d\U0001f52c \u202eRTL\u202c \ufeff",
            "\U0001f469\u200d\U0001f52c \u202eRTL\u202c \ufeff",
        ),
        ("x" * 256, "x" * 256),
        ("x" * 257, "x" * 255 + "\u2026"),
        (TEN_KIB, TEN_KIB[:255] + "\u2026"),
        ("\x00" * 300, "\ufffd" * 255 + "\u2026"),
    ],
)
def test_clean_text(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned
    assert clean_text(cleaned) == cleaned


def test_issue_json_parses_to_a_safe_job() -> None:
    raw = json.loads('{"job_id": "ft-1", "job_name": "x \\udc80", "status": "run\\u0000ning"}')
    job = parse_job(raw, UTC)
    assert (job.job_id, job.job_name, job.status) == ("ft-1", "x \ufffd", "RUN\ufffdNING")


def test_status_cleaned_after_upper_case_and_aliases_still_apply() -> None:
    assert parse_job({"job_id": "a", "status": " succeed\n"}, UTC).status == "SUCCEEDED"
    assert parse_job({"job_id": "a", "status": "\u2028\x0b"}, UTC).status == "UNKNOWN"
    # "\u00df".upper() is "SS": cleaned after upper-casing, the status is still bounded.
    long = parse_job({"job_id": "a", "status": "\u00df" * 200}, UTC).status
    assert long == "S" * 255 + "\u2026"
    assert parse_job({"job_id": "a", "training_type": "\u0130" * 200}, UTC)
    tt = parse_job({"job_id": "a", "training_type": "\u0130" * 200}, UTC).training_type
    assert len(tt) == LABEL_CHARS and tt.endswith("\u2026")


def test_job_ids_stay_distinct_and_stable() -> None:
    def job_id(raw: Any) -> str:
        return parse_job({"job_id": raw}, UTC).job_id

    assert job_id("ft-202410291653-a8f2") == "ft-202410291653-a8f2"  # clean ids are untouched
    assert job_id(" ft-1 ") == "ft-1"
    a, b = "ft-dup\x01", "ft-dup\x02"
    assert job_id(a) == f"ft-dup\ufffd~{digest(a)}"
    assert job_id(b) == f"ft-dup\ufffd~{digest(b)}"
    assert job_id(a) != job_id(b)
    # Ids equal in their first 10 KiB but for the last character: not merged by clipping.
    long_a, long_b = TEN_KIB + "a", TEN_KIB + "b"
    assert job_id(long_a) == f"{TEN_KIB[:238]}\u2026~{digest(long_a)}"
    assert job_id(long_a) != job_id(long_b)
    assert len(job_id(long_a)) == LABEL_CHARS
    assert job_id("x" * 256) == "x" * 256
    with pytest.raises(JobParseError):
        parse_job({"job_id": " \u2028 "}, UTC)


def test_hostile_jobs_parse_exactly_as_before_issue_12() -> None:
    """The simulator's accounts, hostile one included, through the cheap parse_job and the old.

    Each twice and in one sweep's order, so values shared by one job are met by the next.
    """
    sims = [*hostile_jobs(), *static_jobs(), *sprawl_jobs(), *demo_jobs(1.8e9, random.Random(7))]
    raws = [sim.to_api(1.8e9, UTC8) for sim in sims]
    for raw in raws + json.loads(json.dumps(raws)):
        try:
            expected: Any = reference_model.parse_job(raw, UTC)
        except JobParseError as exc:
            with pytest.raises(JobParseError, match=f"^{exc}$"):
                parse_job(raw, UTC)
            continue
        job = parse_job(raw, UTC)
        names = [f.name for f in fields(Job)]
        assert [(type(getattr(job, n)), getattr(job, n)) for n in names] == [
            (type(getattr(expected, n)), getattr(expected, n)) for n in names
        ]


# --- properties: any text in any field renders and parses back --------------------------

#: Characters of every category (surrogates included) plus the known troublemakers.
hostile_char = st.characters(exclude_categories=()) | st.sampled_from(
    list('\udc80\ud800"\\\n\r\x00\x1b\x7f\x85\u2028\u202e\ufeff\u200d#{}= \u2026\ufffd')
)
hostile_text = st.text(hostile_char, max_size=30) | st.builds(
    lambda c, n: c * n, hostile_char, st.integers(min_value=250, max_value=300)
)
field_value = hostile_text | st.integers() | st.floats() | st.none()
raw_job = st.fixed_dictionaries({field: field_value for field in TEXT_FIELDS})


def render_both(jobs: list[Job]) -> tuple[list[Metric], list[Metric]]:
    """Both exposition formats of the collector over ``jobs``, parsed back."""
    state = ExporterState(Snapshot(tuple(jobs), taken_at=1000.0), up=True, last_success=1000.0)
    registry = CollectorRegistry()
    registry.register(
        FineTuneCollector(single(lambda: state, CollectorSettings()), clock=lambda: 1000.0)
    )
    text = generate_latest(registry).decode("utf-8")
    om = generate_openmetrics(registry).decode("utf-8")  # type: ignore[no-untyped-call]
    return list(text_string_to_metric_families(text)), parse_om(om)


@settings(max_examples=300, deadline=None)
@given(st.lists(raw_job, min_size=1, max_size=4))
def test_any_text_in_every_field_renders_and_parses_back(raws: list[dict[str, Any]]) -> None:
    jobs: dict[str, Job] = {}
    for raw in raws:
        try:
            job = parse_job(raw, UTC)
        except JobParseError:
            continue
        jobs[job.job_id] = job  # de-duplicated by id, as the client does
        for field in TEXT_FIELDS:
            value = getattr(job, field)
            assert value == clean_text(value)
            assert len(value) <= LABEL_CHARS
    for families in render_both(list(jobs.values())):
        expected = {
            job.job_id: {f: getattr(job, f) for f in INFO_FIELDS if f != "job_id"}
            for job in jobs.values()
        }
        assert info_labels(families) == expected


@settings(max_examples=300, deadline=None)
@given(hostile_text, hostile_text)
def test_distinct_job_ids_never_merge(a: str, b: str) -> None:
    try:
        id_a = parse_job({"job_id": a}, UTC).job_id
        id_b = parse_job({"job_id": b}, UTC).job_id
    except JobParseError:
        return
    assert (id_a == id_b) == (a.strip() == b.strip())
    assert len(id_a) <= LABEL_CHARS


# --- the collector's own guard: jobs that did not come through parse_job -------------


def make_job(n: int, status: str = "RUNNING", **fields: Any) -> Job:
    values: dict[str, Any] = {
        "job_id": f"ft-{n:03d}",
        "job_name": f"name-{n}",
        "status": status,
        "model": "qwen3-8b",
        "base_model": "qwen3-8b",
        "training_type": "sft",
        "finetuned_output": "",
        "created": 1000.0 + n,
        "ended": None,
        "usage_tokens": 0,
    }
    values.update(fields)
    return Job(**values)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({field: hostile_text for field in TEXT_FIELDS}))
def test_collector_renders_jobs_built_without_the_parser(fields: dict[str, str]) -> None:
    """The collector cleans again, so even a Job built with raw text renders."""
    if not clean_text(fields["job_id"]):
        fields["job_id"] = "ft-x"
    job = make_job(1, **fields)
    for families in render_both([job]):
        [(job_id, labels)] = info_labels(families).items()
        assert job_id == clean_text(fields["job_id"])
        assert labels == {f: clean_text(fields[f]) for f in INFO_FIELDS if f != "job_id"}


def test_one_unusable_job_is_left_out_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    jobs = (make_job(1), make_job(2, created="soon"), make_job(3, usage_tokens=float("nan")))
    current: list[ExporterState] = []
    registry = CollectorRegistry()
    registry.register(
        FineTuneCollector(single(lambda: current[0], CollectorSettings()), clock=lambda: 1000.0)
    )
    account = frozenset({("account", "default")})
    for _ in range(3):  # three sweeps, each publishing a new snapshot, two scrapes each
        current[:] = [ExporterState(Snapshot(jobs, 1000.0), up=True, last_success=1000.0)]
        for _ in range(2):
            got = samples(generate_latest(registry).decode())
            info = [dict(k[1])["job_id"] for k in got if k[0] == "dashscope_finetune_job_info"]
            assert info == ["ft-001"]
            assert got[("dashscope_finetune_quota_used_jobs", account)] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "account default: 2 job(s) left out of the metrics, their values unusable (a bug): "
        "ValueError: could not convert string to float: 'soon'"
    ]


# --- aggregate cardinality: the zero-fill rule and the cap ----------------------------

DOC = 7  # the vendor's documented statuses, fx.DOCUMENTED


def sprawl(count: int = 200) -> tuple[Job, ...]:
    """Like the simulator's sprawl scenario: each job its own model and undocumented status."""
    return tuple(
        make_job(i, f"STATUS_{i:03d}", model=f"model-{i:03d}", usage_tokens=i) for i in range(count)
    )


def job_state(jobs: tuple[Job, ...], **options: Any) -> tuple[JobState, dict[str, list[Any]]]:
    built = build_job_state(Snapshot(jobs, taken_at=1000.0), CollectorSettings(**options))
    by_name: dict[str, list[Any]] = {}
    for family in built.families:
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(sample)
    return built, by_name


def test_zero_fill_documented_everywhere_other_statuses_only_where_seen() -> None:
    jobs = (
        make_job(1, "RUNNING", model="m1", usage_tokens=5),
        make_job(2, "SUSPENDED", model="m1"),
        make_job(3, "SUSPENDED", model="m1", usage_tokens=3),
        make_job(4, "SUCCEEDED", model="m2", training_type="dpo", ended=1.0, usage_tokens=7),
        make_job(5, "WEIRD", model="m2", training_type="dpo"),
        make_job(6, "FAILED", model="m3", ended=1.0),
    )
    built, series = job_state(jobs)
    assert built.dropped_series == 0
    expected = {
        (m, t, s) for m, t in (("m1", "sft"), ("m2", "dpo"), ("m3", "sft")) for s in fx.DOCUMENTED
    }
    expected |= {("m1", "sft", "SUSPENDED"), ("m2", "dpo", "WEIRD")}
    for name in ("dashscope_finetune_jobs", "dashscope_finetune_usage_tokens"):
        keys = [
            (s.labels["model"], s.labels["training_type"], s.labels["status"]) for s in series[name]
        ]
        assert len(keys) == 3 * 7 + 2 == len(set(keys))
        assert set(keys) == expected
    jobs_of = {
        (s.labels["model"], s.labels["status"]): s.value for s in series["dashscope_finetune_jobs"]
    }
    assert jobs_of[("m1", "SUSPENDED")] == 2 and jobs_of[("m2", "WEIRD")] == 1
    assert jobs_of[("m3", "PENDING")] == 0
    tokens_of = {
        (s.labels["model"], s.labels["status"]): s.value
        for s in series["dashscope_finetune_usage_tokens"]
    }
    assert tokens_of[("m1", "SUSPENDED")] == 3 and tokens_of[("m2", "SUCCEEDED")] == 7
    [dropped] = series["dashscope_finetune_aggregate_series_dropped"]
    assert (dropped.labels, dropped.value) == ({"account": "default"}, 0)


def test_sprawl_under_the_default_cap_is_linear() -> None:
    built, series = job_state(sprawl(200))
    # Was 200 x (7 + 200) = 41,400 series in each family.
    assert len(series["dashscope_finetune_jobs"]) == 200 * (DOC + 1) == 1600
    assert len(series["dashscope_finetune_usage_tokens"]) == 1600
    assert built.dropped_series == 0


@pytest.mark.parametrize(
    ("cap", "groups", "extra", "dropped"),
    [
        (1600, 200, 200, 0),
        (1599, 200, 199, 1),
        (1000, 142, 6, 600),  # 142 x 7 = 994, 6 left for undocumented series
        (7, 1, 0, 1593),
    ],
)
def test_cap_keeps_whole_groups_in_rank_order(
    cap: int, groups: int, extra: int, dropped: int
) -> None:
    built, series = job_state(sprawl(200), max_aggregate_series=cap)
    jobs = series["dashscope_finetune_jobs"]
    assert len(jobs) == len(series["dashscope_finetune_usage_tokens"]) == cap
    assert built.dropped_series == dropped
    [gauge] = series["dashscope_finetune_aggregate_series_dropped"]
    assert gauge.value == dropped
    # All groups rank alike (one active job each): by model name.
    assert {s.labels["model"] for s in jobs} == {f"model-{i:03d}" for i in range(groups)}
    assert sorted(s.labels["status"] for s in jobs if s.labels["status"] not in fx.DOCUMENTED) == [
        f"STATUS_{i:03d}" for i in range(extra)
    ]


def test_group_rank_active_first_then_more_jobs_then_name() -> None:
    counts = {
        ("a-ended", "sft", "SUCCEEDED"): 9,  # most jobs, but none active
        ("b-big", "sft", "RUNNING"): 1,
        ("b-big", "sft", "QUEUING"): 2,
        ("c-one", "sft", "RUNNING"): 1,
        ("d-one", "sft", "RUNNING"): 1,
    }
    active = {("b-big", "sft"), ("c-one", "sft"), ("d-one", "sft")}

    def groups(cap: int) -> list[str]:
        selected, _ = select_aggregate_series(counts, active, cap)
        return sorted({model for model, _, _ in selected})

    assert groups(7) == ["b-big"]
    assert groups(14) == ["b-big", "c-one"]
    assert groups(21) == ["b-big", "c-one", "d-one"]
    assert groups(28) == ["a-ended", "b-big", "c-one", "d-one"]
    assert select_aggregate_series(counts, active, 27)[1] == 7


def test_undocumented_series_most_jobs_first_within_the_budget() -> None:
    counts = {
        ("m1", "sft", "RUNNING"): 5,
        ("m1", "sft", "ODD_ONE"): 1,
        ("m2", "sft", "RUNNING"): 1,
        ("m2", "sft", "ODD_MANY"): 3,
        ("m2", "sft", "ODD_TOO"): 3,
    }
    active = {("m1", "sft"), ("m2", "sft")}
    selected, dropped = select_aggregate_series(counts, active, 2 * 7 + 2)
    assert [key for key in selected if key[2].startswith("ODD")] == [
        ("m2", "sft", "ODD_MANY"),
        ("m2", "sft", "ODD_TOO"),
    ]
    assert dropped == 1
    assert len(selected) == 16
    # The same counts always select the same series, whatever their order.
    again, _ = select_aggregate_series(dict(reversed(list(counts.items()))), active, 16)
    assert again == selected


def test_dropped_count_logged_when_it_changes_not_per_sweep(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ft_exporter.collector")
    current: list[ExporterState] = []

    def publish(jobs: tuple[Job, ...]) -> None:
        current[:] = [ExporterState(Snapshot(jobs, 1000.0), up=True, last_success=1000.0)]

    collector = FineTuneCollector(
        single(lambda: current[0], CollectorSettings(max_aggregate_series=1000)),
        clock=lambda: 1000.0,
    )
    registry = CollectorRegistry()
    registry.register(collector)
    for jobs in (sprawl(200), sprawl(200), sprawl(200), sprawl(100), sprawl(200)):
        publish(jobs)  # a new snapshot each time, as every sweep publishes
        for _ in range(2):
            generate_latest(registry)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    left_out = (
        " aggregate series left out of dashscope_finetune_jobs and "
        "dashscope_finetune_usage_tokens each: over --jobs.max-aggregate-series=1000"
    )
    assert messages == [
        ("WARNING", "account default: 600" + left_out),
        ("INFO", "account default: no aggregate series left out any more"),
        ("WARNING", "account default: 600" + left_out),
    ]


def sweeps(text: str) -> float:
    got = samples(text).get(
        ("dashscope_finetune_sweeps_total", frozenset({("account", "default")}))
    )
    return got or 0.0


def test_sprawl_capped_in_the_real_process(
    tmp_path: Any, exporter_factory: Callable[..., Exporter]
) -> None:
    sim = Simulator(tmp_path, scenario="sprawl")
    try:
        capped = exporter_factory(
            [f"--dashscope.base-url={sim.url}", "--poll.interval=0.2s"],
            env={"DASHSCOPE_API_KEY": sim.key, "FT_EXPORTER_JOBS_MAX_AGGREGATE_SERIES": "1000"},
        )
        default = exporter_factory(
            [f"--dashscope.base-url={sim.url}", "--poll.interval=1h"],
            env={"DASHSCOPE_API_KEY": sim.key},
        )
        # Scrape through several sweeps: each new snapshot is aggregated once.
        wait_for(lambda: sweeps(capped.metrics()) >= 4, what="four sweeps")
        text = capped.metrics()
        got = samples(text)
        for name in ("dashscope_finetune_jobs", "dashscope_finetune_usage_tokens"):
            assert sum(1 for n, _ in got if n == name) == 1000
        models = {dict(labels)["model"] for n, labels in got if n == "dashscope_finetune_jobs"}
        assert models == {f"model-{i:03d}" for i in range(142)}
        account = frozenset({("account", "default")})
        assert got[("dashscope_finetune_aggregate_series_dropped", account)] == 600
        assert got[("dashscope_finetune_quota_used_jobs", account)] == 200  # all still counted
        warnings = [line for line in capped.output().splitlines() if "left out" in line]
        assert len(warnings) == 1, capped.output()
        assert "level=warn" in warnings[0]
        assert 'msg="account default: 600 aggregate series left out' in warnings[0]

        got = samples(default.metrics())
        for name in ("dashscope_finetune_jobs", "dashscope_finetune_usage_tokens"):
            assert sum(1 for n, _ in got if n == name) == 1600
        assert got[("dashscope_finetune_aggregate_series_dropped", account)] == 0
        assert "left out" not in default.output()
    finally:
        sim.stop()


def test_max_aggregate_series_default_flag_and_env() -> None:
    key = {"DASHSCOPE_API_KEY": "sk-not-used-0123456789"}
    assert config.load([], key).max_aggregate_series == 2000
    env = {**key, "FT_EXPORTER_JOBS_MAX_AGGREGATE_SERIES": "700"}
    assert config.load([], env).max_aggregate_series == 700
    assert config.load(["--jobs.max-aggregate-series=7"], env).max_aggregate_series == 7


@pytest.mark.parametrize("bad", ["0", "-1", "6", "abc", "", "1e3", "2000 series"])
@pytest.mark.parametrize("via", ["flag", "env"])
@pytest.mark.e2e
def test_bad_max_aggregate_series_exits_2_with_one_line(bad: str, via: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "DASHSCOPE_API_KEY": "sk-not-used-0123456789"}
    args = [exporter_exe(), "--web.listen-address=127.0.0.1:0"]
    if via == "flag":
        args.append(f"--jobs.max-aggregate-series={bad}")
    else:
        env["FT_EXPORTER_JOBS_MAX_AGGREGATE_SERIES"] = bad
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("ft-exporter: error: ")
    assert "--jobs.max-aggregate-series" in line
    if bad.lstrip("-").isdigit():
        assert line == (
            "ft-exporter: error: --jobs.max-aggregate-series must be at least 7 "
            f"(one model's documented statuses), got {bad}"
        )


# -- text from the operator: flags and variables ------------------------------------------

HOSTILE_SETTINGS = [
    pytest.param(b"team\xff", id="not-utf8"),
    pytest.param(b"team\x1b[31m", id="escape"),
    pytest.param(b"team\rx", id="bare-cr"),
    pytest.param("team\u0085".encode(), id="c1-nel"),
]


@pytest.mark.parametrize("raw", HOSTILE_SETTINGS)
@pytest.mark.parametrize(
    ("flag", "variable"),
    [
        ("--dashscope.account", b"FT_EXPORTER_DASHSCOPE_ACCOUNT"),
        ("--dashscope.workspace", b"FT_EXPORTER_DASHSCOPE_WORKSPACE"),
        ("--dashscope.model", b"FT_EXPORTER_DASHSCOPE_MODEL"),
        ("--web.telemetry-path", b"FT_EXPORTER_WEB_TELEMETRY_PATH"),
    ],
)
@pytest.mark.parametrize("via", ["flag", "env"])
@pytest.mark.e2e
def test_operator_text_that_is_not_clean_text_exits_2(
    raw: bytes, flag: str, variable: bytes, via: str
) -> None:
    """Bytes that are not UTF-8 (or hold controls) in argv or the environment: exit 2 at start.

    Before, a non-UTF-8 account label reached the metrics as a lone surrogate and made
    every scrape answer 500; a workspace like it failed every API request.
    """
    env = {b"PATH": b"/usr/bin:/bin", b"DASHSCOPE_API_KEY": b"sk-not-used-0123456789"}
    args: list[bytes] = [exporter_exe().encode(), b"--web.listen-address=127.0.0.1:0"]
    if via == "flag":
        args.append(flag.encode() + b"=" + raw)
    else:
        env[variable] = raw
    result = subprocess.run(args, capture_output=True, timeout=30, env=env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.decode("utf-8", "replace").splitlines()
    assert line.startswith("ft-exporter: error: ")
    assert flag in line or variable.decode() in line
    assert "control character" in line or "not valid UTF-8" in line
