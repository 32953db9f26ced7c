"""The shipped Prometheus and Alertmanager files, checked by Prometheus' own tools."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import promql
import pytest
import yaml
from conftest import ROOT, require_tool

from ft_exporter.config import DEFAULT_PORT

PROM_DIR = ROOT / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERT_TESTS = PROM_DIR / "alerts.test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
AM_CONFIG = PROM_DIR / "alertmanager.yml"

#: The alerts the issue asks for, no more, no fewer.
EXPECTED_ALERTS = {
    "DashScopeFineTuneThrottled": "warning",
    "DashScopeFineTuneQuotaNearlyFull": "warning",
    "DashScopeFineTuneQuotaFull": "critical",
    "DashScopeFineTuneJobFailed": "warning",
    "DashScopeFineTuneJobStuck": "warning",
    "DashScopeFineTuneExporterDown": "warning",
    "DashScopeFineTuneDataStale": "warning",
    "DashScopeFineTuneAPIErrors": "warning",
}


def run(args: list[str], cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.mark.e2e
def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


@pytest.mark.e2e
def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "test", "rules", ALERT_TESTS.name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.e2e
def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests pin the thresholds: moving one (here 80 % to 81 %) makes them fail."""
    promtool = require_tool("promtool")
    text = ALERTS.read_text()
    assert text.count(">= 0.8  # THRESHOLD") == 1
    (tmp_path / "alerts.yml").write_text(
        text.replace(">= 0.8  # THRESHOLD", ">= 0.81  # THRESHOLD")
    )
    (tmp_path / ALERT_TESTS.name).write_text(ALERT_TESTS.read_text())
    result = run([promtool, "test", "rules", ALERT_TESTS.name], cwd=tmp_path)
    assert result.returncode != 0
    assert "DashScopeFineTuneQuotaNearlyFull" in result.stdout + result.stderr


def test_rules_are_the_issue_alerts_with_severity_and_guidance() -> None:
    rules = alert_rules()
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules} == EXPECTED_ALERTS
    assert len(rules) == len(EXPECTED_ALERTS)
    for rule in rules:
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, rule["alert"]
        assert "\n" not in annotations["summary"], rule["alert"]
        # The description says what to do, not only what happened.
        assert len(annotations["description"]) > 150, rule["alert"]


def test_quota_alerts_say_delete_models_or_raise_quota() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in ("DashScopeFineTuneQuotaNearlyFull", "DashScopeFineTuneQuotaFull"):
        description = rules[name]["annotations"]["description"]
        assert "new jobs" in description.lower() or "new fine-tune jobs" in description.lower()
        assert "Delete fine-tuned models" in description
        assert "higher quota" in description


def test_every_threshold_is_marked() -> None:
    """Thresholds are easy to find: every number, window and `for:` carries a marker comment."""
    marked = 0
    for rule in alert_rules():
        for line in rule["expr"].splitlines():
            code = line.split("#", 1)[0]
            literals = [
                token
                for kind, token in promql.tokenize(code)
                if (kind == "number" and token != "0") or kind == "range"
            ]
            if literals:
                assert "# THRESHOLD" in line or "# same" in line, f"{rule['alert']}: {line!r}"
                marked += 1
    for_lines = [
        line for line in ALERTS.read_text().splitlines() if line.strip().startswith("for:")
    ]
    assert for_lines
    assert all(line.endswith("# THRESHOLD") for line in for_lines), for_lines
    assert marked >= 8


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load(ALERT_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == set(EXPECTED_ALERTS)
    assert quiet == set(EXPECTED_ALERTS)
    assert load(ALERT_TESTS)["rule_files"] == ["alerts.yml"]


@pytest.mark.e2e
def test_example_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    # Run on the real file: its rule_files entry is relative to the file's own directory.
    result = run([promtool, "check", "config", str(PROM_CONFIG)], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_example_prometheus_config_scrapes_the_default_port() -> None:
    config = load(PROM_CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == ["ft-exporter"]
    targets = [t for sc in jobs["ft-exporter"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"ft-exporter:{DEFAULT_PORT}"]
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for sc in m["static_configs"] for t in sc["targets"]] == [
        "alertmanager:9093"
    ]
    # ExporterDown looks for the job by this name.
    down = next(r for r in alert_rules() if r["alert"] == "DashScopeFineTuneExporterDown")
    assert 'up{job="ft-exporter"}' in down["expr"]


@pytest.mark.e2e
def test_example_alertmanager_config_is_valid() -> None:
    amtool = require_tool("amtool")
    result = run([amtool, "check-config", str(AM_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=DashScopeFineTuneThrottled", "severity=warning"], "exporter-operators"),
        (["alertname=DashScopeFineTuneQuotaFull", "severity=critical"], "fine-tune-team-urgent"),
        (["alertname=DashScopeFineTuneQuotaNearlyFull", "severity=warning"], "fine-tune-team"),
        (["alertname=DashScopeFineTuneJobFailed", "severity=warning"], "fine-tune-team"),
        (["alertname=DashScopeFineTuneExporterDown", "severity=warning"], "exporter-operators"),
    ],
)
@pytest.mark.e2e
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = require_tool("amtool")
    result = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={AM_CONFIG}",
            "account=default",
            *labels,
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver
