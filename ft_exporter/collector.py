"""Turns the poller's latest state into Prometheus metric families.

Pure with respect to HTTP and time: everything it reports comes from the
:class:`~ft_exporter.model.ExporterState` it is handed and the ``now`` it is given,
so a scrape never calls the API and every value is testable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ft_exporter.cost import Prices, estimated_costs
from ft_exporter.model import (
    DOCUMENTED_STATUSES,
    ExporterState,
    Job,
    Snapshot,
    Training,
    clean_text,
    estimated_end,
    progress_ratio,
)

log = logging.getLogger(__name__)

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

#: Default of --jobs.max-aggregate-series: room for 285 (model, training type) groups
#: of seven documented statuses; 2 x 2000 series with ordinary names are about 0.4 MB.
DEFAULT_MAX_AGGREGATE_SERIES = 2000


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
    max_aggregate_series: int = DEFAULT_MAX_AGGREGATE_SERIES
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
        "dropped": _gauge(
            "aggregate_series_dropped",
            "Series of dashscope_finetune_jobs (and as many of usage_tokens) left out of the "
            "latest snapshot by --jobs.max-aggregate-series.",
            ["account"],
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
        **_training_families(),
    }


def _training_families() -> dict[str, GaugeMetricFamily]:
    """Per-job families read from training logs (only jobs whose log the exporter reads)."""
    return {
        name: _gauge(name, doc, JOB_LABELS)
        for name, doc in (
            (
                "job_train_loss",
                "Latest training loss in the job's log (train_loss once the run "
                "has ended); NaN or infinite when the run diverged.",
            ),
            ("job_eval_loss", "Latest evaluation loss in the job's log."),
            ("job_eval_loss_min", "Lowest finite evaluation loss in the job's log so far."),
            ("job_learning_rate", "Latest learning rate in the job's log."),
            ("job_epoch", "Highest epoch the job's log has reached (fractional)."),
            ("job_epochs", "Epochs the job plans to run (n_epochs of its hyper_parameters)."),
            ("job_progress_ratio", "Epoch reached over epochs planned, 0 to 1."),
            (
                "job_estimated_end_timestamp_seconds",
                "Unix time a running job ends if it keeps "
                "its pace since it started running (or since it was created).",
            ),
            ("job_log_lines", "Lines the job's training log holds (its total, as last read)."),
            (
                "job_log_last_growth_timestamp_seconds",
                "Unix time the exporter last saw the "
                "job's log grow (at first sight: its newest timestamped line).",
            ),
            (
                "job_log_unparsed_lines",
                "Lines of the job's log read by the exporter that held no "
                "record of values (free text, too long, malformed).",
            ),
        )
    }


def add_training(
    fams: Mapping[str, GaugeMetricFamily],
    ids: list[str],
    job: Job,
    training: Training,
    now: float,
) -> None:
    """The training series of one job; a value not known yet is left out, not zero."""
    progress = progress_ratio(training.epoch, job.n_epochs)
    started = training.running_since if training.running_since is not None else job.created
    values: dict[str, float | None] = {
        "job_train_loss": training.train_loss,
        "job_eval_loss": training.eval_loss,
        "job_eval_loss_min": training.eval_loss_min,
        "job_learning_rate": training.learning_rate,
        "job_epoch": training.epoch,
        "job_epochs": job.n_epochs,
        "job_progress_ratio": progress,
        "job_estimated_end_timestamp_seconds": (
            None if job.terminal else estimated_end(started, now, progress)
        ),
        "job_log_lines": float(training.log_lines),
        "job_log_last_growth_timestamp_seconds": training.last_growth,
        "job_log_unparsed_lines": float(training.unparsed_lines),
    }
    for name, value in values.items():
        if value is not None:
            fams[name].add_metric(ids, float(value))


def _cost_family() -> GaugeMetricFamily:
    """Only with a price table: tokens of the listed jobs times their model's price."""
    return _gauge(
        "estimated_cost",
        "Estimated cost of the fine-tune jobs the API lists: their tokens times the model's "
        "price per 1,000 tokens from the config file's prices (in currency).",
        ["account", "model", "currency"],
    )


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


