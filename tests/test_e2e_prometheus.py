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

import fixtures as fx
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

from ft_exporter import __version__
from ft_exporter.version import revision

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


def start_stack(tmp: Path, scenario: str = "demo") -> Stack:
    sim = Simulator(tmp, scenario=scenario)
    try:
        exporter = Exporter(
            tmp,
            # A sweep a second: its list page and a log request per running job must fit
            # in it (at the default 2 requests a second, 3 running jobs would not).
            [
                f"--dashscope.base-url={sim.url}",
                "--poll.interval=1s",
                "--dashscope.max-requests-per-second=20",
            ],
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


# --- every dashboard query, its exact value on the static account ----------------------

#: The static scenario job by job (ft_exporter/simulator.py static_jobs), as the API sends
#: it: id -> (model, training_type, status, create_time, end_time, usage tokens), times in
#: the exporter's default zone, UTC+8. Checked against tests/fixtures.py below.
M14, M8, M7 = "qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct"
CREATED, ENDED = "2024-10-29 16:53:53", "2024-10-30 10:00:00"
STATIC_JOBS: dict[str, tuple[str, str, str, str, str | None, int]] = {
    "ft-s01": (M14, "sft", "SUCCEEDED", CREATED, "2024-10-29 17:11:26", 279808),
    "ft-s02": (M14, "sft", "SUCCEEDED", CREATED, ENDED, 100000),
    "ft-s03": (M14, "sft", "SUCCEEDED", CREATED, ENDED, 50000),
    "ft-s04": (M14, "sft", "RUNNING", "2024-11-01 08:00:00", None, 0),
    "ft-s05": (M14, "sft", "FAILED", CREATED, ENDED, 0),
    "ft-s06": (M14, "sft", "CANCELED", CREATED, ENDED, 0),
    "ft-s07": (M14, "efficient_sft", "SUCCEEDED", CREATED, ENDED, 12345),
    "ft-s08": (M14, "efficient_sft", "PENDING", "2024-11-01 09:00:00", None, 0),
    "ft-s09": (M14, "efficient_sft", "QUEUING", "2024-11-01 09:30:00", None, 0),
    "ft-s10": (M8, "sft", "SUCCEEDED", CREATED, ENDED, 2000),
    "ft-s11": (M8, "sft", "SUCCEEDED", CREATED, ENDED, 3000),
    "ft-s12": (M8, "sft", "CANCELING", CREATED, None, 0),
    "ft-s13": (M8, "sft", "QUEUING", CREATED, None, 0),
    "ft-s14": (M8, "sft", "QUEUING", CREATED, None, 0),
    "ft-s15": (M8, "dpo_lora", "RUNNING", CREATED, None, 0),
    "ft-s16": (M8, "dpo_lora", "FAILED", CREATED, ENDED, 0),
    "ft-s17": (M8, "dpo_lora", "SUSPENDED", CREATED, None, 0),
    "ft-s18": (M7, "cpt", "SUCCEEDED", CREATED, ENDED, 4096),
    "ft-s19": (M7, "cpt", "RUNNING", CREATED, None, 0),
}
ENDED_STATUSES = {"SUCCEEDED", "FAILED", "CANCELED"}
#: Rate window for the static stack: 10 one-second sweeps, so the test waits 15 s, not 1 min.
RATE_WINDOW = "10s"
#: Codes whose error series exist at 0 from the start.
ERROR_CODES = (
    "InvalidParameter",
    "UnsupportedOperation",
    "InvalidApiKey",
    "NotFound",
    "Conflict",
    "Throttling",
    "InternalError",
    "InvalidResponse",
    "Timeout",
    "ConnectionError",
)

Labels = frozenset[tuple[str, str]]


def at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC8).timestamp()


def one(**labels: str) -> Labels:
    return frozenset(labels.items())


