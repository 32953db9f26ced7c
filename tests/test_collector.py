"""Snapshot -> metric families: zero-filling, quota counting, the series cap, staleness."""

from __future__ import annotations

import dataclasses
import logging
import math

import fixtures as fx
import pytest
from conftest import samples, value
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from ft_exporter.collector import (
    CollectorSettings,
    FineTuneCollector,
    Part,
    QuotaRule,
    StateUnit,
    checked_job,
    merge,
    select_aggregate_series,
    select_job_series,
    single,
)
from ft_exporter.cost import Prices
from ft_exporter.model import ExporterState, Job, Snapshot, Training


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
            single(lambda: state, CollectorSettings(**settings)),  # type: ignore[arg-type]
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


def test_aggregation_runs_once_per_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    from ft_exporter import collector as module

    builds: list[Snapshot] = []
    real = module.build_job_state

    def counted(snapshot: Snapshot, settings: CollectorSettings) -> object:
        builds.append(snapshot)
        return real(snapshot, settings)

    monkeypatch.setattr(module, "build_job_state", counted)
    states = [state_of(job(1, "RUNNING"))]
    collector = FineTuneCollector(
        single(lambda: states[-1], CollectorSettings()), clock=lambda: 2000.0
    )
    first = [(m.name, m.samples) for m in collector.collect()]
    assert [(m.name, m.samples) for m in collector.collect()] == first
    assert len(builds) == 1  # the cached families, not a recomputation
    states.append(state_of(job(2, "RUNNING")))
    list(collector.collect())
    assert len(builds) == 2  # a new snapshot: built once more


def test_describe_names_every_family() -> None:
    collector = FineTuneCollector(single(ExporterState, CollectorSettings()))
    names = {m.name for m in collector.describe()}
    assert "dashscope_finetune_jobs" in names and "dashscope_finetune_up" in names
    assert len(names) == 25  # 13 from the job list and status, 11 from training logs, cost


# --- Exact values for what scripts/mutation.sh found unpinned ----------------------------

#: What an operator reads in Prometheus and Grafana for each family: the documented text.
HELP = {
    "dashscope_finetune_jobs": (
        "Fine-tune jobs in the account by model, training type and status."
    ),
    "dashscope_finetune_usage_tokens": (
        "Tokens consumed by fine-tune jobs (sum of the API's usage field)."
    ),
    "dashscope_finetune_aggregate_series_dropped": (
        "Series of dashscope_finetune_jobs (and as many of usage_tokens) left out of the "
        "latest snapshot by --jobs.max-aggregate-series."
    ),
    "dashscope_finetune_quota_used_jobs": (
        "Jobs counted against the account's job limit (not FAILED or CANCELED by default)."
    ),
    "dashscope_finetune_malformed_jobs": (
        "Jobs skipped in the latest complete sweep because the API sent them malformed."
    ),
    "dashscope_finetune_job_info": (
        "Metadata of an active or recently ended job; value is always 1."
    ),
    "dashscope_finetune_job_created_timestamp_seconds": "Unix time the job was created.",
    "dashscope_finetune_job_ended_timestamp_seconds": (
        "Unix time the job ended (only for ended jobs)."
    ),
    "dashscope_finetune_job_usage_tokens": "Tokens consumed by the job.",
    "dashscope_finetune_job_train_loss": (
        "Latest training loss in the job's log (train_loss once the run has ended); NaN or "
        "infinite when the run diverged."
    ),
    "dashscope_finetune_job_eval_loss": "Latest evaluation loss in the job's log.",
    "dashscope_finetune_job_eval_loss_min": (
        "Lowest finite evaluation loss in the job's log so far."
    ),
    "dashscope_finetune_job_learning_rate": "Latest learning rate in the job's log.",
    "dashscope_finetune_job_epoch": "Highest epoch the job's log has reached (fractional).",
    "dashscope_finetune_job_epochs": (
        "Epochs the job plans to run (n_epochs of its hyper_parameters)."
    ),
    "dashscope_finetune_job_progress_ratio": "Epoch reached over epochs planned, 0 to 1.",
    "dashscope_finetune_job_estimated_end_timestamp_seconds": (
        "Unix time a running job ends if it keeps its pace since it started running (or since "
        "it was created)."
    ),
    "dashscope_finetune_job_log_lines": (
        "Lines the job's training log holds (its total, as last read)."
    ),
    "dashscope_finetune_job_log_last_growth_timestamp_seconds": (
        "Unix time the exporter last saw the job's log grow (at first sight: its newest "
        "timestamped line)."
    ),
    "dashscope_finetune_job_log_unparsed_lines": (
        "Lines of the job's log read by the exporter that held no record of values (free "
        "text, too long, malformed)."
    ),
    "dashscope_finetune_quota_limit_jobs": (
        "The account's limit of running-or-succeeded jobs (from --quota.limit)."
    ),
    "dashscope_finetune_up": (
        "1 if the latest sweep of the fine-tune list API completed, 0 otherwise."
    ),
    "dashscope_finetune_last_success_timestamp_seconds": (
        "Unix time the latest complete sweep finished."
    ),
    "dashscope_finetune_sweep_duration_seconds": (
        "Wall time the latest sweep took, successful or not."
    ),
}


