"""Training metrics end to end: the real exporter reading scripted logs from the real simulator.

The simulator's ``POST /_sim/jobs`` and ``POST /_sim/logs`` script a job and its log
exactly, so every training series has one right value; the simulator's own request
counts check the exporter's counters by endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import UTC8, Exporter, Simulator, http_json, samples, value, wait_for

pytestmark = pytest.mark.e2e

JOB = "ft-202611260400-e2e1"
#: Rounded to whole seconds: create_time has no fraction.
NOW = float(int(datetime.now(UTC8).timestamp()))
CREATED = NOW - 3600.0


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC8).strftime("%Y-%m-%d %H:%M:%S")


def running_job(job_id: str = JOB, created: float = CREATED, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_name": f"name-{job_id}",
        "status": "RUNNING",
        "model": "qwen3-8b",
        "base_model": "qwen3-8b",
        "training_type": "sft",
        "create_time": stamp(created),
        "hyper_parameters": {"n_epochs": "4", "batch_size": 16},
        **extra,
    }


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path, scenario="empty")
    yield simulator
    simulator.stop()


def add_jobs(sim: Simulator, *jobs: dict[str, Any]) -> None:
    http_json(sim.url + "/_sim/jobs", "POST", {"jobs": list(jobs)})


def add_lines(sim: Simulator, job_id: str, lines: list[str]) -> None:
    http_json(sim.url + "/_sim/logs", "POST", {"job_id": job_id, "lines": lines})


def start(
    factory: Callable[..., Exporter], sim: Simulator, *args: str, interval: str = "0.3s"
) -> Exporter:
    return factory(
        [f"--dashscope.base-url={sim.url}", f"--poll.interval={interval}", *args],
        env={"DASHSCOPE_API_KEY": sim.key},
    )


def training(exp: Exporter, job_id: str = JOB) -> dict[str, float]:
    return {
        name.removeprefix("dashscope_finetune_"): v
        for (name, labels), v in samples(exp.metrics()).items()
        if dict(labels).get("job_id") == job_id
        and name.startswith("dashscope_finetune_job_")
        and name not in INFO_FAMILIES
    }


INFO_FAMILIES = {
    "dashscope_finetune_job_info",
    "dashscope_finetune_job_created_timestamp_seconds",
    "dashscope_finetune_job_ended_timestamp_seconds",
    "dashscope_finetune_job_usage_tokens",
}


def test_every_training_series_of_a_scripted_job_has_its_exact_value(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    add_jobs(sim, running_job())
    checkpoint = CREATED + 1800.25
    add_lines(
        sim,
        JOB,
        [
            " Start training!",
            "{'loss': 2.5, 'grad_norm': 8.1, 'learning_rate': 2e-05, 'epoch': 0.5}",
            "{'eval_loss': 1.25, 'eval_runtime': 3.2, 'epoch': 1.0}",
            f"{stamp(checkpoint - 0.25)},250 - INFO - saving checkpoint-1",
            "{'loss': 1.5, 'grad_norm': 4.0, 'learning_rate': 1.5e-05, 'epoch': 1.5}",
            "{'eval_loss': 1.375, 'eval_runtime': 3.1, 'epoch': 2.0}",
            " Uploaded checkpoint!",
        ],
    )
    exp = start(exporter_factory, sim)
    wait_for(lambda: "log_lines" in str(training(exp)), what="training series")
    got = training(exp)
    end = got.pop("job_estimated_end_timestamp_seconds")
    assert got == {
        "job_train_loss": 1.5,
        "job_eval_loss": 1.375,
        "job_eval_loss_min": 1.25,
        "job_learning_rate": 1.5e-05,
        "job_epoch": 2.0,
        "job_epochs": 4.0,
        "job_progress_ratio": 0.5,
        "job_log_lines": 7.0,
        # First sight: the newest timestamped line dates the last growth.
        "job_log_last_growth_timestamp_seconds": checkpoint,
        "job_log_unparsed_lines": 3.0,
    }
    # Half done an hour after creation (it was running when first seen): one more hour.
    assert CREATED + 7200 <= end <= CREATED + 2 * (datetime.now(UTC8).timestamp() - CREATED)

    before = datetime.now(UTC8).timestamp()
    add_lines(sim, JOB, ["{'loss': nan, 'learning_rate': 1e-05, 'epoch': 2.5}"])
    wait_for(lambda: training(exp)["job_log_lines"] == 8.0, what="the new line read")
    got = training(exp)
    assert math.isnan(got["job_train_loss"])
    assert got["job_epoch"] == 2.5 and got["job_progress_ratio"] == 0.625
    assert before - 1 <= got["job_log_last_growth_timestamp_seconds"] <= before + 30


def test_request_counters_by_endpoint_equal_the_simulators_counts_and_the_budget(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    """20 running jobs: each sweep is one list page and exactly 20 log requests."""
    jobs = [running_job(f"ft-budget-{n:02d}", CREATED + n) for n in range(20)]
    add_jobs(sim, *jobs)
    for job in jobs:
        add_lines(sim, job["job_id"], ["{'loss': 1.0, 'epoch': 0.1}"])
    # 21 requests a sweep take 10 s at the default 2 a second: faster, so sweeps leave
    # quiet gaps in which both sides' counters can be read.
    exp = start(exporter_factory, sim, "--dashscope.max-requests-per-second=50", interval="2s")

    def sweeps() -> float:
        return value(exp.metrics(), "dashscope_finetune_sweeps_total", account="default") or 0

    def counts(stats: dict[str, Any]) -> tuple[int, int, int]:
        # Not "connections": each of these reads is a connection of its own.
        return stats["requests"], stats["list_requests"], stats["log_requests"]

    def wait_for_sweep() -> None:
        count = sweeps()
        wait_for(lambda: sweeps() > count, what="a sweep")

    def settled() -> tuple[float, dict[str, Any], str]:
        """Counters read between two sweeps: the same before and after the scrape."""
        while True:
            wait_for_sweep()
            first = sim.stats()
            text = exp.metrics()
            if counts(sim.stats()) == counts(first):
                return sweeps(), first, text

    count, stats, text = settled()
    requests = {
        endpoint: value(
            text, "dashscope_finetune_api_requests_total", account="default", endpoint=endpoint
        )
        for endpoint in ("list", "logs")
    }
    assert requests == {"list": stats["list_requests"], "logs": stats["log_requests"]}
    assert stats["requests"] == stats["list_requests"] + stats["log_requests"]
    # Steady state, measured over the following sweeps: list pages + one per job.
    later_count, later, _ = settled()
    swept = later_count - count
    assert later["list_requests"] - stats["list_requests"] == swept
    assert later["log_requests"] - stats["log_requests"] == 20 * swept
    assert set(later["log_requests_by_job"]) == {job["job_id"] for job in jobs}


def test_a_throttled_log_endpoint_leaves_the_list_and_up_alone(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    add_jobs(sim, running_job())
    add_lines(sim, JOB, ["{'loss': 0.75, 'epoch': 1.0}"])
    exp = start(exporter_factory, sim, "--dashscope.max-attempts=1")
    wait_for(lambda: training(exp).get("job_train_loss") == 0.75, what="the log read")
    sim.fault("throttle", endpoint="logs")

    def throttled() -> float:
        return (
            value(
                exp.metrics(),
                "dashscope_finetune_api_errors_total",
                account="default",
                endpoint="logs",
                code="Throttling",
                http_status="429",
            )
            or 0
        )

    wait_for(lambda: throttled() >= 3, what="three throttled log requests")
    text = exp.metrics()
    assert value(text, "dashscope_finetune_up", account="default") == 1
    assert value(text, "dashscope_finetune_sweep_failures_total", account="default") == 0
    assert (
        value(
            text,
            "dashscope_finetune_api_errors_total",
            account="default",
            endpoint="list",
            code="Throttling",
            http_status="429",
        )
        == 0
    )
    assert training(exp)["job_train_loss"] == 0.75  # the last values stay
    sim.clear_fault()
    add_lines(sim, JOB, ["{'loss': 0.5, 'epoch': 1.5}"])
    wait_for(lambda: training(exp).get("job_train_loss") == 0.5, what="reading again")


def test_hostile_log_lines_never_break_the_scrape(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    add_jobs(sim, running_job())
    hostile = [
        "\x1b[31m{'loss': 9}\x1b[0m",
        "{'loss': 1e999, 'epoch': 1.0}",
        "{'loss': __import__('os').system('touch /tmp/pwned')}",
        "{'eval_loss': '\\u0663', 'epoch': 1}",  # an Arabic-Indic digit is no number here
        "x" * (64 * 1024 + 10),
        "{'eval_loss': 0.5, 'epoch': 1.25}\u2028{'loss': 0}",
        "\udc80 lone surrogate",
        "{" * 10_000,
    ]
    add_lines(sim, JOB, hostile)
    exp = start(exporter_factory, sim)
    wait_for(lambda: training(exp).get("job_log_lines") == len(hostile), what="lines read")
    got = training(exp)
    assert got["job_train_loss"] == math.inf
    assert got["job_epoch"] == 1.0
    assert got["job_log_unparsed_lines"] == len(hostile) - 1
    assert "job_eval_loss" not in got
    assert exp.get("/metrics", {"Accept": "application/openmetrics-text"})[0] == 200
    assert not Path("/tmp/pwned").exists()


def test_logs_off_makes_no_log_request_and_no_training_series(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    add_jobs(sim, running_job())
    add_lines(sim, JOB, ["{'loss': 1.0, 'epoch': 1.0}"])
    exp = start(exporter_factory, sim, "--logs.max-jobs=0")
    wait_for(lambda: sim.stats()["list_requests"] >= 3, what="three sweeps")
    assert training(exp) == {}
    assert sim.stats()["log_requests"] == 0
    assert (
        value(
            exp.metrics(),
            "dashscope_finetune_api_requests_total",
            account="default",
            endpoint="logs",
        )
        == 0
    )