def job_labels(job_id: str) -> Labels:
    model, ttype, status, *_ = STATIC_JOBS[job_id]
    return one(
        account="default",
        job_id=job_id,
        job_name=f"name-{job_id}",
        model=model,
        training_type=ttype,
        status=status,
    )


def per_job(ended: bool, figure: Callable[[str], float]) -> dict[Labels, float]:
    return {
        job_labels(job_id): figure(job_id)
        for job_id, (_, _, status, *_) in STATIC_JOBS.items()
        if (status in ENDED_STATUSES) is ended
    }


def summed(key: Callable[[str], Labels], figure: Callable[[str], float]) -> dict[Labels, float]:
    out: dict[Labels, float] = {}
    for job_id in STATIC_JOBS:
        out[key(job_id)] = out.get(key(job_id), 0.0) + figure(job_id)
    return out


Check = Callable[[float, float], bool]  # (got, now) -> ok


def equals(expected: float) -> Check:
    return lambda got, _now: abs(got - expected) <= 1e-9 * max(1.0, abs(expected))


def within(low: float, high: float) -> Check:
    return lambda got, _now: low <= got <= high


def age_since(created: float) -> Check:
    """``time() - created`` at the query's own time (instant queries only)."""
    return lambda got, now: abs(got - (now - created)) < 1e-3


def static_expectations() -> dict[str, dict[Labels, Check]]:
    """Each dashboard target's result on the static account: exact where the data is fixed;
    bounds only where the value is a rate, a duration or an age."""
    account = one(account="default")
    info = one(version=__version__, revision=revision())
    stamp = {
        job_labels(job_id): age_since(at(created))
        for job_id, (_, _, status, created, _, _) in STATIC_JOBS.items()
        if status not in ENDED_STATUSES
    }
    by_status = summed(lambda j: one(status=STATIC_JOBS[j][2]), lambda _j: 1.0)
    active_by_model = summed(
        lambda j: one(model=STATIC_JOBS[j][0]),
        lambda j: float(STATIC_JOBS[j][2] not in ENDED_STATUSES),
    )
    tokens = summed(
        lambda j: one(model=STATIC_JOBS[j][0], training_type=STATIC_JOBS[j][1]),
        lambda j: float(STATIC_JOBS[j][5]),
    )

    def exact(values: dict[Labels, float]) -> dict[Labels, Check]:
        return {labels: equals(v) for labels, v in values.items()}

    def ended(figure: Callable[[str], float]) -> dict[Labels, Check]:
        return exact(per_job(True, figure))

    def duration(job_id: str) -> float:
        _, _, _, created, end, _ = STATIC_JOBS[job_id]
        assert end is not None
        return at(end) - at(created)

    def ended_ms(job_id: str) -> float:
        end = STATIC_JOBS[job_id][4]
        assert end is not None
        return at(end) * 1000

    sweeps_a_minute = {account: within(48, 72)}  # one sweep a second
    endpoints = [one(account="default", endpoint=e) for e in ("list", "logs")]
    return {
        "Quota used / A": exact({account: 16 / 20}),
        "Jobs counted / limit / A": exact({account: 16}),
        "Jobs counted / limit / B": exact({account: 20}),
        "Quota headroom / A": exact({account: 4}),
        "Jobs by status / A": exact(by_status),
        "Jobs by status over time / A": exact(by_status),
        "Active jobs by model over time / A": exact(active_by_model),
        "Active jobs / A": stamp,
        "Recently ended jobs / A": ended(duration),
        "Recently ended jobs / B": ended(lambda j: float(STATIC_JOBS[j][5])),
        "Recently ended jobs / C": ended(ended_ms),
        "Tokens used by model and training type / A": exact(tokens),
        "Tokens by model and training type over time / A": exact(tokens),
        # Started without a config file, so without prices: no cost series at all (the
        # panel shows its "no prices configured" text).
        "Estimated cost by model and account / A": {},
        "Up / A": exact({one(): 1}),
        "Up / B": exact({account: 1}),
        # One sweep a second, scraped every second: never older than 3 s.
        "Data age / A": {account: within(0, 3)},
        "Throttled requests (10 min) / A": exact({account: 0}),
        "Malformed jobs / A": exact({account: 1}),
        "Exporter version / A": exact({info: 1}),
        # One list request a sweep, and one log request per RUNNING job (three).
        "API request rate / A": {
            one(account="default", endpoint="list"): within(48, 72),
            one(account="default", endpoint="logs"): within(3 * 48, 3 * 72),
        },
        "API errors by code / A": exact(
            {one(code=code, endpoint=e): 0 for code in ERROR_CODES for e in ("list", "logs")}
        ),
        # Loopback answers well inside the first bucket (50 ms): its linear interpolation.
        "API request latency / A": exact({endpoint: 0.05 * 0.5 for endpoint in endpoints}),
        "API request latency / B": exact({endpoint: 0.05 * 0.9 for endpoint in endpoints}),
        "API request latency / C": exact({endpoint: 0.05 * 0.99 for endpoint in endpoints}),
        **training_expectations(),
        "Sweep duration / A": {account: within(0.0001, 0.5)},
        "Sweeps and failed sweeps / A": sweeps_a_minute,
        "Sweeps and failed sweeps / B": exact({account: 0}),
        "Data age over time / A": {account: within(0, 3)},
        "Up over time / A": exact({one(): 1}),
        "Up over time / B": exact({account: 1}),
    }


