"""The exporter's own counters: which series exist before anything has happened."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ft_exporter.client import ApiError
from ft_exporter.selfmetrics import SelfMetrics


def error_series(
    registry: CollectorRegistry, endpoint: str = "list"
) -> dict[tuple[str, str], float]:
    """One endpoint's ``dashscope_finetune_api_errors_total`` series, by (code, http_status)."""
    return {
        (s.labels["code"], s.labels["http_status"]): s.value
        for family in registry.collect()
        if family.name == "dashscope_finetune_api_errors"
        for s in family.samples
        if s.name == "dashscope_finetune_api_errors_total" and s.labels["endpoint"] == endpoint
    }


def test_timeout_and_connection_error_series_exist_at_zero_before_any_error() -> None:
    """Present, not merely absent-reading-as-0: ``increase()`` misses a first error on a
    series that appears with it."""
    registry = CollectorRegistry()
    SelfMetrics(registry).account("acct")
    for endpoint in ("list", "logs"):
        series = error_series(registry, endpoint)
        assert series[("Timeout", "")] == 0.0
        assert series[("ConnectionError", "")] == 0.0
        assert series[("InvalidResponse", "200")] == 0.0
        assert series[("Throttling", "429")] == 0.0
        assert series[("NotFound", "404")] == 0.0
        assert (
            registry.get_sample_value(
                "dashscope_finetune_api_requests_total", {"account": "acct", "endpoint": endpoint}
            )
            == 0.0
        )


def test_an_error_counts_on_its_series() -> None:
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry).account("acct")
    metrics.observe("list", 0.1, ApiError("Timeout", "no answer within 10s"))
    metrics.observe("list", 0.1, None)
    metrics.observe("logs", 0.1, ApiError("NotFound", "gone", "404"))
    assert error_series(registry)[("Timeout", "")] == 1.0
    assert error_series(registry)[("NotFound", "404")] == 0.0
    assert error_series(registry, "logs")[("NotFound", "404")] == 1.0
    assert error_series(registry, "logs")[("Timeout", "")] == 0.0

    def requests(endpoint: str) -> float | None:
        return registry.get_sample_value(
            "dashscope_finetune_api_requests_total", {"account": "acct", "endpoint": endpoint}
        )

    assert requests("list") == 2.0
    assert requests("logs") == 1.0
    metrics.reject(ApiError("InvalidResponse", "total off", "200"))
    assert error_series(registry)[("InvalidResponse", "200")] == 1.0
    assert error_series(registry, "logs")[("InvalidResponse", "200")] == 0.0
