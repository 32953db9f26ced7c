"""The real exporter process against the real simulator process, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable

import fixtures as fx
from conftest import Exporter, Simulator, samples, value


def start(exporter_factory: Callable[..., Exporter], sim: Simulator, *args: str) -> Exporter:
    return exporter_factory(
        [f"--dashscope.base-url={sim.url}", "--dashscope.page-size=7", "--poll.interval=1h", *args],
        env={"DASHSCOPE_API_KEY": sim.key},
    )


def test_static_account_exact_values(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = start(exporter_factory, simulator)
    text = exp.metrics()
    got = samples(text)
    jobs = {
        (dict(labels)["model"], dict(labels)["training_type"], dict(labels)["status"]): v
        for (name, labels), v in got.items()
        if name == "dashscope_finetune_jobs"
    }
    assert jobs == fx.expected_job_counts()
    tokens = {
        (dict(labels)["model"], dict(labels)["training_type"], dict(labels)["status"]): v
        for (name, labels), v in got.items()
        if name == "dashscope_finetune_usage_tokens"
    }
    assert tokens == fx.expected_usage_tokens()
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 16
    assert value(text, "dashscope_finetune_quota_limit_jobs", account="default") == 20
    assert value(text, "dashscope_finetune_malformed_jobs", account="default") == 1
    assert value(text, "dashscope_finetune_up", account="default") == 1
    # 20 list entries at 7 per page: exactly 3 requests, no errors.
    assert value(text, "dashscope_finetune_api_requests_total", account="default") == 3
    assert simulator.stats()["list_requests"] == 3
    assert (
        value(
            text,
            "dashscope_finetune_api_errors_total",
            account="default",
            code="Throttling",
            http_status="429",
        )
        == 0
    )