#: Scripted logs of the static account's RUNNING jobs (posted once its stack is up), and
#: what the exporter makes of them: (train, eval, eval min, learning rate, epoch); the
#: three have n_epochs 3.
STATIC_LOGS: dict[str, list[str]] = {
    "ft-s04": [
        " Start training!",
        "{'loss': 2.0, 'learning_rate': 2e-05, 'epoch': 0.75}",
        "{'eval_loss': 1.5, 'epoch': 1.0}",
        "{'loss': 1.25, 'learning_rate': 1e-05, 'epoch': 1.5}",
        "{'eval_loss': 1.75, 'epoch': 1.5}",
    ],
    "ft-s15": ["{'loss': 0.5, 'learning_rate': 5e-06, 'epoch': 3.0}"],
    "ft-s19": [
        "{'loss': 3.0, 'learning_rate': 3e-05, 'epoch': 0.25}",
        "{'eval_loss': 2.5, 'epoch': 0.3}",
    ],
}
STATIC_TRAINING: dict[str, tuple[float, float | None, float | None, float, float]] = {
    "ft-s04": (1.25, 1.75, 1.5, 1e-05, 1.5),
    "ft-s15": (0.5, None, None, 5e-06, 3.0),
    "ft-s19": (3.0, 2.5, 2.5, 3e-05, 0.3),
}


def training_expectations() -> dict[str, dict[Labels, Check]]:
    """The Training row on the static account: RUNNING jobs with their name and model."""

    def shown(job_id: str) -> Labels:
        model = STATIC_JOBS[job_id][0]
        return one(account="default", job_id=job_id, job_name=f"name-{job_id}", model=model)

    def column(index: int) -> dict[Labels, Check]:
        return {
            shown(j): equals(v[index])  # type: ignore[arg-type]
            for j, v in STATIC_TRAINING.items()
            if v[index] is not None
        }

    def ends_at_pace(job_id: str) -> Check:
        # Started (as far as anyone knows) at creation; ends at its pace so far, in ms.
        created = at(STATIC_JOBS[job_id][3])
        progress = STATIC_TRAINING[job_id][4] / 3

        def check(v: float, now: float) -> bool:
            return abs(v / 1000 - (created + (now - created) / progress)) <= 10 / progress

        return check

    progress = {shown(j): equals(min(v[4] / 3, 1.0)) for j, v in STATIC_TRAINING.items()}
    return {
        "Train loss / A": column(0),
        "Eval loss / A": column(1),
        "Progress / A": progress,
        "Running jobs: training / A": progress,
        "Running jobs: training / B": column(4),
        "Running jobs: training / C": {shown(j): equals(3.0) for j in STATIC_TRAINING},
        "Running jobs: training / D": column(0),
        "Running jobs: training / E": column(1),
        "Running jobs: training / F": column(2),
        "Running jobs: training / G": column(3),
        "Running jobs: training / H": {shown(j): ends_at_pace(j) for j in STATIC_TRAINING},
        # Read at first sight, within the stack's first minute: no timestamped line.
        "Running jobs: training / I": {shown(j): within(0, 120) for j in STATIC_TRAINING},
    }


