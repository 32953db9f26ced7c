"""Snapshot -> metric families: zero-filling, quota counting, the series cap, staleness."""

from __future__ import annotations

import fixtures as fx
from conftest import samples, value
from prometheus_client import CollectorRegistry, generate_latest

from ft_exporter.collector import (
    CollectorSettings,
    FineTuneCollector,
    QuotaRule,
    select_job_series,
)
from ft_exporter.model import ExporterState, Job, Snapshot


def job(
    n: int,
    status: str,
    *,
    model: str = "qwen3-8b",
    ttype: str = "sft",
    created: float | None = None,
    ended: float | None = None,
    usage: int = 0,
) -> Job:
    return Job(
        job_id=f"ft-{n:03d}",
        job_name=f"name-{n}",
        status=status,
        model=model,
        base_model=model,
        training_type=ttype,
        finetuned_output="",
        created=1000.0 + n if created is None else created,
        ended=ended,
        usage_tokens=usage,
    )


def render(state: ExporterState, now: float = 2000.0, **settings: object) -> str:
    registry = CollectorRegistry()
    registry.register(
        FineTuneCollector(
            lambda: state,
            CollectorSettings(**settings),  # type: ignore[arg-type]
            clock=lambda: now,
        )
    )
    return generate_latest(registry).decode()


def state_of(*jobs: Job, malformed: int = 0, last_success: float = 1990.0) -> ExporterState:
    return ExporterState(
        Snapshot(tuple(jobs), taken_at=last_success, malformed_jobs=malformed),
        up=True,
        last_success=last_success,
        last_sweep_duration=0.25,
    )


def test_zero_fill_documented_statuses_others_only_where_seen() -> None:
    text = render(
        state_of(
            job(1, "RUNNING", usage=5),
            job(2, "SUSPENDED"),
            job(3, "SUCCEEDED", model="qwen3-14b", ttype="dpo_lora", usage=7),
        )
    )
    got = samples(text)
    jobs = {k: v for k, v in got.items() if k[0] == "dashscope_finetune_jobs"}
    # 2 (model, type) groups x 7 documented statuses, plus SUSPENDED where a job has it.
    assert len(jobs) == 2 * 7 + 1
    assert sum(jobs.values()) == 3
    labels = {"account": "default", "model": "qwen3-8b", "training_type": "sft"}
    assert value(text, "dashscope_finetune_jobs", **labels, status="RUNNING") == 1
    assert value(text, "dashscope_finetune_jobs", **labels, status="FAILED") == 0
    assert value(text, "dashscope_finetune_jobs", **labels, status="SUSPENDED") == 1
    assert (
        value(
            text,
            "dashscope_finetune_jobs",
            account="default",
            model="qwen3-14b",
            training_type="dpo_lora",
            status="SUSPENDED",
        )
        is None
    )
    assert value(text, "dashscope_finetune_usage_tokens", **labels, status="RUNNING") == 5
    assert (
        value(
            text,
            "dashscope_finetune_usage_tokens",
            account="default",
            model="qwen3-14b",
            training_type="dpo_lora",
            status="SUCCEEDED",
        )
        == 7
    )


def test_quota_counts_everything_but_failed_and_canceled_by_default() -> None:
    st = state_of(*(job(i, s) for i, s in enumerate([*fx.DOCUMENTED, "SUSPENDED"])))
    assert value(render(st), "dashscope_finetune_quota_used_jobs", account="default") == 6
    only = QuotaRule(counted=frozenset({"RUNNING", "SUCCEEDED"}))
    assert (
        value(render(st, quota=only), "dashscope_finetune_quota_used_jobs", account="default") == 2
    )
    assert (
        value(render(st, quota_limit=30), "dashscope_finetune_quota_limit_jobs", account="default")
        == 30
    )


def test_account_label_everywhere() -> None:
    text = render(state_of(job(1, "RUNNING")), account="team-a")
    for (name, labels), _ in samples(text).items():
        assert ("account", "team-a") in labels, name


