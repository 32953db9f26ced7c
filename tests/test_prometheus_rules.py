"""The shipped Prometheus and Alertmanager files, checked by Prometheus' own tools."""

from __future__ import annotations

import re
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
README = ROOT / "README.md"

#: The alerts the issue asks for, no more, no fewer.
EXPECTED_ALERTS = {
    "DashScopeFineTuneThrottled": "warning",
    "DashScopeFineTuneQuotaNearlyFull": "warning",
    "DashScopeFineTuneQuotaFull": "critical",
    "DashScopeFineTuneJobFailed": "warning",
    "DashScopeFineTuneJobStuck": "warning",
    "DashScopeFineTuneLossNotFinite": "critical",
    "DashScopeFineTuneTrainingStalled": "warning",
    "DashScopeFineTuneEvalLossRising": "info",
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


#: Thresholds moved by a little, each with the alert whose unit tests must then fail.
THRESHOLD_CHANGES = [
    (">= 0.8  # THRESHOLD", ">= 0.81  # THRESHOLD", "DashScopeFineTuneQuotaNearlyFull"),
    (
        "> 30 * 60)  # THRESHOLD seconds",
        "> 29 * 60)  # THRESHOLD seconds",
        "DashScopeFineTuneTrainingStalled",
    ),
    (
        "> 1.1  # THRESHOLD ratio",
        "> 1.09  # THRESHOLD ratio",
        "DashScopeFineTuneEvalLossRising",
    ),
    (
        "< 30 * 60  # THRESHOLD growing",
        "< 31 * 60  # THRESHOLD growing",
        "DashScopeFineTuneJobStuck",
    ),
    (
        "< 24 * 3600  # THRESHOLD end near",
        "< 25 * 3600  # THRESHOLD end near",
        "DashScopeFineTuneJobStuck",
    ),
    # The non-finite test, loosened to "above 1e300", lets a finite loss through.
    (
        "dashscope_finetune_job_train_loss > -Inf < +Inf",
        "dashscope_finetune_job_train_loss > -Inf < 1e300",
        "DashScopeFineTuneLossNotFinite",
    ),
    # NotFound on the log endpoint counted after all.
    (
        'unless dashscope_finetune_api_errors_total{endpoint="logs", code="NotFound"}',
        'unless dashscope_finetune_api_errors_total{endpoint="none"}',
        "DashScopeFineTuneAPIErrors",
    ),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("old", "new", "alert"), THRESHOLD_CHANGES)
def test_promtool_unit_tests_catch_a_changed_threshold(
    tmp_path: Path, old: str, new: str, alert: str
) -> None:
    """The unit tests pin the thresholds: moving one (e.g. 80 % to 81 %) makes them fail."""
    promtool = require_tool("promtool")
    text = ALERTS.read_text()
    assert text.count(old) == 1
    (tmp_path / "alerts.yml").write_text(text.replace(old, new))
    (tmp_path / ALERT_TESTS.name).write_text(ALERT_TESTS.read_text())
    result = run([promtool, "test", "rules", ALERT_TESTS.name], cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"alertname: {alert}," in output
    failed = set(re.findall(r"alertname: (\w+),", output))
    assert failed == {alert}, failed


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
    assert marked >= 13


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load(ALERT_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == set(EXPECTED_ALERTS)
    assert quiet == set(EXPECTED_ALERTS)
    assert load(ALERT_TESTS)["rule_files"] == ["alerts.yml"]


def test_loss_alert_is_tested_on_nan_and_both_infinities() -> None:
    """PromQL sees NaN only through comparisons: the unit tests feed it real NaN and Inf."""
    values = " ".join(
        series["values"]
        for group in load(ALERT_TESTS)["tests"]
        for series in group.get("input_series", [])
        if series["series"].startswith(
            ("dashscope_finetune_job_train_loss", "dashscope_finetune_job_eval_loss{")
        )
    ).split()
    assert {"NaN", "Inf", "-Inf"} <= set(values)


def header_table() -> dict[str, str]:
    """The header comment of alerts.yml: alert name -> its line of thresholds."""
    rows: dict[str, str] = {}
    for line in ALERTS.read_text().splitlines():
        match = re.match(r"#   (DashScopeFineTune\w+)\s+(.*)", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def readme_table() -> dict[str, list[str]]:
    """The alert table of the README: alert name -> its cells."""
    section = README.read_text().split("### The alerts", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `(DashScopeFineTune\w+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_every_alert_is_in_the_header_and_readme_tables() -> None:
    """Whoever looks for a threshold finds each alert in both tables, with its severity."""
    assert set(header_table()) == set(EXPECTED_ALERTS)
    readme = readme_table()
    assert list(readme) == list(EXPECTED_ALERTS)
    for name, severity in EXPECTED_ALERTS.items():
        assert readme[name][0] == severity, name
        assert len(readme[name]) == 3, name


def test_new_thresholds_are_in_both_tables() -> None:
    header, readme = header_table(), readme_table()
    assert "30m" in header["DashScopeFineTuneTrainingStalled"]
    assert "5m" in header["DashScopeFineTuneTrainingStalled"]
    assert "1.1" in header["DashScopeFineTuneEvalLossRising"]
    assert "15m" in header["DashScopeFineTuneEvalLossRising"]
    assert "30 minutes" in readme["DashScopeFineTuneTrainingStalled"][1]
    assert "10 %" in readme["DashScopeFineTuneEvalLossRising"][1]
    assert "15 minutes" in readme["DashScopeFineTuneEvalLossRising"][1]
    stuck = readme["DashScopeFineTuneJobStuck"][1]
    assert "30 minutes" in stuck
    assert "24 hours" in stuck
    assert "NotFound" in readme["DashScopeFineTuneAPIErrors"][1]


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


def am_matchers() -> list[str]:
    """Every matcher in the Alertmanager example's routes and inhibit rules."""
    config = load(AM_CONFIG)
    found: list[str] = []
    routes = list(config["route"].get("routes", []))
    while routes:
        route = routes.pop()
        found += route.get("matchers", [])
        routes += route.get("routes", [])
    for rule in config["inhibit_rules"]:
        found += rule["source_matchers"] + rule["target_matchers"]
    return found


def test_alertmanager_example_names_only_real_alerts_and_severities() -> None:
    """A misspelt alert name in a route or inhibit rule matches nothing, silently."""
    checked = 0
    for matcher in am_matchers():
        match = re.fullmatch(r'(\w+) (=~|=) "([^"]*)"', matcher)
        assert match, matcher
        label, op, value = match.groups()
        if label == "alertname":
            # "Prefix(A|B)" or a plain name: each alternative is one alert.
            group = re.fullmatch(r"(\w+)\(([\w|]+)\)", value) if op == "=~" else None
            names = [group[1] + alt for alt in group[2].split("|")] if group else [value]
            assert set(names) <= set(EXPECTED_ALERTS), matcher
        elif label == "severity":
            assert value in set(EXPECTED_ALERTS.values()), matcher
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=DashScopeFineTuneThrottled", "severity=warning"], "exporter-operators"),
        (["alertname=DashScopeFineTuneQuotaFull", "severity=critical"], "fine-tune-team-urgent"),
        (["alertname=DashScopeFineTuneQuotaNearlyFull", "severity=warning"], "fine-tune-team"),
        (["alertname=DashScopeFineTuneJobFailed", "severity=warning"], "fine-tune-team"),
        (["alertname=DashScopeFineTuneExporterDown", "severity=warning"], "exporter-operators"),
        (
            ["alertname=DashScopeFineTuneThrottled", "severity=warning", "endpoint=logs"],
            "exporter-operators",
        ),
        (
            ["alertname=DashScopeFineTuneAPIErrors", "severity=warning", "endpoint=logs"],
            "exporter-operators",
        ),
        (
            ["alertname=DashScopeFineTuneLossNotFinite", "severity=critical"],
            "fine-tune-team-urgent",
        ),
        (["alertname=DashScopeFineTuneTrainingStalled", "severity=warning"], "fine-tune-team"),
        (["alertname=DashScopeFineTuneJobStuck", "severity=warning"], "fine-tune-team"),
        # Info never pages: a receiver of its own, never the urgent one.
        (["alertname=DashScopeFineTuneEvalLossRising", "severity=info"], "fine-tune-team-info"),
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