def test_static_job_table_matches_the_fixture_figures() -> None:
    """The per-job table above and tests/fixtures.py describe the same account."""
    counts: dict[tuple[str, str, str], tuple[int, int]] = {}
    for model, ttype, status, _, _, usage in STATIC_JOBS.values():
        jobs, tokens = counts.get((model, ttype, status), (0, 0))
        counts[(model, ttype, status)] = (jobs + 1, tokens + usage)
    assert counts == fx.NONZERO


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on the static account, read only: every figure is known in advance."""
    require_tool("prometheus")
    stack = start_stack(tmp_path_factory.mktemp("static"), scenario="static")
    try:
        stack.wait_healthy()
        for job_id, lines in STATIC_LOGS.items():
            http_json(stack.sim.url + "/_sim/logs", "POST", {"job_id": job_id, "lines": lines})
        wait_for(
            lambda: all(
                samples(stack.exporter.metrics()).get(
                    ("dashscope_finetune_job_log_lines", one(account="default", job_id=j))
                )
                == len(lines)
                for j, lines in STATIC_LOGS.items()
            ),
            what="the scripted logs read",
        )
        yield stack
    finally:
        stop_stack(stack)


def result_values(result: list[dict[str, Any]]) -> dict[Labels, list[float]]:
    """Each series' values, keyed by its labels less the target's and the metric name."""
    out: dict[Labels, list[float]] = {}
    for series in result:
        labels = frozenset(
            (k, v) for k, v in series["metric"].items() if k not in TARGET_LABELS | {"__name__"}
        )
        points = series["values"] if "values" in series else [series["value"]]
        out[labels] = [float(v) for _, v in points]
    return out


@pytest.mark.xdist_group("prometheus-static")  # one static stack per run
def test_every_dashboard_query_has_its_exact_value_on_the_static_account(static: Stack) -> None:
    targets = dashboard_targets()
    expected = static_expectations()
    assert sorted(expected) == sorted(where for where, _ in targets)
    # Rates need a full window of one-second sweeps behind the earliest point compared
    # (3 s back): 14 scrapes in the last 15 s span at least 13 s.
    job = static.prom.job
    wait_for(
        lambda: bool(static.prom.query(f'count_over_time(up{{job="{job}"}}[15s]) >= 14')),
        40,
        0.5,
        "15 s of scrapes",
    )
    checked = 0
    for variables in (VARIABLES_ALL, VARIABLES_ONE_ACCOUNT):
        for where, target in targets:
            expr = expand(target["expr"].replace("$__rate_interval", RATE_WINDOW), variables)
            now = round(time.time(), 3)
            results = [static.prom.api("query", query=expr, time=f"{now:.3f}")["result"]]
            if target["range"]:
                # The last 3 s, every second: each point has a full window behind it.
                results.append(
                    static.prom.api(
                        "query_range",
                        query=expr,
                        start=f"{now - 3:.3f}",
                        end=f"{now:.3f}",
                        step="1",
                    )["result"]
                )
            for result in results:
                got = result_values(result)
                assert got.keys() == expected[where].keys(), (where, expr, got)
                for labels, values in got.items():
                    ok = expected[where][labels]
                    assert all(ok(v, now) for v in values), (where, dict(labels), values)
                checked += 1
    # 43 targets, two variable sets, instant and (17 of them) range.
    assert checked == 2 * (43 + 17), checked


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
    # The cost series exists only with prices (this stack has none): its names are checked
    # against a priced exporter in test_account_variable_and_cost_panel_with_two_accounts.
    metric_names = {name for name, _ in served} | {"up"} | PRICED_METRICS
    label_names = (
        {label for _, labels in served for label, _ in labels} | TARGET_LABELS | PRICED_LABELS
    )
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
    known = {
        "sum",
        "max",
        "rate",
        "increase",
        "histogram_quantile",
        "time",
        "absent",
        "label_replace",
    }
    assert used.functions <= known, used.functions - known


def test_throttling_fires_the_real_rule(fresh: Stack) -> None:
    assert fresh.prom.alerts() == []
    fresh.sim.fault("throttle")
    alert = fresh.wait_alert("DashScopeFineTuneThrottled", "firing")
    assert alert["labels"] == {
        "alertname": "DashScopeFineTuneThrottled",
        "account": "default",
        "code": "Throttling",
        "endpoint": "list",
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


# --- training telemetry: each problem scenario raises its alert, for its job only -------


@pytest.mark.parametrize(
    ("scenario", "alert", "state", "job_id", "labels"),
    [
        # No `for:`: a diverged run does not recover.
        (
            "diverging",
            "DashScopeFineTuneLossNotFinite",
            "firing",
            "ft-diverging",
            {"loss": "train"},
        ),
        # Pending at once (the log stopped 40 min before the exporter started); 5 m to fire.
        ("stalled", "DashScopeFineTuneTrainingStalled", "pending", "ft-stalled", {}),
        # Pending at once; fires after its 15 m.
        ("overfitting", "DashScopeFineTuneEvalLossRising", "pending", "ft-overfitting", {}),
    ],
)
def test_training_problems_fire_the_real_rules(
    tmp_path: Path,
    scenario: str,
    alert: str,
    state: str,
    job_id: str,
    labels: dict[str, str],
) -> None:
    require_tool("prometheus")
    stack = start_stack(tmp_path, scenario=scenario)
    try:
        stack.wait_healthy()
        found = stack.wait_alert(alert, state, timeout=60)
        severity = {
            "DashScopeFineTuneLossNotFinite": "critical",
            "DashScopeFineTuneTrainingStalled": "warning",
            "DashScopeFineTuneEvalLossRising": "info",
        }[alert]
        assert {k: found["labels"][k] for k in ("job_id", "job_name", "status", "severity")} == {
            "job_id": job_id,
            "job_name": job_id,
            "status": "RUNNING",
            "severity": severity,
        }
        assert {k: found["labels"][k] for k in labels} == labels
        value = float(found["value"])
        if scenario == "diverging":
            assert value != value  # NaN
        elif scenario == "stalled":
            assert 40 * 60 - 60 <= value <= 40 * 60 + 600
        else:
            assert value > 1.1  # eval loss over its minimum
        # Over a few more evaluations, the healthy job beside it raises nothing.
        start = stack.prom.evaluations()
        wait_for(lambda: stack.prom.evaluations() >= start + 3, 20, 0.25, "three evaluations")
        training_alerts = {
            (a["labels"]["alertname"], a["labels"].get("job_id"))
            for a in stack.prom.alerts()
            if a["labels"]["alertname"]
            in (
                "DashScopeFineTuneLossNotFinite",
                "DashScopeFineTuneTrainingStalled",
                "DashScopeFineTuneEvalLossRising",
            )
        }
        assert training_alerts == {(alert, job_id)}
    finally:
        stop_stack(stack)


def test_a_throttled_log_endpoint_fires_throttled_for_logs_and_keeps_up(fresh: Stack) -> None:
    assert fresh.prom.alerts() == []
    fresh.sim.fault("throttle", endpoint="logs")
    alert = fresh.wait_alert("DashScopeFineTuneThrottled", "firing")
    assert alert["labels"]["endpoint"] == "logs"
    assert alert["labels"]["code"] == "Throttling"
    job = fresh.prom.job
    assert result_values(fresh.prom.query(f'dashscope_finetune_up{{job="{job}"}}')) == {
        one(account="default"): [1.0]
    }
    throttled = {
        a["labels"].get("endpoint")
        for a in fresh.prom.alerts()
        if a["labels"]["alertname"] == "DashScopeFineTuneThrottled"
    }
    assert throttled == {"logs"}


# --- two accounts in one exporter (--config.file), each on its own simulator -----------

SG, BJ = "sg-research", "bj-prod"
#: Served only when the config file has prices.
PRICED_METRICS = {"dashscope_finetune_estimated_cost"}
PRICED_LABELS = {"currency"}
#: Prices per 1,000 tokens: qwen2.5-7b-instruct has none and there is no default.
PRICES = {M14: 0.5, M8: 0.25}


@dataclass
class TwoAccounts(Stack):
    """``sim`` serves SG (every model); ``other`` serves BJ, filtered to one unpriced model."""

    other: Simulator


def start_two_accounts(tmp: Path, scenario: str) -> TwoAccounts:
    sims: list[Simulator] = []
    exporter: Exporter | None = None
    try:
        for name in (SG, BJ):
            sims.append(Simulator(tmp, key=f"sk-{name}-0123456789abcdef", scenario=scenario))
        config = {
            "defaults": {"poll_interval": "1s", "max_requests_per_second": 20},
            "accounts": [
                {"name": SG, "base_url": sims[0].url, "api_key_env": "KEY_SG"},
                {
                    "name": BJ,
                    "base_url": sims[1].url,
                    "api_key_env": "KEY_BJ",
                    "models": [M7],
                },
            ],
            "prices": {"currency": "CNY", "per_1k_tokens": PRICES},
        }
        path = tmp / "accounts.yml"
        path.write_text(yaml.safe_dump(config))
        exporter = Exporter(
            tmp,
            [f"--config.file={path}"],
            env={"KEY_SG": sims[0].key, "KEY_BJ": sims[1].key},
        )
        prom = Prometheus(tmp, exporter.port)
    except BaseException:
        if exporter is not None:
            exporter.stop()
        for sim in sims:
            sim.stop()
        raise
    stack = TwoAccounts(sims[0], exporter, prom, sims[1])
    try:
        job = prom.job
        wait_for(
            lambda: len(prom.query(f'dashscope_finetune_up{{job="{job}"}} == 1')) == 2,
            30,
            0.2,
            "both accounts up in Prometheus",
        )
        stack.wait_healthy()
    except BaseException:
        stop_two_accounts(stack)
        raise
    return stack


def stop_two_accounts(stack: TwoAccounts) -> None:
    stop_stack(stack)
    stack.other.stop()


@pytest.fixture
def two_accounts(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TwoAccounts]:
    """Both simulators on the scenario given by indirect parametrisation."""
    require_tool("prometheus")
    stack = start_two_accounts(tmp_path, request.param)
    yield stack
    stop_two_accounts(stack)


#: Exact figures; the static account raises alerts (jobs queued since 2024), so the alert
#: tests run on the demo scenario, which raises none while healthy (see the first test).
STATIC = pytest.mark.parametrize("two_accounts", ["static"], indirect=True)
DEMO = pytest.mark.parametrize("two_accounts", ["demo"], indirect=True)


def account_variable_values(prom: Prometheus) -> list[str]:
    """The dashboard's `account` variable as Grafana resolves it (label_values -> label API)."""
    [var] = [
        v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["name"] == "account"
    ]
    match = re.fullmatch(r"label_values\((.*), account\)", var["query"])
    assert match, var["query"]
    selector = expand(match.group(1), VARIABLES_ALL)
    values: list[str] = prom.api("label/account/values", **{"match[]": selector})
    return values


