"""Turns the poller's latest state into Prometheus metric families.

Pure with respect to HTTP and time: everything it reports comes from the
:class:`~ft_exporter.model.ExporterState` it is handed and the ``now`` it is given,
so a scrape never calls the API and every value is testable.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ft_exporter.model import DOCUMENTED_STATUSES, ExporterState, Job, Snapshot

PREFIX = "dashscope_finetune"
GROUP_LABELS = ["account", "model", "training_type", "status"]
INFO_LABELS = [
    "account",
    "job_id",
    "job_name",
    "model",
    "base_model",
    "training_type",
    "status",
    "finetuned_output",
]
JOB_LABELS = ["account", "job_id"]


@dataclass(frozen=True)
class QuotaRule:
    """Which statuses count against the job limit.

    ``counted`` lists statuses explicitly; when it is None every status counts
    except those in ``excluded`` (so an undocumented status counts: the safe side).
    """

    counted: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset({"FAILED", "CANCELED"})

    def counts(self, status: str) -> bool:
        if self.counted is not None:
            return status in self.counted
        return status not in self.excluded

    def describe(self) -> str:
        if self.counted is not None:
            return ",".join(sorted(self.counted))
        return ",".join(f"!{s}" for s in sorted(self.excluded))


@dataclass(frozen=True)
class CollectorSettings:
    account: str = "default"
    quota_limit: int = 20
    quota: QuotaRule = field(default_factory=QuotaRule)
    max_job_series: int = 100
    max_staleness: float = 900.0


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _job_state_families() -> dict[str, GaugeMetricFamily]:
    """Families derived from the job list; withdrawn together when data goes stale."""
    return {
        "jobs": _gauge(
            "jobs",
            "Fine-tune jobs in the account by model, training type and status.",
            GROUP_LABELS,
        ),
        "usage": _gauge(
            "usage_tokens",
            "Tokens consumed by fine-tune jobs (sum of the API's usage field).",
            GROUP_LABELS,
        ),
        "quota_used": _gauge(
            "quota_used_jobs",
            "Jobs counted against the account's job limit (not FAILED or CANCELED by default).",
            ["account"],
        ),
        "malformed": _gauge(
            "malformed_jobs",
            "Jobs skipped in the latest complete sweep because the API sent them malformed.",
            ["account"],
        ),
        "info": _gauge(
            "job_info",
            "Metadata of an active or recently ended job; value is always 1.",
            INFO_LABELS,
        ),
        "created": _gauge(
            "job_created_timestamp_seconds",
            "Unix time the job was created.",
            JOB_LABELS,
        ),
        "ended": _gauge(
            "job_ended_timestamp_seconds",
            "Unix time the job ended (only for ended jobs).",
            JOB_LABELS,
        ),
        "job_usage": _gauge(
            "job_usage_tokens",
            "Tokens consumed by the job.",
            JOB_LABELS,
        ),
    }


def _status_families() -> dict[str, GaugeMetricFamily]:
    return {
        "limit": _gauge(
            "quota_limit_jobs",
            "The account's limit of running-or-succeeded jobs (from --quota.limit).",
            ["account"],
        ),
        "up": _gauge(
            "up",
            "1 if the latest sweep of the fine-tune list API completed, 0 otherwise.",
            ["account"],
        ),
        "last_success": _gauge(
            "last_success_timestamp_seconds",
            "Unix time the latest complete sweep finished.",
            ["account"],
        ),
        "sweep_duration": _gauge(
            "sweep_duration_seconds",
            "Wall time the latest sweep took, successful or not.",
            ["account"],
        ),
    }


def select_job_series(jobs: Iterable[Job], cap: int) -> list[Job]:
    """Active jobs first (newest first), then the most recently ended, ``cap`` in all."""
    active = [j for j in jobs if not j.terminal]
    ended = [j for j in jobs if j.terminal]
    active.sort(key=lambda j: (j.created or 0.0, j.job_id), reverse=True)
    ended.sort(key=lambda j: (j.ended or j.created or 0.0, j.job_id), reverse=True)
    return (active + ended)[: max(cap, 0)]


def job_state_metrics(snapshot: Snapshot, settings: CollectorSettings) -> list[Metric]:
    """Aggregate one snapshot into the job-state families, zero-filled."""
    fams = _job_state_families()
    account = settings.account
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    tokens: dict[tuple[str, str, str], int] = defaultdict(int)
    groups: set[tuple[str, str]] = set()
    statuses: set[str] = set(DOCUMENTED_STATUSES)
    quota_used = 0
    for job in snapshot.jobs:
        key = (job.model, job.training_type, job.status)
        counts[key] += 1
        tokens[key] += job.usage_tokens
        groups.add((job.model, job.training_type))
        statuses.add(job.status)
        if settings.quota.counts(job.status):
            quota_used += 1
    ordered_statuses = list(DOCUMENTED_STATUSES) + sorted(statuses - set(DOCUMENTED_STATUSES))
    for model, training_type in sorted(groups):
        for status in ordered_statuses:
            key = (model, training_type, status)
            labels = [account, model, training_type, status]
            fams["jobs"].add_metric(labels, counts.get(key, 0))
            fams["usage"].add_metric(labels, tokens.get(key, 0))
    fams["quota_used"].add_metric([account], quota_used)
    fams["malformed"].add_metric([account], snapshot.malformed_jobs)
    for job in select_job_series(snapshot.jobs, settings.max_job_series):
        ids = [account, job.job_id]
        fams["info"].add_metric(
            [
                account,
                job.job_id,
                job.job_name,
                job.model,
                job.base_model,
                job.training_type,
                job.status,
                job.finetuned_output,
            ],
            1,
        )
        if job.created is not None:
            fams["created"].add_metric(ids, job.created)
        if job.terminal and job.ended is not None:
            fams["ended"].add_metric(ids, job.ended)
        fams["job_usage"].add_metric(ids, job.usage_tokens)
    return list(fams.values())


def status_metrics(state: ExporterState, settings: CollectorSettings) -> list[Metric]:
    fams = _status_families()
    account = [settings.account]
    fams["limit"].add_metric(account, settings.quota_limit)
    fams["up"].add_metric(account, 1 if state.up else 0)
    if state.last_success is not None:
        fams["last_success"].add_metric(account, state.last_success)
    if state.last_sweep_duration is not None:
        fams["sweep_duration"].add_metric(account, state.last_sweep_duration)
    return list(fams.values())


def is_stale(state: ExporterState, settings: CollectorSettings, now: float) -> bool:
    """Data older than --poll.max-staleness must not be served as the present."""
    if state.last_success is None:
        return True
    return now - state.last_success > settings.max_staleness


class FineTuneCollector(Collector):
    """Custom collector: the job metrics of the latest complete sweep.

    Aggregation runs once per snapshot, not once per scrape, so many scrapers
    cost no more than one.
    """

    def __init__(
        self,
        state: Callable[[], ExporterState],
        settings: CollectorSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[Snapshot | None, list[Metric]] = (None, [])

    def describe(self) -> Iterator[Metric]:
        yield from _job_state_families().values()
        yield from _status_families().values()

    def _job_metrics(self, snapshot: Snapshot) -> list[Metric]:
        with self._lock:
            cached_snapshot, families = self._cached
            if cached_snapshot is not snapshot:
                families = job_state_metrics(snapshot, self.settings)
                self._cached = (snapshot, families)
            return families

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        if state.snapshot is not None and not is_stale(state, self.settings, self._clock()):
            yield from self._job_metrics(state.snapshot)
        yield from status_metrics(state, self.settings)