def test_every_family_has_its_name_type_and_help() -> None:
    text = render(state_of(job(1, "RUNNING")))
    helps = {
        name: doc
        for name, _, doc in (
            line.removeprefix("# HELP ").partition(" ")
            for line in text.splitlines()
            if line.startswith("# HELP ")
        )
    }
    assert helps == HELP
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert types == [f"# TYPE {name} gauge" for name in HELP]


def test_quota_rule_describes_itself() -> None:
    assert QuotaRule().describe() == "!CANCELED,!FAILED"
    assert QuotaRule(counted=frozenset({"SUCCEEDED", "RUNNING"})).describe() == (
        "RUNNING,SUCCEEDED"
    )
    assert QuotaRule(excluded=frozenset()).describe() == ""


def test_job_series_order_by_time_then_id_with_missing_times_last() -> None:
    active = [
        dataclasses.replace(job(1, "RUNNING"), created=None),
        job(2, "RUNNING", created=0.5),
        job(3, "RUNNING", created=2.0),
        job(4, "RUNNING", created=2.0),
    ]
    assert [j.job_id for j in select_job_series(active, 10)] == [
        "ft-004",
        "ft-003",
        "ft-002",
        "ft-001",
    ]
    ended = [
        dataclasses.replace(job(5, "FAILED"), created=None),
        job(6, "FAILED", created=0.5, ended=None),
        job(7, "FAILED", created=9.0, ended=3.0),
    ]
    assert [j.job_id for j in select_job_series(ended, 10)] == ["ft-007", "ft-006", "ft-005"]
    assert select_job_series(active, -1) == []


