"""End to end: simulator -> exporter -> a real Prometheus with the shipped rules and dashboard.

A Prometheus server (the Debian package's) runs as a plain process on a loopback port with
a configuration made from the shipped prometheus/prometheus.yml: same scrape job name
("ft-exporter", which DashScopeFineTuneExporterDown looks for) and the shipped
prometheus/alerts.yml loaded unmodified from the repository. Only the intervals (1s) and
the target (the exporter's loopback port) differ, and the Alertmanager is left out.

Alerts asserted here fire with their real ``for:`` (none for the ones below), so no rule is
rewritten for the test. How long each alert takes to go active: benchmarks/alerts.py.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import promql
import pytest
import yaml
from conftest import (
    ROOT,
    UTC8,
    Exporter,
    Process,
    Simulator,
    free_port,
    http_get,
    http_json,
    require_tool,
    samples,
    wait_for,
)

pytestmark = pytest.mark.e2e

DASHBOARD = ROOT / "grafana" / "dashboards" / "dashscope-fine-tunes.json"
PROM_DIR = ROOT / "prometheus"
#: Template variables as Grafana would expand them: "All" for account and model, the
#: scrape job the shipped config defines, and a rate interval of 4 scrapes of 1s rounded up.
VARIABLES_ALL = {"job": "ft-exporter", "account": ".*", "model": ".*"}
VARIABLES_ONE_ACCOUNT = {**VARIABLES_ALL, "account": "default"}
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1s",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


class Prometheus(Process):
    """A real Prometheus server scraping one exporter every second."""

    def __init__(self, tmp: Path, exporter_port: int) -> None:
        binary = require_tool("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shipped = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        [job] = shipped["scrape_configs"]
        self.job = str(job["job_name"])
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            # The shipped rule files, unmodified, straight from the repository.
            "rule_files": [str(PROM_DIR / name) for name in shipped["rule_files"]],
            "scrape_configs": [
                {**job, "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
            ],
        }
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        super().__init__(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            log_path=tmp / "prometheus.log",
        )
        wait_for(lambda: http_get(self.url + "/-/ready")[0] == 200, 30, what="prometheus ready")

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        payload = json.loads(body)
        assert status == 200, payload
        assert payload["status"] == "success", payload
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: int = 30) -> list[dict[str, Any]]:
        end = time.time()
        data = self.api(
            "query_range", query=expr, start=f"{end - seconds:.3f}", end=f"{end:.3f}", step="1"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return result

    def evaluations(self) -> float:
        """When the rule group last ran (Unix time), to count evaluations without sleeping."""
        [group] = self.api("rules")["groups"]
        return _parse_rfc3339(group["lastEvaluation"])


def _parse_rfc3339(text: str) -> float:
    # Prometheus gives nanoseconds; Python 3.10 reads at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


@dataclass
class Stack:
    sim: Simulator
    exporter: Exporter
    prom: Prometheus

    def wait_healthy(self) -> None:
        """Scraped, swept, and the rules evaluated twice since: a settled healthy state."""
        job = self.prom.job
        wait_for(
            lambda: (
                bool(self.prom.query(f'up{{job="{job}"}} == 1'))
                and bool(self.prom.query(f'dashscope_finetune_up{{job="{job}"}} == 1'))
            ),
            30,
            0.2,
            "Prometheus to scrape a healthy exporter",
        )
        seen = time.time()
        wait_for(lambda: self.prom.evaluations() > seen + 1, 15, 0.2, "two rule evaluations")

    def wait_alert(self, name: str, state: str, timeout: float = 30) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def active() -> bool:
            found[:] = [
                a
                for a in self.prom.alerts()
                if a["labels"]["alertname"] == name and a["state"] == state
            ]
            return bool(found)

        wait_for(active, timeout, 0.2, f"{name} to be {state}")
        return found[0]


def start_stack(tmp: Path) -> Stack:
    sim = Simulator(tmp, scenario="demo")
    try:
        exporter = Exporter(
            tmp,
            [f"--dashscope.base-url={sim.url}", "--poll.interval=1s"],
            env={"DASHSCOPE_API_KEY": sim.key},
        )
    except BaseException:
        sim.stop()
        raise
    try:
        prom = Prometheus(tmp, exporter.port)
    except BaseException:
        exporter.stop()
        sim.stop()
        raise
    return Stack(sim, exporter, prom)


def stop_stack(stack: Stack) -> None:
    stack.prom.stop()
    stack.exporter.stop()
    stack.sim.stop()


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack left healthy for the whole module: nothing here injects faults into it."""
    require_tool("prometheus")
    stack = start_stack(tmp_path_factory.mktemp("healthy"))
    try:
        stack.wait_healthy()
        yield stack
    finally:
        stop_stack(stack)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own for a test that breaks something."""
    require_tool("prometheus")
    stack = start_stack(tmp_path)
    try:
        stack.wait_healthy()
        yield stack
    finally:
        stop_stack(stack)


def expand(expr: str, variables: dict[str, str]) -> str:
    values = {**variables, **BUILTINS}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"no value for ${name} in {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, expr)


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target))
    return out


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


@pytest.mark.xdist_group("prometheus-healthy")  # one healthy stack per run
def test_healthy_demo_has_no_active_alert(healthy: Stack) -> None:
    """Not even pending, over several evaluations of every rule."""
    rules = healthy.prom.api("rules")["groups"][0]["rules"]
    assert len(rules) == len(rule_expressions())
    assert all(rule["health"] == "ok" for rule in rules), rules
    start = healthy.prom.evaluations()
    checked = 0

    def quiet_for_five_evaluations() -> bool:
        nonlocal checked
        assert healthy.prom.alerts() == []
        checked += 1
        return healthy.prom.evaluations() >= start + 5

    wait_for(quiet_for_five_evaluations, 20, 0.25, "five rule evaluations")
    assert checked >= 5


def returns_data(run: Callable[[str], list[dict[str, Any]]], expr: str) -> Callable[[], bool]:
    return lambda: bool(run(expr))


@pytest.mark.xdist_group("prometheus-healthy")  # one healthy stack per run
def test_every_dashboard_query_returns_data(healthy: Stack) -> None:
    targets = dashboard_targets()
    assert len(targets) >= 25
    checked = 0
    for variables in (VARIABLES_ALL, VARIABLES_ONE_ACCOUNT):
        for where, target in targets:
            expr = expand(target["expr"], variables)
            # Instant queries as the panel sends them; range panels also over a window.
            runs = [healthy.prom.query] + ([healthy.prom.query_range] if target["range"] else [])
            for run in runs:
                wait_for(returns_data(run, expr), 30, 0.5, f"{run.__name__} {where}: {expr}")
                checked += 1


@pytest.mark.xdist_group("prometheus-healthy")  # one healthy stack per run
def test_every_template_variable_query_finds_values(healthy: Stack) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"])
        assert match, var["query"]
        selector = expand(match.group(1), VARIABLES_ALL)
        values = healthy.prom.api(f"label/{match.group(2)}/values", **{"match[]": selector})
        assert values, var["name"]


@pytest.mark.xdist_group("prometheus-healthy")  # one healthy stack per run
def test_every_name_in_dashboard_and_rules_is_served(healthy: Stack) -> None:
    """A typo in a metric or label name parses, returns nothing and hides; not here."""
    served = samples(healthy.exporter.metrics())
    metric_names = {name for name, _ in served} | {"up"}
    label_names = {label for _, labels in served for label, _ in labels} | TARGET_LABELS
    used = promql.Names()
    legends: set[str] = set()
    for where, target in dashboard_targets():
        found = promql.names(target["expr"])
        assert found.metrics, where
        used.update(found)
        legends |= promql.legend_labels(target.get("legendFormat", ""))
    dashboard = json.loads(DASHBOARD.read_text())
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            used.update(promql.variable_query_names(var["query"]))
    for alert, expr in rule_expressions():
        found = promql.names(expr)
        assert found.metrics, alert
        used.update(found)
    assert len(used.metrics) >= 15
    assert used.metrics <= metric_names, used.metrics - metric_names
    assert used.labels | legends <= label_names, (used.labels | legends) - label_names
    # And every function is one Prometheus knows (it answered every query above with
    # success, but check the names read too).
    known = {"sum", "max", "rate", "increase", "histogram_quantile", "time", "absent"}
    assert used.functions <= known, used.functions - known


def test_throttling_fires_the_real_rule(fresh: Stack) -> None:
    assert fresh.prom.alerts() == []
    fresh.sim.fault("throttle")
    alert = fresh.wait_alert("DashScopeFineTuneThrottled", "firing")
    assert alert["labels"] == {
        "alertname": "DashScopeFineTuneThrottled",
        "account": "default",
        "code": "Throttling",
        "instance": f"127.0.0.1:{fresh.exporter.port}",
        "job": "ft-exporter",
        "severity": "warning",
    }
    assert float(alert["value"]) >= 1


def test_full_quota_fires_the_real_rule(fresh: Stack) -> None:
    assert fresh.prom.alerts() == []
    added = http_json(fresh.sim.url + "/_sim/jobs", "POST", {"fill_quota": 20})["added"]
    assert added > 0
    full = fresh.wait_alert("DashScopeFineTuneQuotaFull", "firing")
    assert full["labels"]["severity"] == "critical"
    assert full["labels"]["account"] == "default"
    assert float(full["value"]) >= 20
    # Nearly full goes pending at once and would fire after its 10 minutes.
    nearly = fresh.wait_alert("DashScopeFineTuneQuotaNearlyFull", "pending")
    assert float(nearly["value"]) >= 1.0


def failed_and_stuck_jobs() -> list[dict[str, Any]]:
    """A job that failed two minutes ago and one queued for seven hours, in DashScope's zone."""
    now = datetime.now(UTC8)

    def stamp(ago: timedelta) -> str:
        return (now - ago).strftime("%Y-%m-%d %H:%M:%S")

    return [
        {
            "job_id": "ft-e2e-failed",
            "job_name": "e2e-failed",
            "status": "FAILED",
            "model": "qwen3-8b",
            "training_type": "sft",
            "create_time": stamp(timedelta(minutes=20)),
            "end_time": stamp(timedelta(minutes=2)),
        },
        {
            "job_id": "ft-e2e-queued",
            "job_name": "e2e-queued",
            "status": "QUEUING",
            "model": "qwen3-14b",
            "training_type": "efficient_sft",
            "create_time": stamp(timedelta(hours=7)),
        },
    ]


def test_failed_and_stuck_jobs_fire_the_real_rules(
    fresh: Stack,
) -> None:
    """The joins of job_info with the timestamps work on the exporter's real label sets."""
    assert fresh.prom.alerts() == []
    jobs = failed_and_stuck_jobs()
    http_json(fresh.sim.url + "/_sim/jobs", "POST", {"jobs": jobs})
    failed = fresh.wait_alert("DashScopeFineTuneJobFailed", "firing")
    stuck = fresh.wait_alert("DashScopeFineTuneJobStuck", "firing")
    assert failed["labels"]["job_id"] == "ft-e2e-failed"
    assert failed["labels"]["job_name"] == "e2e-failed"
    assert 100 < float(failed["value"]) < 300  # ended about two minutes ago
    assert stuck["labels"]["job_id"] == "ft-e2e-queued"
    assert stuck["labels"]["status"] == "QUEUING"
    assert 7 * 3600 - 60 < float(stuck["value"]) < 7 * 3600 + 60