def test_series_cap_keeps_active_jobs_then_most_recent_ended() -> None:
    jobs = [
        job(1, "RUNNING", created=100),
        job(2, "PENDING", created=300),
        job(3, "SUCCEEDED", created=50, ended=900),
        job(4, "FAILED", created=60, ended=500),
        job(5, "CANCELED", created=70, ended=950),
    ]
    assert [j.job_id for j in select_job_series(jobs, 4)] == [
        "ft-002",
        "ft-001",
        "ft-005",
        "ft-003",
    ]
    text = render(state_of(*jobs), max_job_series=3)
    info = [dict(k[1])["job_id"] for k in samples(text) if k[0] == "dashscope_finetune_job_info"]
    assert sorted(info) == ["ft-001", "ft-002", "ft-005"]
    ended = [
        dict(k[1])["job_id"]
        for k in samples(text)
        if k[0] == "dashscope_finetune_job_ended_timestamp_seconds"
    ]
    assert ended == ["ft-005"]
    assert (
        value(
            text,
            "dashscope_finetune_job_ended_timestamp_seconds",
            account="default",
            job_id="ft-005",
        )
        == 950
    )
    assert (
        value(
            text,
            "dashscope_finetune_job_created_timestamp_seconds",
            account="default",
            job_id="ft-002",
        )
        == 300
    )
    # Aggregates still count every job, capped or not.
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 3


def test_series_cap_of_zero_and_many_jobs() -> None:
    many = [job(i, "SUCCEEDED", ended=float(i)) for i in range(500)]
    text = render(state_of(*many), max_job_series=100)
    assert sum(1 for k in samples(text) if k[0] == "dashscope_finetune_job_info") == 100
    text0 = render(state_of(*many), max_job_series=0)
    assert not any(k[0] == "dashscope_finetune_job_info" for k in samples(text0))


def test_before_first_sweep_only_status_series() -> None:
    text = render(ExporterState())
    assert value(text, "dashscope_finetune_up", account="default") == 0
    assert value(text, "dashscope_finetune_quota_limit_jobs", account="default") == 20
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") is None
    assert (
        value(text, "dashscope_finetune_last_success_timestamp_seconds", account="default") is None
    )


def test_failed_sweep_keeps_last_snapshot_until_staleness_limit() -> None:
    good = state_of(job(1, "RUNNING"), last_success=1000.0)
    failed = ExporterState(good.snapshot, up=False, last_success=1000.0, last_sweep_duration=3.0)
    fresh = render(failed, now=1000.0 + 900.0, max_staleness=900.0)
    assert value(fresh, "dashscope_finetune_up", account="default") == 0
    assert value(fresh, "dashscope_finetune_quota_used_jobs", account="default") == 1
    assert value(fresh, "dashscope_finetune_sweep_duration_seconds", account="default") == 3.0
    stale = render(failed, now=1000.0 + 900.5, max_staleness=900.0)
    assert value(stale, "dashscope_finetune_quota_used_jobs", account="default") is None
    assert not any(k[0].startswith("dashscope_finetune_job") for k in samples(stale))
    assert (
        value(stale, "dashscope_finetune_last_success_timestamp_seconds", account="default")
        == 1000.0
    )
    assert value(stale, "dashscope_finetune_quota_limit_jobs", account="default") == 20


def test_malformed_count_and_empty_account() -> None:
    text = render(state_of(malformed=2))
    assert value(text, "dashscope_finetune_malformed_jobs", account="default") == 2
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 0
    assert not any(k[0] == "dashscope_finetune_jobs" for k in samples(text))


def test_aggregation_runs_once_per_snapshot() -> None:
    st = state_of(job(1, "RUNNING"))
    collector = FineTuneCollector(lambda: st, CollectorSettings(), clock=lambda: 2000.0)
    first = list(collector.collect())
    second = list(collector.collect())
    assert first[0] is second[0]  # the cached family object, not a recomputation


def test_describe_names_every_family() -> None:
    collector = FineTuneCollector(ExporterState, CollectorSettings())
    names = {m.name for m in collector.describe()}
    assert "dashscope_finetune_jobs" in names and "dashscope_finetune_up" in names
    assert len(names) == 13