def test_aggregate_selection_ranks_groups_and_counts_what_it_drops() -> None:
    counts = {
        ("a", "sft", "SUCCEEDED"): 1,
        ("a", "sft", "FAILED"): 1,  # group a: 2 jobs, none active
        ("b", "sft", "SUCCEEDED"): 3,  # group b: 3 jobs, none active
        ("c", "sft", "RUNNING"): 1,  # group c: 1 job, active
        ("b", "sft", "ODD"): 2,
        ("b", "sft", "RARE"): 1,
        ("a", "sft", "ODD"): 3,  # a: 5 jobs in all, b: 6
    }
    active = {("c", "sft")}
    documented = len(fx.DOCUMENTED)
    # Room for two groups and one undocumented series: c (active), then b (more jobs
    # than a with ODD counted in), and b's ODD (most jobs among b's and c's extras).
    selected, dropped = select_aggregate_series(counts, active, 2 * documented + 1)
    assert selected == [
        *(("b", "sft", s) for s in (*fx.DOCUMENTED, "ODD")),
        *(("c", "sft", s) for s in fx.DOCUMENTED),
    ]
    assert dropped == 3 * documented + 3 - len(selected)
    # Everything fits: nothing dropped, extras sorted by name within their group.
    selected, dropped = select_aggregate_series(counts, active, 100)
    assert selected[: documented + 1] == [
        *(("a", "sft", s) for s in fx.DOCUMENTED),
        ("a", "sft", "ODD"),
    ]
    assert selected[documented + 1 : 2 * documented + 3] == [
        *(("b", "sft", s) for s in fx.DOCUMENTED),
        ("b", "sft", "ODD"),
        ("b", "sft", "RARE"),
    ]
    assert dropped == 0
    # Below one group's worth: nothing at all, and every series counted as dropped.
    assert select_aggregate_series(counts, active, documented - 1) == ([], 3 * documented + 3)
    assert select_aggregate_series(counts, active, -5) == ([], 3 * documented + 3)
    # Exactly one group's worth: its documented series and no undocumented one.
    selected, dropped = select_aggregate_series(counts, {("b", "sft")}, documented)
    assert (selected, dropped) == ([("b", "sft", s) for s in fx.DOCUMENTED], 2 * 7 + 3)


def test_a_group_with_an_active_job_outranks_a_bigger_ended_one() -> None:
    text = render(
        state_of(job(1, "RUNNING", model="small"), job(2, "FAILED"), job(3, "FAILED")),
        max_aggregate_series=len(fx.DOCUMENTED),
    )
    labels = {"account": "default", "training_type": "sft", "status": "RUNNING"}
    assert value(text, "dashscope_finetune_jobs", model="small", **labels) == 1.0
    assert value(text, "dashscope_finetune_jobs", model="qwen3-8b", **labels) is None


def test_a_first_snapshot_that_leaves_nothing_out_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ft_exporter.collector")
    render(state_of(job(1, "RUNNING")))
    assert [r.getMessage() for r in caplog.records] == []


def test_aggregates_sum_counts_and_tokens_per_series() -> None:
    text = render(
        state_of(
            job(1, "SUCCEEDED", usage=100),
            job(2, "SUCCEEDED", usage=50),
            job(3, "RUNNING", usage=7),
            job(4, "FAILED", model="other", usage=0),
        )
    )
    labels = {"account": "default", "model": "qwen3-8b", "training_type": "sft"}
    assert value(text, "dashscope_finetune_jobs", **labels, status="SUCCEEDED") == 2.0
    assert value(text, "dashscope_finetune_usage_tokens", **labels, status="SUCCEEDED") == 150.0
    assert value(text, "dashscope_finetune_usage_tokens", **labels, status="RUNNING") == 7.0
    assert value(text, "dashscope_finetune_usage_tokens", **labels, status="QUEUING") == 0.0
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 3.0
    info = {
        "account": "default",
        "job_id": "ft-003",
        "job_name": "name-3",
        "model": "qwen3-8b",
        "base_model": "qwen3-8b",
        "training_type": "sft",
        "status": "RUNNING",
        "finetuned_output": "",
    }
    assert value(text, "dashscope_finetune_job_info", **info) == 1.0


def test_up_is_exactly_one_or_zero_and_no_success_means_no_job_metrics() -> None:
    up = render(state_of(job(1, "RUNNING")))
    assert value(up, "dashscope_finetune_up", account="default") == 1.0
    snapshot = Snapshot((job(1, "RUNNING"),), taken_at=1990.0)
    never = render(ExporterState(snapshot, up=False, last_success=None))
    assert value(never, "dashscope_finetune_up", account="default") == 0.0
    assert value(never, "dashscope_finetune_quota_used_jobs", account="default") is None


def unusable(n: int, usage: str) -> Job:
    """A job built around the parser, with a token count that is no number."""
    return dataclasses.replace(job(n, "RUNNING"), usage_tokens=usage)  # type: ignore[arg-type]


