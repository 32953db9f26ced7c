"""The exporter's own counters, instrumented directly (they are events, not state)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ft_exporter import __version__
from ft_exporter.client import (
    CONNECTION_ERROR,
    DOCUMENTED_ERRORS,
    ENDPOINTS,
    INVALID_RESPONSE,
    LIST,
    TIMEOUT,
    ApiError,
)
from ft_exporter.collector import Part, merge
from ft_exporter.failures import Failures, RecentFailures
from ft_exporter.version import revision

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Error series present at 0 from start, so ``increase()`` sees the first error.
KNOWN_ERRORS: tuple[tuple[str, str], ...] = (
    *DOCUMENTED_ERRORS,
    (INVALID_RESPONSE, "200"),
    (TIMEOUT, ""),
    (CONNECTION_ERROR, ""),
)


#: Bumped on every change of an account's counters: a fresh value each time, so that a
#: scrape can tell whether the account's series changed since it last rendered them.
_generations = itertools.count(1)


class _AccountSeries:
    """One account's counters, kept apart so that a scrape re-renders only accounts
    whose counters changed (at 100 accounts they were most of a scrape's work).

    A new per-account counter goes here (created, zero-filled, collected in
    :meth:`families`, its name in ``SelfMetrics.order``), and whatever changes it
    calls :meth:`changed` after the change.
    """

    def __init__(self, name: str) -> None:
        by_endpoint = ["account", "endpoint"]
        self.requests = Counter(_REQUESTS[0], _REQUESTS[1], by_endpoint, registry=None)
        self.errors = Counter(
            _ERRORS[0], _ERRORS[1], [*by_endpoint, "code", "http_status"], registry=None
        )
        self.duration = Histogram(
            _DURATION[0], _DURATION[1], by_endpoint, buckets=REQUEST_BUCKETS, registry=None
        )
        self.sweeps = Counter(_SWEEPS[0], _SWEEPS[1], ["account"], registry=None)
        self.sweep_failures = Counter(
            _SWEEP_FAILURES[0], _SWEEP_FAILURES[1], ["account"], registry=None
        )
        self.sweeps.labels(name)
        self.sweep_failures.labels(name)
        for endpoint in ENDPOINTS:
            self.requests.labels(name, endpoint)
            self.duration.labels(name, endpoint)
            for code, http_status in KNOWN_ERRORS:
                self.errors.labels(name, endpoint, code, http_status)
        #: The last failed requests, for the status page; they live as long as the error
        #: counters, so the page's tally matches dashscope_finetune_api_errors.
        self.failures = RecentFailures()
        self.generation = next(_generations)
        #: The families as last collected, and the generation they were collected at.
        self.part: Part | None = None

    def changed(self) -> None:
        """After (never before) a change: a scrape reading the new generation sees it."""
        self.generation = next(_generations)

    def families(self) -> Part:
        generation = self.generation  # read first: the families are at least this new
        part = self.part
        if part is None or not part.built_from(generation):
            metrics = (self.requests, self.errors, self.duration, self.sweeps, self.sweep_failures)
            families = tuple(family for metric in metrics for family in metric.collect())
            part = self.part = Part(families, (generation,))
        return part


_REQUESTS = (
    "dashscope_finetune_api_requests",
    "HTTP requests made to the fine-tune API, by endpoint (list: the job list; "
    "logs: training logs).",
)
_ERRORS = (
    "dashscope_finetune_api_errors",
    "Failed requests to the fine-tune API by endpoint, error code and HTTP status "
    "(http_status is empty when no answer came).",
)
_DURATION = (
    "dashscope_finetune_api_request_duration_seconds",
    "Latency of requests to the fine-tune API, by endpoint.",
)
_SWEEPS = ("dashscope_finetune_sweeps", "Sweeps of the fine-tune list API started.")
_SWEEP_FAILURES = (
    "dashscope_finetune_sweep_failures",
    "Sweeps that failed and left the previous snapshot in place.",
)


class SelfMetrics(Collector):
    """The exporter's own counters for every account, registered once per process.

    One collector for every account's counters, each family merged across accounts
    (account by account, in the order they were added); :meth:`parts` hands them
    over unmerged, each account's the same object until its counters change, so
    the exposition renders only the accounts that made requests since.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, _AccountSeries] = {}
        #: Family names in the order they are served.
        self.order = tuple(
            name for name, _ in (_REQUESTS, _ERRORS, _DURATION, _SWEEPS, _SWEEP_FAILURES)
        )
        # The two gauges first: served with the process metrics before them, one live
        # segment instead of two on either side of the cached counters.
        build = Gauge(
            "dashscope_finetune_exporter_build_info",
            "Build of ft-exporter (version, and the git commit it was built from or "
            "'unknown'); value is always 1.",
            ["version", "revision"],
            registry=registry,
        )
        build.labels(__version__, revision()).set(1)
        self.shard_accounts = Gauge(
            "dashscope_finetune_shard_accounts",
            "Accounts this exporter polls: its shard of --config.file's accounts (1 without).",
            registry=registry,
        )
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(_AccountSeries("").families().families)

    def parts(self) -> list[Part]:
        with self._lock:
            accounts = list(self._accounts.values())
        return [account.families() for account in accounts]

    def collect(self) -> Iterator[Metric]:
        return iter(merge(self.parts()))

    def account(self, name: str) -> AccountMetrics:
        """The counters of one account, its series zero-initialised."""
        with self._lock:
            series = self._accounts.get(name)
            if series is None:
                series = self._accounts[name] = _AccountSeries(name)
        return AccountMetrics(series, name)

    def remove(self, name: str) -> None:
        """Withdraw every series of an account that is no longer polled."""
        with self._lock:
            self._accounts.pop(name, None)

    def failures(self, account: str) -> Failures:
        """An account's last failed requests and its failures by code (the status page)."""
        with self._lock:
            series = self._accounts.get(account)
        return series.failures.snapshot() if series is not None else Failures()


class AccountMetrics:
    """One account's view of the counters: the client's RequestObserver and the sweep count."""

    def __init__(self, series: _AccountSeries, account: str) -> None:
        self._series = series
        self.account = account

    def observe(self, endpoint: str, duration: float, error: ApiError | None) -> None:
        series = self._series
        series.requests.labels(self.account, endpoint).inc()
        series.duration.labels(self.account, endpoint).observe(duration)
        if error is not None:
            series.errors.labels(self.account, endpoint, error.code, error.http_status).inc()
            series.failures.add(endpoint, error)
        series.changed()

    def reject(self, error: ApiError) -> None:
        # Only a listing is ever rejected as a whole.
        self._series.errors.labels(self.account, LIST, error.code, error.http_status).inc()
        self._series.failures.add(LIST, error)
        self._series.changed()

    def sweep_ended(self, ok: bool) -> None:
        self._series.sweeps.labels(self.account).inc()
        if not ok:
            self._series.sweep_failures.labels(self.account).inc()
        self._series.changed()

    def failures(self) -> Failures:
        """The account's last failed requests and its failures by code, for the status page."""
        return self._series.failures.snapshot()
