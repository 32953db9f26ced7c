"""The real exporter process against the real simulator process, over real HTTP."""

from __future__ import annotations

import gzip
import json
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import fixtures as fx
from conftest import (
    Exporter,
    Simulator,
    api_errors,
    free_port,
    http_get,
    readme_section,
    require_tool,
    samples,
    value,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from ft_exporter import __version__


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


def test_promtool_check_metrics_is_clean(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    promtool = require_tool("promtool")
    exp = start(exporter_factory, simulator)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exp.metrics(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_concurrent_scrapes_cause_no_api_requests(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = start(exporter_factory, simulator)
    before = simulator.stats()["list_requests"]
    results: list[int] = []
    lock = threading.Lock()

    def scrape() -> None:
        status, body = http_get(exp.url + "/metrics", timeout=10)
        assert b"dashscope_finetune_quota_used_jobs" in body
        with lock:
            results.append(status)

    threads = [threading.Thread(target=scrape) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [200] * 50
    assert simulator.stats()["list_requests"] == before == 3
    assert value(exp.metrics(), "dashscope_finetune_api_requests_total", account="default") == 3


def test_failed_sweeps_keep_last_values_count_errors_and_recover(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(
        [
            f"--dashscope.base-url={simulator.url}",
            "--poll.interval=1s",
            "--dashscope.max-attempts=2",
        ],
        env={"DASHSCOPE_API_KEY": simulator.key},
    )
    simulator.fault("throttle")
    wait_for(
        lambda: value(exp.metrics(), "dashscope_finetune_up", account="default") == 0,
        what="up == 0 while throttled",
    )
    text = exp.metrics()
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 16
    assert (
        value(
            text,
            "dashscope_finetune_jobs",
            account="default",
            model="qwen3-14b",
            training_type="sft",
            status="SUCCEEDED",
        )
        == 3
    )
    throttled = value(
        text,
        "dashscope_finetune_api_errors_total",
        account="default",
        code="Throttling",
        http_status="429",
    )
    assert throttled is not None and throttled >= 1
    failures = value(text, "dashscope_finetune_sweep_failures_total", account="default")
    assert failures is not None and failures >= 1
    # Two attempts per request (--dashscope.max-attempts=2); a sweep may be mid-way.
    assert 2 * failures <= throttled <= 2 * failures + 1
    simulator.fault("html502")

    def failed_with_502() -> bool:
        text = exp.metrics()
        return (
            value(text, "dashscope_finetune_sweep_failures_total", account="default") or 0
        ) > failures and (
            value(
                text,
                "dashscope_finetune_api_errors_total",
                account="default",
                code="InvalidResponse",
                http_status="502",
            )
            or 0
        ) >= 2

    wait_for(failed_with_502, what="a sweep failed on InvalidResponse/502")
    simulator.clear_fault()
    wait_for(
        lambda: value(exp.metrics(), "dashscope_finetune_up", account="default") == 1,
        what="recovery",
    )
    log_text = exp.output()
    assert log_text.count("sweep failed") == 2, log_text  # one line per distinct failure
    assert "sweep recovered" in log_text


def test_staleness_withdraws_job_series(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}", "--poll.interval=1s", "--poll.max-staleness=2s"],
        env={"DASHSCOPE_API_KEY": simulator.key},
    )
    assert value(exp.metrics(), "dashscope_finetune_quota_used_jobs", account="default") == 16
    simulator.fault("error500")

    def withdrawn_and_down() -> bool:
        text = exp.metrics()
        return (
            value(text, "dashscope_finetune_quota_used_jobs", account="default") is None
            and value(text, "dashscope_finetune_up", account="default") == 0
        )

    wait_for(withdrawn_and_down, timeout=20, what="withdrawal with up == 0")
    text = exp.metrics()
    assert value(text, "dashscope_finetune_up", account="default") == 0
    assert value(text, "dashscope_finetune_quota_limit_jobs", account="default") == 20
    assert "dashscope_finetune_jobs{" not in text
    assert "dashscope_finetune_job_info{" not in text


def test_endpoints_and_graceful_shutdown(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = start(exporter_factory, simulator, "--web.telemetry-path=/probe")
    status, body = http_get(exp.url + "/")
    assert status == 200
    assert b'<a href="/probe">' in body
    assert http_get(exp.url + "/-/healthy") == (200, b"Healthy\n")
    assert http_get(exp.url + "/-/ready") == (200, b"Ready\n")
    assert http_get(exp.url + "/metrics")[0] == 404
    status, body = http_get(exp.url + "/probe")
    assert status == 200
    assert b"dashscope_finetune_up" in body
    status, gz = http_get(exp.url + "/probe", headers={"Accept-Encoding": "gzip"})
    assert gzip.decompress(gz).startswith(b"# HELP")
    exp.proc.send_signal(signal.SIGTERM)
    assert exp.proc.wait(5) == 0


def test_not_ready_until_first_sweep(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    # Nothing listens at the base URL: the sweep fails, the process stays up but not ready.
    exp = exporter_factory(
        [f"--dashscope.base-url=http://127.0.0.1:{free_port()}", "--poll.interval=1h"],
        env={"DASHSCOPE_API_KEY": "sk-x"},
        wait_ready=False,
    )
    wait_for(lambda: http_get(exp.url + "/-/healthy")[0] == 200, what="healthy")
    wait_for(
        lambda: api_errors(exp, "ConnectionError", "") == 1,
        what="ConnectionError counted",
    )
    assert http_get(exp.url + "/-/ready")[0] == 503
    assert value(exp.metrics(), "dashscope_finetune_up", account="default") == 0


def test_wrong_key_is_counted_and_never_logged(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    wrong = "sk-wrong-SECRET-key-777"
    exp = exporter_factory(
        [
            f"--dashscope.base-url={simulator.url}",
            "--poll.interval=1s",
            "--log.level=debug",
            "--log.format=json",
        ],
        env={"DASHSCOPE_API_KEY": wrong},
        wait_ready=False,
    )
    wait_for(
        lambda: (
            (
                value(
                    exp.metrics(),
                    "dashscope_finetune_api_errors_total",
                    account="default",
                    code="InvalidApiKey",
                    http_status="401",
                )
                or 0
            )
            >= 2
        ),
        what="InvalidApiKey counted",
    )
    text = exp.metrics()
    exp.stop()
    logs = exp.output()
    assert "InvalidApiKey HTTP 401" in logs
    for line in logs.splitlines():
        json.loads(line)  # every line is JSON
    assert wrong not in logs
    assert wrong not in text


def test_demo_mode_serves_every_documented_metric(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory(["--demo", "--poll.interval=1s"])
    wait_for(
        lambda: "Demo mode: simulated API at http://127.0.0.1:" in exp.output(), what="demo banner"
    )
    assert f"metrics:  http://127.0.0.1:{exp.port}/metrics" in exp.output()
    text = exp.metrics()
    served = {name for name, _ in samples(text) if name.startswith("dashscope_")}
    documented = readme_metric_names()
    assert served == documented_sample_names(documented)
    assert value(text, "dashscope_finetune_up", account="default") == 1
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 8
    assert value(text, "dashscope_finetune_exporter_build_info", version=__version__) == 1


def readme_metric_names() -> dict[str, str]:
    """Metric name -> type, from the README's metrics table."""
    section = readme_section("## Metrics")
    rows = re.findall(
        r"^\| `(dashscope_[a-z_]+)` \| (gauge|counter|histogram) \|", section, re.MULTILINE
    )
    assert rows, "no metrics table found in README"
    return dict(rows)


def documented_sample_names(documented: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for name, kind in documented.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def test_readme_table_matches_metric_types(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = start(exporter_factory, simulator)
    families = {
        f.name: f.type
        for f in text_string_to_metric_families(exp.metrics())
        if f.name.startswith("dashscope_")
    }
    documented = readme_metric_names()
    assert {
        n.removesuffix("_total") if k == "counter" else n: k for n, k in documented.items()
    } == families