def test_what_is_left_out_is_logged_when_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ft_exporter.collector")
    documented = len(fx.DOCUMENTED)
    current: list[ExporterState] = []
    collector = FineTuneCollector(
        single(lambda: current[-1], CollectorSettings(max_aggregate_series=documented)),
        clock=lambda: 2000.0,
    )
    registry = CollectorRegistry()
    registry.register(collector)

    def scrape(*jobs: Job) -> list[tuple[str, str]]:
        current.append(state_of(*jobs))
        generate_latest(registry)
        generate_latest(registry)  # the same snapshot again: nothing new to say
        out = [(r.levelname, r.getMessage()) for r in caplog.records]
        caplog.clear()
        return out

    bad = "x" * 300
    reason = f"ValueError: invalid literal for int() with base 10: '{bad}'"
    assert scrape(job(1, "RUNNING"), job(2, "RUNNING", model="other"), unusable(3, bad)) == [
        (
            "WARNING",
            "account default: 7 aggregate series left out of dashscope_finetune_jobs and "
            "dashscope_finetune_usage_tokens each: over --jobs.max-aggregate-series=7",
        ),
        (
            "ERROR",
            "account default: 1 job(s) left out of the metrics, their values unusable (a bug): "
            + reason[:199]
            + "\u2026",
        ),
    ]
    assert scrape(job(1, "RUNNING"), job(2, "RUNNING", model="other"), unusable(3, bad)) == []
    assert scrape(job(1, "RUNNING"), unusable(3, "y"), unusable(4, bad)) == [
        ("INFO", "account default: no aggregate series left out any more"),
        (
            "ERROR",
            "account default: 2 job(s) left out of the metrics, their values unusable (a bug): "
            "ValueError: invalid literal for int() with base 10: 'y'",
        ),
    ]
    text = generate_latest(registry).decode()
    assert value(text, "dashscope_finetune_aggregate_series_dropped", account="default") == 0.0
    assert scrape(job(1, "RUNNING")) == []


def training_state(*pairs: tuple[Job, Training], taken_at: float = 1600.0) -> ExporterState:
    snapshot = Snapshot(
        tuple(j for j, _ in pairs),
        taken_at=taken_at,
        training={j.job_id: t for j, t in pairs},
    )
    return ExporterState(snapshot, up=True, last_success=taken_at, last_sweep_duration=0.1)


