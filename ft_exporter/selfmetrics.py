"""The exporter's own counters, instrumented directly (they are events, not state)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class SelfMetrics:
    """The exporter's own counters for every account, registered once per process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "dashscope_finetune_api_requests",
            "HTTP requests made to the fine-tune API, by endpoint (list: the job list; "
            "logs: training logs).",
            ["account", "endpoint"],
            registry=registry,
        )
        self.errors = Counter(
            "dashscope_finetune_api_errors",
            "Failed requests to the fine-tune API by endpoint, error code and HTTP status "
            "(http_status is empty when no answer came).",
            ["account", "endpoint", "code", "http_status"],
            registry=registry,
        )
        self.duration = Histogram(
            "dashscope_finetune_api_request_duration_seconds",
            "Latency of requests to the fine-tune API, by endpoint.",
            ["account", "endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.sweeps = Counter(
            "dashscope_finetune_sweeps",
            "Sweeps of the fine-tune list API started.",
            ["account"],
            registry=registry,
        )
        self.sweep_failures = Counter(
            "dashscope_finetune_sweep_failures",
            "Sweeps that failed and left the previous snapshot in place.",
            ["account"],
            registry=registry,
        )
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
        self._lock = threading.Lock()
        #: Every error label set used per account, so that removing an account removes all.
        self._errors: dict[str, set[tuple[str, str, str]]] = {}
        #: The last failed requests per account, for the status page; they live as long
        #: as the error counters, so the page's tally matches dashscope_finetune_api_errors.
        self._failures: dict[str, RecentFailures] = {}

    def account(self, name: str) -> AccountMetrics:
        """The counters of one account, its series zero-initialised."""
        with self._lock:
            if name not in self._errors:
                self._errors[name] = set()
                self._failures[name] = RecentFailures()
                self.sweeps.labels(name)
                self.sweep_failures.labels(name)
                for endpoint in ENDPOINTS:
                    self.requests.labels(name, endpoint)
                    self.duration.labels(name, endpoint)
                    for code, http_status in KNOWN_ERRORS:
                        self._error(name, endpoint, code, http_status)
        return AccountMetrics(self, name)

    def _error(self, account: str, endpoint: str, code: str, http_status: str) -> Counter:
        self._errors.setdefault(account, set()).add((endpoint, code, http_status))
        return self.errors.labels(account, endpoint, code, http_status)

    def count_error(self, account: str, endpoint: str, error: ApiError) -> None:
        with self._lock:
            counter = self._error(account, endpoint, error.code, error.http_status)
            failures = self._failures.setdefault(account, RecentFailures())
        counter.inc()
        failures.add(endpoint, error)

    def failures(self, account: str) -> Failures:
        with self._lock:
            failures = self._failures.get(account)
        return failures.snapshot() if failures is not None else Failures()

    def remove(self, name: str) -> None:
        """Withdraw every series of an account that is no longer polled."""
        with self._lock:
            errors = self._errors.pop(name, set())
            self._failures.pop(name, None)
        for labels in errors:
            self.errors.remove(name, *labels)
        for endpoint in ENDPOINTS:
            self.requests.remove(name, endpoint)
            self.duration.remove(name, endpoint)
        self.sweeps.remove(name)
        self.sweep_failures.remove(name)


class AccountMetrics:
    """One account's view of the counters: the client's RequestObserver and the sweep count."""

    def __init__(self, metrics: SelfMetrics, account: str) -> None:
        self._metrics = metrics
        self.account = account

    def observe(self, endpoint: str, duration: float, error: ApiError | None) -> None:
        self._metrics.requests.labels(self.account, endpoint).inc()
        self._metrics.duration.labels(self.account, endpoint).observe(duration)
        if error is not None:
            self._metrics.count_error(self.account, endpoint, error)

    def reject(self, error: ApiError) -> None:
        # Only a listing is ever rejected as a whole.
        self._metrics.count_error(self.account, LIST, error)

    def failures(self) -> Failures:
        """The account's last failed requests and its failures by code, for the status page."""
        return self._metrics.failures(self.account)

    def sweep_ended(self, ok: bool) -> None:
        self._metrics.sweeps.labels(self.account).inc()
        if not ok:
            self._metrics.sweep_failures.labels(self.account).inc()
