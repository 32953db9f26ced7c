"""The real exporter process against the real simulator process, over real HTTP."""

from __future__ import annotations

import gzip
import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path

import fixtures as fx
from conftest import (
    Exporter,
    Simulator,
    api_errors,
    free_port,
    http_get,
    http_json,
    readme_section,
    require_tool,
    samples,
    value,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from ft_exporter import __version__
from ft_exporter.config import TEST_MIN_POLL_INTERVAL_ENV
from ft_exporter.version import revision


def get_with_headers(url: str, headers: dict[str, str]) -> tuple[int, Message, bytes]:
    """GET with the response headers too (conftest's http_get drops them)."""
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status), response.headers, response.read()


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
    assert (
        value(text, "dashscope_finetune_api_requests_total", account="default", endpoint="list")
        == 3
    )
    assert simulator.stats()["list_requests"] == 3
    # Every error series an alert or panel reads is there at 0 from the first scrape, the
    # client's own codes included: an absent series is not a zero to rate() or increase().
    errors = {
        (dict(labels)["code"], dict(labels)["http_status"]): v
        for (name, labels), v in got.items()
        if name == "dashscope_finetune_api_errors_total" and dict(labels)["endpoint"] == "list"
    }
    assert errors == {
        ("InvalidParameter", "400"): 0,
        ("UnsupportedOperation", "400"): 0,
        ("InvalidApiKey", "401"): 0,
        ("NotFound", "404"): 0,
        ("Conflict", "409"): 0,
        ("Throttling", "429"): 0,
        ("InternalError", "500"): 0,
        ("InvalidResponse", "200"): 0,
        ("Timeout", ""): 0,
        ("ConnectionError", ""): 0,
    }


def test_the_cancelled_spelling_is_canceled_and_not_counted_against_the_quota(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    """The vendor also spells it CANCELLED: one status, never counted against the quota."""
    job = {
        "job_id": "ft-cancelled",
        "job_name": "cancelled",
        "status": "CANCELLED",
        "model": "qwen3-8b",
        "training_type": "sft",
        "create_time": "2024-10-29 16:53:53",
        "end_time": "2024-10-30 10:00:00",
    }
    assert http_json(simulator.url + "/_sim/jobs", "POST", {"jobs": [job]}) == {"added": 1}
    text = start(exporter_factory, simulator).metrics()
    labels = {"account": "default", "model": "qwen3-8b", "training_type": "sft"}
    assert value(text, "dashscope_finetune_jobs", **labels, status="CANCELED") == 1
    assert value(text, "dashscope_finetune_jobs", **labels, status="CANCELLED") is None
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 16


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
    assert (
        value(
            exp.metrics(),
            "dashscope_finetune_api_requests_total",
            account="default",
            endpoint="list",
        )
        == 3
    )


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
        endpoint="list",
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
                endpoint="list",
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


STALENESS = 1.5
POLL = 0.25


def test_staleness_withdraws_job_series(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    """Job series stay up to --poll.max-staleness after the last good sweep, then go.

    The last good sweep ended after its last request arrived and before the first failing
    request arrived (the simulator stamps both): every scrape that ends before the first
    plus the limit still shows them, every scrape that starts after the second plus the
    limit does not. A sub-second interval (the test-only floor) keeps both bounds tight.
    """
    exp = exporter_factory(
        [
            f"--dashscope.base-url={simulator.url}",
            f"--poll.interval={POLL * 1000:g}ms",
            f"--poll.max-staleness={STALENESS * 1000:g}ms",
            "--dashscope.max-attempts=1",
            "--dashscope.max-requests-per-second=50",  # sweeps, not the pacing, set the pace
        ],
        env={"DASHSCOPE_API_KEY": simulator.key, TEST_MIN_POLL_INTERVAL_ENV: str(POLL)},
    )
    assert value(exp.metrics(), "dashscope_finetune_quota_used_jobs", account="default") == 16
    switched = time.monotonic()
    simulator.fault("error500")  # every sweep from here on fails
    scrapes: list[tuple[float, float, str]] = []
    while time.monotonic() < switched + POLL + STALENESS + 1.0:
        started = time.monotonic()
        text = exp.metrics()
        scrapes.append((started, time.monotonic(), text))
        time.sleep(0.05)
    requests = [(entry["at"], entry["fault"]) for entry in simulator.stats()["request_log"]]
    last_good = max(at for at, fault in requests if fault == "none")
    first_bad = min(at for at, fault in requests if fault == "error500")
    assert last_good < first_bad <= switched + POLL + 0.5, requests
    slack = 0.05  # the exporter's clock is the wall clock, the simulator's the monotonic one
    fresh = [text for _, ended, text in scrapes if ended < last_good + STALENESS - slack]
    stale = [text for began, _, text in scrapes if began > first_bad + STALENESS + slack]
    assert len(fresh) >= 5 and len(stale) >= 5, (len(fresh), len(stale))
    for text in fresh:
        assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 16
        assert "dashscope_finetune_jobs{" in text
        assert "dashscope_finetune_job_info{" in text
    for text in stale:
        assert value(text, "dashscope_finetune_quota_used_jobs", account="default") is None
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
    assert b'<a href="./probe">' in body
    assert http_get(exp.url + "/-/healthy") == (200, b"Healthy\n")
    assert http_get(exp.url + "/-/ready") == (200, b"Ready\n")
    assert http_get(exp.url + "/metrics")[0] == 404
    status, body = http_get(exp.url + "/probe")
    assert status == 200
    assert b"dashscope_finetune_up" in body
    # gzip when asked, with the header that says so; a plain body when not.
    status, headers, gz = get_with_headers(exp.url + "/probe", {"Accept-Encoding": "gzip"})
    assert (status, headers.get("Content-Encoding")) == (200, "gzip")
    assert gzip.decompress(gz).startswith(b"# HELP")
    status, headers, plain = get_with_headers(exp.url + "/probe", {"Accept-Encoding": "identity"})
    assert (status, headers.get("Content-Encoding")) == (200, None)
    assert plain.startswith(b"# HELP")
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
                    endpoint="list",
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
    # Only with a price table (tests/test_accounts.py checks its values).
    del documented[COST]
    assert served == documented_sample_names(documented)
    assert value(text, "dashscope_finetune_up", account="default") == 1
    assert value(text, "dashscope_finetune_quota_used_jobs", account="default") == 8
    # The tests' install is editable: no revision stamped (tests/test_container.py and
    # tests/test_packaging.py check a wheel's).
    build_info = [labels for name, labels in samples(text) if name.endswith("exporter_build_info")]
    assert build_info == [frozenset({("version", __version__), ("revision", revision())})]


COST = "dashscope_finetune_estimated_cost"


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
    assert documented.pop(COST) == "gauge"  # only with a price table: tests/test_accounts.py
    assert {
        n.removesuffix("_total") if k == "counter" else n: k for n, k in documented.items()
    } == families