@STATIC
def test_account_variable_and_cost_panel_with_two_accounts(two_accounts: TwoAccounts) -> None:
    """Both names in the variable; the cost panel's exact figures, priced account only."""
    assert account_variable_values(two_accounts.prom) == [BJ, SG]
    served = samples(two_accounts.exporter.metrics())
    assert {name for name, _ in served} >= PRICED_METRICS
    assert {label for _, labels in served for label, _ in labels} >= PRICED_LABELS
    # Hand-computed: tokens per model of the static account (tests/fixtures.py) times the
    # price per 1,000 tokens. qwen2.5-7b-instruct (BJ's only model) has no price: no series.
    tokens = {M14: 279808 + 100000 + 50000 + 12345, M8: 2000 + 3000}
    assert tokens == {
        model: sum(n for (m, _, _), (_, n) in fx.NONZERO.items() if m == model) for model in PRICES
    }
    assert tokens == {M14: 442153, M8: 5000}
    [(where, target)] = [
        (w, t) for w, t in dashboard_targets() if w == "Estimated cost by model and account / A"
    ]
    for variables, expected in (
        (VARIABLES_ALL, {M14: 221.0765, M8: 1.25}),
        ({**VARIABLES_ALL, "account": SG}, {M14: 221.0765, M8: 1.25}),
        ({**VARIABLES_ALL, "account": SG, "model": M8}, {M8: 1.25}),
        ({**VARIABLES_ALL, "account": BJ}, {}),
    ):
        got = result_values(two_accounts.prom.query(expand(target["expr"], variables)))
        want = {one(account=SG, model=m, currency="CNY"): v for m, v in expected.items()}
        assert got.keys() == want.keys(), (where, variables, got)
        for labels, values in got.items():
            assert values == [pytest.approx(want[labels], rel=1e-12)], (labels, values)


