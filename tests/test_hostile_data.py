"""Hostile data from the API: text that could break the exposition, and cardinality.

Whatever text the API sends, every scrape renders (text and OpenMetrics) and
parses back; label values are cleaned and bounded where they enter (model.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import timezone
from typing import Any

import pytest
from conftest import Exporter, Simulator, require_tool, samples, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from ft_exporter.collector import CollectorSettings, FineTuneCollector
from ft_exporter.model import (
    MAX_LABEL_CHARS,
    ExporterState,
    Job,
    JobParseError,
    Snapshot,
    clean_text,
    parse_job,
)
from ft_exporter.simulator import TEN_KIB

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
    job = parse_job(raw, timezone.utc)
    assert (job.job_id, job.job_name, job.status) == ("ft-1", "x \ufffd", "RUN\ufffdNING")


def test_status_cleaned_after_upper_case_and_aliases_still_apply() -> None:
    assert parse_job({"job_id": "a", "status": " succeed\n"}, timezone.utc).status == "SUCCEEDED"
    assert parse_job({"job_id": "a", "status": "\u2028\x0b"}, timezone.utc).status == "UNKNOWN"
    # "\u00df".upper() is "SS": cleaned after upper-casing, the status is still bounded.
    long = parse_job({"job_id": "a", "status": "\u00df" * 200}, timezone.utc).status
    assert long == "S" * 255 + "\u2026"
    assert parse_job({"job_id": "a", "training_type": "\u0130" * 200}, timezone.utc)
    tt = parse_job({"job_id": "a", "training_type": "\u0130" * 200}, timezone.utc).training_type
    assert len(tt) == MAX_LABEL_CHARS and tt.endswith("\u2026")


def test_job_ids_stay_distinct_and_stable() -> None:
    def job_id(raw: Any) -> str:
        return parse_job({"job_id": raw}, timezone.utc).job_id

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
    assert len(job_id(long_a)) == MAX_LABEL_CHARS
    assert job_id("x" * 256) == "x" * 256
    assert job_id(a) == job_id(a)  # the same id every sweep
    with pytest.raises(JobParseError):
        parse_job({"job_id": " \u2028 "}, timezone.utc)


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
    registry.register(FineTuneCollector(lambda: state, CollectorSettings(), clock=lambda: 1000.0))
    text = generate_latest(registry).decode("utf-8")
    om = generate_openmetrics(registry).decode("utf-8")  # type: ignore[no-untyped-call]
    return list(text_string_to_metric_families(text)), parse_om(om)


@settings(max_examples=300, deadline=None)
@given(st.lists(raw_job, min_size=1, max_size=4))
def test_any_text_in_every_field_renders_and_parses_back(raws: list[dict[str, Any]]) -> None:
    jobs: dict[str, Job] = {}
    for raw in raws:
        try:
            job = parse_job(raw, timezone.utc)
        except JobParseError:
            continue
        jobs[job.job_id] = job  # de-duplicated by id, as the client does
        for field in TEXT_FIELDS:
            value = getattr(job, field)
            assert value == clean_text(value)
            assert len(value) <= MAX_LABEL_CHARS
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
        id_a = parse_job({"job_id": a}, timezone.utc).job_id
        id_b = parse_job({"job_id": b}, timezone.utc).job_id
    except JobParseError:
        return
    assert (id_a == id_b) == (a.strip() == b.strip())
    assert len(id_a) <= MAX_LABEL_CHARS