def training_series(text: str) -> dict[str, dict[str, float]]:
    """Each training family's samples, by job_id (NaN kept, compared by the caller)."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), v in samples(text).items():
        if (
            name.startswith("dashscope_finetune_job_")
            and name.removeprefix("dashscope_finetune_") in TRAINING_NAMES
        ):
            out.setdefault(dict(labels)["job_id"], {})[name.removeprefix("dashscope_finetune_")] = v
    return out


TRAINING_NAMES = {
    "job_train_loss",
    "job_eval_loss",
    "job_eval_loss_min",
    "job_learning_rate",
    "job_epoch",
    "job_epochs",
    "job_progress_ratio",
    "job_estimated_end_timestamp_seconds",
    "job_log_lines",
    "job_log_last_growth_timestamp_seconds",
    "job_log_unparsed_lines",
}


def test_training_series_of_a_running_job_have_their_exact_values() -> None:
    running = dataclasses.replace(job(1, "RUNNING", created=1000.0), n_epochs=3.0)
    training = Training(
        train_loss=math.nan,
        eval_loss=0.5,
        eval_loss_min=0.4,
        learning_rate=1.6e-5,
        epoch=1.5,
        log_lines=120,
        last_growth=1590.0,
        unparsed_lines=7,
    )
    got = training_series(render(training_state((running, training)), now=1601.0))
    values = got["ft-001"]
    assert math.isnan(values.pop("job_train_loss"))
    assert values == {
        "job_eval_loss": 0.5,
        "job_eval_loss_min": 0.4,
        "job_learning_rate": 1.6e-5,
        "job_epoch": 1.5,
        "job_epochs": 3.0,
        "job_progress_ratio": 0.5,
        # Half done 600 s after creation: ends 600 s later, at the snapshot's pace.
        "job_estimated_end_timestamp_seconds": 2200.0,
        "job_log_lines": 120.0,
        "job_log_last_growth_timestamp_seconds": 1590.0,
        "job_log_unparsed_lines": 7.0,
    }


def test_a_start_seen_happening_times_the_estimate_and_progress_is_clamped() -> None:
    seen_start = dataclasses.replace(job(1, "RUNNING", created=1000.0), n_epochs=4.0)
    past_plan = dataclasses.replace(job(2, "RUNNING", created=1000.0), n_epochs=2.0)
    got = training_series(
        render(
            training_state(
                (seen_start, Training(epoch=1.0, running_since=1400.0)),
                (past_plan, Training(epoch=2.5)),
            )
        )
    )
    assert got["ft-001"]["job_progress_ratio"] == 0.25
    assert got["ft-001"]["job_estimated_end_timestamp_seconds"] == 1400.0 + 200.0 * 4
    assert got["ft-002"]["job_progress_ratio"] == 1.0
    assert got["ft-002"]["job_estimated_end_timestamp_seconds"] == 1600.0


def test_what_is_not_known_is_absent_not_zero() -> None:
    no_plan = job(1, "RUNNING")  # no n_epochs: no progress, no estimate
    no_epoch = dataclasses.replace(job(2, "RUNNING"), n_epochs=3.0)
    ended = dataclasses.replace(job(3, "SUCCEEDED", created=1000.0, ended=1500.0), n_epochs=3.0)
    got = training_series(
        render(
            training_state(
                (no_plan, Training(train_loss=1.0, epoch=1.0, log_lines=3)),
                (no_epoch, Training(log_lines=0, last_growth=1590.0)),
                (ended, Training(train_loss=0.9, epoch=3.0, log_lines=40)),
            )
        )
    )
    assert got["ft-001"] == {
        "job_train_loss": 1.0,
        "job_epoch": 1.0,
        "job_log_lines": 3.0,
        "job_log_unparsed_lines": 0.0,
    }
    assert got["ft-002"] == {
        "job_epochs": 3.0,
        "job_log_lines": 0.0,
        "job_log_last_growth_timestamp_seconds": 1590.0,
        "job_log_unparsed_lines": 0.0,
    }
    # An ended job keeps its last values (while listed) but has no estimated end.
    assert "job_estimated_end_timestamp_seconds" not in got["ft-003"]
    assert got["ft-003"]["job_progress_ratio"] == 1.0


def test_training_series_follow_the_per_job_cap_and_staleness() -> None:
    jobs = [
        (dataclasses.replace(job(n, "RUNNING"), n_epochs=3.0), Training(epoch=1.0))
        for n in (1, 2, 3)
    ]
    state = training_state(*jobs)
    assert set(training_series(render(state, max_job_series=2))) == {"ft-003", "ft-002"}
    stale = render(state, now=1600.0 + 901.0)
    assert training_series(stale) == {}
    assert "dashscope_finetune_job_train_loss" not in stale  # withdrawn with the job state


def test_a_clean_job_comes_out_of_the_check_unchanged() -> None:
    clean = dataclasses.replace(job(1, "RUNNING"), n_epochs=3.0, tailable=False)
    assert checked_job(clean) == clean


# --- many accounts and prices ------------------------------------------------------------


def collect_units(
    units: list[StateUnit], prices: Prices | None = None, now: float = 2000.0
) -> FineTuneCollector:
    return FineTuneCollector(lambda: units, clock=lambda: now, prices=lambda: prices)


def render_collector(collector: FineTuneCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def unit(account: str, *jobs: Job) -> StateUnit:
    state = state_of(*jobs)
    return StateUnit(CollectorSettings(account=account), lambda: state)


def test_two_accounts_share_one_family_per_metric_in_describe_order() -> None:
    collector = collect_units([unit("sg", job(1, "RUNNING")), unit("bj", job(2, "FAILED"))])
    families = list(collector.collect())
    names = [f.name for f in families]
    assert len(names) == len(set(names))  # one header per metric, whatever the accounts
    order = [f.name for f in collector.describe()]
    assert names == sorted(names, key=order.index)
    up = next(f for f in families if f.name == "dashscope_finetune_up")
    assert [(s.labels, s.value) for s in up.samples] == [
        ({"account": "sg"}, 1),
        ({"account": "bj"}, 1),
    ]
    text = render_collector(collector)
    assert text.count("# TYPE dashscope_finetune_jobs gauge") == 1
    assert value(text, "dashscope_finetune_quota_used_jobs", account="sg") == 1
    assert value(text, "dashscope_finetune_quota_used_jobs", account="bj") == 0


def test_an_account_no_longer_polled_leaves_no_series_and_no_cache() -> None:
    units = [unit("sg", job(1, "RUNNING")), unit("bj", job(2, "RUNNING"))]
    collector = collect_units(units)
    render_collector(collector)
    del units[1]
    text = render_collector(collector)
    assert 'account="bj"' not in text
    assert set(collector._cached) == {"sg"}


def test_cost_per_account_and_model_from_the_price_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prices = Prices("CNY", {"qwen3-8b": 0.25}, None)
    units = [
        unit("sg", job(1, "SUCCEEDED", usage=3000), job(2, "FAILED", usage=1000)),
        unit("bj", job(3, "SUCCEEDED", model="other", usage=500)),
    ]
    collector = collect_units(units, prices)
    with caplog.at_level(logging.WARNING, "ft_exporter.collector"):
        text = render_collector(collector)
        render_collector(collector)  # a second scrape logs nothing new
    costs = {
        (dict(labels)["account"], dict(labels)["model"], dict(labels)["currency"]): v
        for (name, labels), v in samples(text).items()
        if name == "dashscope_finetune_estimated_cost"
    }
    assert costs == {("sg", "qwen3-8b", "CNY"): 1.0}  # 4000 tokens x 0.25 / 1000
    assert (
        "# HELP dashscope_finetune_estimated_cost Estimated cost of the fine-tune jobs the API "
        "lists: their tokens times the model's price per 1,000 tokens from the config file's "
        "prices (in currency)." in text
    )
    assert [r.getMessage() for r in caplog.records] == [
        "account bj: model other has no price and prices has no default: no cost for it"
    ]
    with_default = collect_units(units, Prices("USD", {"qwen3-8b": 0.25}, 2.0))
    text = render_collector(with_default)
    assert (
        value(
            text, "dashscope_finetune_estimated_cost", account="bj", model="other", currency="USD"
        )
        == 1.0
    )
    assert "dashscope_finetune_estimated_cost" not in render_collector(collect_units(units))


def test_no_cost_when_the_data_is_stale() -> None:
    prices = Prices("CNY", {}, 1.0)
    text = render_collector(
        collect_units([unit("sg", job(1, "RUNNING", usage=10))], prices, now=1990.0 + 901.0)
    )
    assert "dashscope_finetune_estimated_cost{" not in text


def test_cost_is_computed_once_per_snapshot_and_price_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ft_exporter import collector as module

    calls: list[Prices] = []
    from ft_exporter.cost import estimated_costs as real

    def counted(jobs: object, prices: Prices) -> object:
        calls.append(prices)
        return real(jobs, prices)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "estimated_costs", counted)
    tables = [Prices("CNY", {}, 1.0)]
    units = [unit("sg", job(1, "SUCCEEDED", usage=2000))]
    collector = FineTuneCollector(lambda: units, clock=lambda: 2000.0, prices=lambda: tables[-1])
    first = render_collector(collector)
    assert render_collector(collector) == first
    assert len(calls) == 1  # the same snapshot and table: the cached family
    tables.append(Prices("CNY", {}, 2.0))  # a reload with new prices
    assert (
        value(
            render_collector(collector),
            "dashscope_finetune_estimated_cost",
            account="sg",
            model="qwen3-8b",
            currency="CNY",
        )
        == 4.0
    )
    assert len(calls) == 2
    units.clear()
    render_collector(collector)
    assert collector._cost_cached == {}


def test_an_unpriced_model_is_logged_once_over_new_snapshots_and_accounts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prices = Prices("CNY", {}, None)
    states = {
        "sg": state_of(job(1, "SUCCEEDED", model="a", usage=10)),
        "bj": state_of(job(2, "SUCCEEDED", model="b", usage=10)),
    }
    units = [
        StateUnit(CollectorSettings(account=name), lambda name=name: states[name])  # type: ignore[misc]
        for name in states
    ]
    collector = collect_units(units, prices)
    with caplog.at_level(logging.WARNING, "ft_exporter.collector"):
        for n in range(3, 6):  # each sweep a new snapshot, the same models without a price
            render_collector(collector)
            states["sg"] = state_of(job(n, "SUCCEEDED", model="a", usage=10))
            states["bj"] = state_of(job(n, "SUCCEEDED", model="b", usage=10))
    assert [r.getMessage() for r in caplog.records] == [
        "account sg: model a has no price and prices has no default: no cost for it",
        "account bj: model b has no price and prices has no default: no cost for it",
    ]


def test_parts_are_the_same_objects_while_the_state_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The renderer caches each part's text under its identity: a part rebuilt for an
    unchanged state would be rendered again on every scrape."""
    prices = Prices("CNY", {}, 1.0)
    states = {"sg": state_of(job(1, "RUNNING")), "bj": state_of(job(2, "FAILED"))}
    units = [
        StateUnit(CollectorSettings(account=name), lambda name=name: states[name])  # type: ignore[misc]
        for name in states
    ]
    collector = collect_units(units, prices)
    first = collector.parts()
    second = collector.parts()
    assert len(first) == len(second) == 6  # jobs, cost and status of each account
    assert all(a is b for a, b in zip(first, second, strict=True))
    states["bj"] = dataclasses.replace(states["bj"], up=False)  # a failed sweep
    third = collector.parts()
    assert [a is b for a, b in zip(second, third, strict=True)] == [
        True,
        True,
        True,
        True,
        True,
        False,  # bj's status families, and only those, built anew
    ]
    up = {s.labels["account"]: s.value for s in third[5].families[1].samples}
    assert up == {"bj": 0}
    assert all(a is b for a, b in zip(third, collector.parts(), strict=True))