def alerts_by_account(prom: Prometheus) -> set[tuple[str, str | None]]:
    return {(a["labels"]["alertname"], a["labels"].get("account")) for a in prom.alerts()}


@DEMO
def test_throttling_one_of_two_accounts_names_that_account_only(two_accounts: TwoAccounts) -> None:
    assert two_accounts.prom.alerts() == []
    two_accounts.other.fault("throttle")
    alert = two_accounts.wait_alert("DashScopeFineTuneThrottled", "firing")
    assert alert["labels"] == {
        "alertname": "DashScopeFineTuneThrottled",
        "account": BJ,
        "code": "Throttling",
        "endpoint": "list",
        "instance": f"127.0.0.1:{two_accounts.exporter.port}",
        "job": "ft-exporter",
        "severity": "warning",
    }
    # Over three more evaluations, SG raises nothing, not even pending.
    start = two_accounts.prom.evaluations()
    wait_for(lambda: two_accounts.prom.evaluations() >= start + 3, 20, 0.25, "three evaluations")
    assert {account for _, account in alerts_by_account(two_accounts.prom)} == {BJ}


@DEMO
def test_a_full_quota_on_one_of_two_accounts_names_that_account_only(
    two_accounts: TwoAccounts,
) -> None:
    assert two_accounts.prom.alerts() == []
    added = http_json(two_accounts.sim.url + "/_sim/jobs", "POST", {"fill_quota": 20})["added"]
    assert added > 0
    full = two_accounts.wait_alert("DashScopeFineTuneQuotaFull", "firing")
    assert full["labels"]["account"] == SG
    assert float(full["value"]) >= 20
    start = two_accounts.prom.evaluations()
    wait_for(lambda: two_accounts.prom.evaluations() >= start + 3, 20, 0.25, "three evaluations")
    # Nearly full goes pending beside it, for SG too; BJ raises nothing.
    assert alerts_by_account(two_accounts.prom) == {
        ("DashScopeFineTuneQuotaFull", SG),
        ("DashScopeFineTuneQuotaNearlyFull", SG),
    }