Group = tuple[str, str]  # (model, training_type)
SeriesKey = tuple[str, str, str]  # (model, training_type, status)


def select_aggregate_series(
    counts: Mapping[SeriesKey, int], active: Set[Group], cap: int
) -> tuple[list[SeriesKey], int]:
    """The aggregate series to serve, at most ``cap``, and how many were left out.

    Every (model, training_type) group gets the seven documented statuses (zero-
    filled); any other status only where jobs have it. Groups are ranked: those
    with an active job first, then more jobs first, then by model and training
    type. The top ``cap // 7`` groups get their documented series; the budget left
    goes to undocumented series of those groups, most jobs first, then by group
    rank and status. The same snapshot always gives the same selection.
    """
    jobs_per_group: dict[Group, int] = defaultdict(int)
    for (model, training_type, _), n in counts.items():
        jobs_per_group[(model, training_type)] += n
    ranked = sorted(jobs_per_group, key=lambda g: (g not in active, -jobs_per_group[g], g))
    documented = len(DOCUMENTED_STATUSES)
    kept = ranked[: max(cap, 0) // documented]
    rank = {group: i for i, group in enumerate(kept)}
    undocumented = [key for key in counts if key[2] not in DOCUMENTED_STATUSES]
    others = sorted(
        (key for key in undocumented if key[:2] in rank),
        key=lambda key: (-counts[key], rank[key[:2]], key[2]),
    )
    extra: dict[Group, list[str]] = defaultdict(list)
    for model, training_type, status in others[: max(cap - documented * len(kept), 0)]:
        extra[(model, training_type)].append(status)
    selected = [
        (model, training_type, status)
        for model, training_type in sorted(kept)
        for status in (*DOCUMENTED_STATUSES, *sorted(extra[(model, training_type)]))
    ]
    return selected, documented * len(ranked) + len(undocumented) - len(selected)


@dataclass(frozen=True)
class JobState:
    """The job-state families of one snapshot, and what was left out of them."""

    families: list[Metric]
    dropped_series: int = 0
    skipped_jobs: int = 0
    skip_reason: str = ""


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def checked_job(job: Job) -> Job:
    """The job with every label value cleaned and every number a number.

    model.parse_job already guarantees this; checking again (cleaning is
    idempotent) means a job built any other way cannot fail the scrape.
    Raises when a value cannot be made usable.
    """
    return Job(
        job_id=clean_text(job.job_id),
        job_name=clean_text(job.job_name),
        status=clean_text(job.status),
        model=clean_text(job.model),
        base_model=clean_text(job.base_model),
        training_type=clean_text(job.training_type),
        finetuned_output=clean_text(job.finetuned_output),
        created=_number(job.created),
        ended=_number(job.ended),
        usage_tokens=int(job.usage_tokens),
        n_epochs=_number(job.n_epochs),
        tailable=job.tailable,
    )


def build_job_state(snapshot: Snapshot, settings: CollectorSettings) -> JobState:
    """Aggregate one snapshot into the job-state families, zero-filled and capped.

    A job whose values cannot be made renderable (a bug upstream) is left out and
    counted, so it cannot fail the whole scrape.
    """
    fams = _job_state_families()
    account = settings.account
    jobs: list[Job] = []
    skipped: list[str] = []
    for raw in snapshot.jobs:
        try:
            jobs.append(checked_job(raw))
        except Exception as exc:
            skipped.append(clean_text(f"{type(exc).__name__}: {exc}", 200))
    counts: dict[SeriesKey, int] = defaultdict(int)
    tokens: dict[SeriesKey, int] = defaultdict(int)
    active: set[Group] = set()
    quota_used = 0
    for job in jobs:
        key = (job.model, job.training_type, job.status)
        counts[key] += 1
        tokens[key] += job.usage_tokens
        if not job.terminal:
            active.add((job.model, job.training_type))
        if settings.quota.counts(job.status):
            quota_used += 1
    selected, dropped = select_aggregate_series(counts, active, settings.max_aggregate_series)
    for key in selected:
        labels = [account, *key]
        fams["jobs"].add_metric(labels, counts.get(key, 0))
        fams["usage"].add_metric(labels, tokens.get(key, 0))
    fams["dropped"].add_metric([account], dropped)
    fams["quota_used"].add_metric([account], quota_used)
    fams["malformed"].add_metric([account], snapshot.malformed_jobs)
    for job in select_job_series(jobs, settings.max_job_series):
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
        training = snapshot.training.get(job.job_id)
        if training is not None:
            add_training(fams, ids, job, training, snapshot.taken_at)
    return JobState(list(fams.values()), dropped, len(skipped), skipped[0] if skipped else "")


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


class Unit(Protocol):
    """What the collector needs of an account: its settings and its latest state."""

    @property
    def settings(self) -> CollectorSettings: ...

    def state(self) -> ExporterState: ...


@dataclass(frozen=True)
class StateUnit:
    """A unit made of settings and a state reader: one account without a poller of its own
    (tests, benchmarks)."""

    settings: CollectorSettings
    read: Callable[[], ExporterState]

    def state(self) -> ExporterState:
        return self.read()


def single(
    read: Callable[[], ExporterState], settings: CollectorSettings
) -> Callable[[], list[Unit]]:
    """The units of a collector that renders one account."""
    unit = StateUnit(settings, read)
    return lambda: [unit]


@dataclass(frozen=True, eq=False)
class Part:
    """Some families of one account, as a scrape serves them.

    The same object is handed out for as long as its families stay the same (the
    collector caches it per account and replaces it when what it was built from
    changes), so a renderer may cache anything derived from it under its identity.
    Compared and hashed by identity.
    """

    families: tuple[Metric, ...]
    #: What the families were built from (one or two objects never mutated), compared
    #: by identity.
    source: tuple[object] | tuple[object, object]

    def built_from(self, first: object, second: object = None) -> bool:
        """True when built from these (one or two objects, as in ``source``).

        Called for every account on every scrape: no generator, no zip."""
        source = self.source
        if len(source) == 1:
            return source[0] is first and second is None
        return len(source) == 2 and source[0] is first and source[1] is second


def merge(parts: Iterable[Part]) -> list[Metric]:
    """One family per name, as the exposition format requires: the parts' samples in
    order, the families in the order their names first appear."""
    merged: dict[str, Metric] = {}
    for part in parts:
        for family in part.families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(family.samples)
    return list(merged.values())


class FineTuneCollector(Collector):
    """Custom collector: the job metrics of every account's latest complete sweep.

    Aggregation runs once per snapshot, not once per scrape, so many scrapers
    cost no more than one. Each account's families are merged into one family per
    metric name, as the exposition format requires. :meth:`parts` hands out the
    same per-account families unmerged, for a renderer that caches their text.
    """

    def __init__(
        self,
        units: Callable[[], Sequence[Unit]],
        clock: Callable[[], float] = time.time,
        prices: Callable[[], Prices | None] = lambda: None,
    ) -> None:
        self._units = units
        self._clock = clock
        self._prices = prices
        #: (account, model) pairs already logged as having no price.
        self._unpriced_logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        #: Per account: its job-state families, built from (snapshot, settings).
        self._cached: dict[str, Part] = {}
        #: Per account: its cost family, built from (snapshot, prices).
        self._cost_cached: dict[str, Part] = {}
        #: Per account: its status families, built from (state, settings).
        self._status_cached: dict[str, Part] = {}
        self._dropped_logged: dict[str, int] = {}
        self._skipped_logged: dict[str, int] = {}
        #: Family names in the order a scrape serves them (describe's order).
        self.order: tuple[str, ...] = tuple(family.name for family in self.describe())

    def describe(self) -> Iterator[Metric]:
        yield from _job_state_families().values()
        yield from _status_families().values()
        yield _cost_family()

    def _costs(self, snapshot: Snapshot, settings: CollectorSettings, prices: Prices) -> Part:
        """Once per snapshot and price table, like the job-state families."""
        with self._lock:
            cached = self._cost_cached.get(settings.account)
        if cached is not None and cached.built_from(snapshot, prices):
            return cached
        family = _cost_family()
        costs, unpriced = estimated_costs(snapshot.jobs, prices)
        for model, cost in sorted(costs.items()):
            family.add_metric([settings.account, model, prices.currency], cost)
        with self._lock:
            new = {(settings.account, m) for m in unpriced} - self._unpriced_logged
            self._unpriced_logged |= new
        for account, model in sorted(new):
            log.warning(
                "account %s: model %s has no price and prices has no default: no cost for it",
                account,
                model,
            )
        part = Part((family,), (snapshot, prices))
        with self._lock:
            self._cost_cached[settings.account] = part
        return part

    def _job_metrics(self, snapshot: Snapshot, settings: CollectorSettings) -> Part:
        account = settings.account
        with self._lock:
            cached = self._cached.get(account)
            if cached is not None and cached.built_from(snapshot, settings):
                return cached
        built = build_job_state(snapshot, settings)
        part = Part(tuple(built.families), (snapshot, settings))
        with self._lock:
            self._log_changes(settings, built)
            self._cached[account] = part
        return part

    def _status(self, state: ExporterState, settings: CollectorSettings) -> Part:
        """Once per published state: the poller replaces it whole, never mutates it."""
        with self._lock:
            cached = self._status_cached.get(settings.account)
        if cached is not None and cached.built_from(state, settings):
            return cached
        part = Part(tuple(status_metrics(state, settings)), (state, settings))
        with self._lock:
            self._status_cached[settings.account] = part
        return part

    def _log_changes(self, settings: CollectorSettings, built: JobState) -> None:
        """Say when what was left out changes, not on every sweep or scrape."""
        account = settings.account
        if built.dropped_series != self._dropped_logged.get(account, 0):
            self._dropped_logged[account] = built.dropped_series
            if built.dropped_series:
                log.warning(
                    "account %s: %d aggregate series left out of dashscope_finetune_jobs and "
                    "dashscope_finetune_usage_tokens each: over --jobs.max-aggregate-series=%d",
                    account,
                    built.dropped_series,
                    settings.max_aggregate_series,
                )
            else:
                log.info("account %s: no aggregate series left out any more", account)
        if built.skipped_jobs != self._skipped_logged.get(account, 0):
            self._skipped_logged[account] = built.skipped_jobs
            if built.skipped_jobs:
                log.error(
                    "account %s: %d job(s) left out of the metrics, their values unusable "
                    "(a bug): %s",
                    account,
                    built.skipped_jobs,
                    built.skip_reason,
                )

    def parts(self) -> list[Part]:
        """This scrape's families, account by account, unmerged.

        Per account, in the order of the accounts: its job-state families and its
        cost (only while its data is fresh: staleness is decided now), then its
        status families. Merged by family name in :attr:`order`, they are what
        :meth:`collect` yields.
        """
        units = self._units()
        now = self._clock()
        prices = self._prices()
        parts: list[Part] = []
        for unit in units:
            state = unit.state()
            settings = unit.settings
            if state.snapshot is not None and not is_stale(state, settings, now):
                parts.append(self._job_metrics(state.snapshot, settings))
                if prices is not None:
                    parts.append(self._costs(state.snapshot, settings, prices))
            parts.append(self._status(state, settings))
        with self._lock:
            polled = {unit.settings.account for unit in units}
            for cache in (self._cached, self._cost_cached, self._status_cached):
                for account in set(cache) - polled:
                    del cache[account]  # an account no longer polled
        return parts

    def collect(self) -> Iterator[Metric]:
        merged = merge(self.parts())
        yield from sorted(merged, key=lambda family: self.order.index(family.name))