def test_a_part_is_built_from_exactly_its_sources() -> None:
    one, other = object(), object()
    single_source = Part((), (one,))
    assert single_source.built_from(one)
    assert not single_source.built_from(other)
    assert not single_source.built_from(one, other)
    two_sources = Part((), (one, other))
    assert two_sources.built_from(one, other)
    assert not two_sources.built_from(one)
    assert not two_sources.built_from(other, one)


def test_merge_keeps_each_familys_name_help_type_and_unit() -> None:
    def part(account: str, value: float) -> Part:
        family = GaugeMetricFamily(
            "x_duration_seconds", "How long.", labels=["account"], unit="seconds"
        )
        family.add_metric([account], value)
        return Part((family,), (object(),))

    merged = merge([part("sg", 1.0), part("bj", 2.0)])
    assert [(m.name, m.documentation, m.type, m.unit) for m in merged] == [
        ("x_duration_seconds", "How long.", "gauge", "seconds")
    ]
    assert [(s.labels, s.value) for s in merged[0].samples] == [
        ({"account": "sg"}, 1.0),
        ({"account": "bj"}, 2.0),
    ]

    class Merged:
        def collect(self) -> list[object]:
            return list(merged)

    registry = CollectorRegistry()
    registry.register(Merged())  # type: ignore[arg-type]
    text = bytes(openmetrics_latest(registry)).decode()  # type: ignore[no-untyped-call]
    assert "# UNIT x_duration_seconds seconds\n" in text
