"""The exporter's own counters, instrumented directly (they are events, not state)."""

from __future__ import annotations

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

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Error series present at 0 from start, so ``increase()`` sees the first error.
KNOWN_ERRORS: tuple[tuple[str, str], ...] = (
    *DOCUMENTED_ERRORS,
    (INVALID_RESPONSE, "200"),
    (TIMEOUT, ""),
    (CONNECTION_ERROR, ""),
)


class ExporterMetrics:
    """Counters for API requests and sweeps; implements the client's RequestObserver."""

    def __init__(self, registry: CollectorRegistry, account: str) -> None:
        self.account = account
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
            "Build of ft-exporter; value is always 1.",
            ["version"],
            registry=registry,
        )
        build.labels(__version__).set(1)
        self.sweeps.labels(account)
        self.sweep_failures.labels(account)
        for endpoint in ENDPOINTS:
            self.requests.labels(account, endpoint)
            self.duration.labels(account, endpoint)
            for code, http_status in KNOWN_ERRORS:
                self.errors.labels(account, endpoint, code, http_status)

    def observe(self, endpoint: str, duration: float, error: ApiError | None) -> None:
        self.requests.labels(self.account, endpoint).inc()
        self.duration.labels(self.account, endpoint).observe(duration)
        if error is not None:
            self.errors.labels(self.account, endpoint, error.code, error.http_status).inc()

    def reject(self, error: ApiError) -> None:
        # Only a listing is ever rejected as a whole.
        self.errors.labels(self.account, LIST, error.code, error.http_status).inc()
