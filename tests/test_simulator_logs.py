"""The simulator's job log endpoint and log-writing jobs, which the exporter's tailer is tested on.

Pure log generation is checked on a fake clock; the endpoint, the control API and the
scenarios against the real simulator process over HTTP.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import UTC8, Simulator, http_get, http_json, wait_for

from ft_exporter.simulator import (
    HEALTHY_JOB,
    PROBLEM_JOBS,
    SimJob,
    SimulatedAccount,
    eval_losses,
    training_log,
)
from ft_exporter.trainlog import RECOGNISED, LineKind, classify, planned_epochs

T0 = 1_730_000_000.0  # a whole second, so that stamps have round milliseconds
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - [A-Z]+ - ")


def fake_clock(start: float = T0) -> tuple[list[float], Any]:
    now = [start]
    return now, lambda: now[0]


def stamp_of(line: str) -> datetime | None:
    """The time of a timestamped line (account zone UTC+8), None for another line."""
    match = STAMP.match(line)
    if match is None:
        return None
    moment = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC8)
    return moment + timedelta(milliseconds=int(match[2]))


def records(lines: list[str]) -> list[dict[str, float]]:
    """The recognised values of every record line, in order."""
    out = []
    for line in lines:
        kind, record = classify(line)
        if kind is LineKind.RECORD:
            assert record is not None
            out.append(dict(record.values))
    return out


def column(lines: list[str], key: str) -> list[float]:
    return [r[key] for r in records(lines) if key in r]


def falling(values: list[float]) -> bool:
    """Strictly."""
    return all(a > b for a, b in pairwise(values))


def same_numbers(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal dicts of floats, NaN equal to NaN (repr round-trips a float exactly)."""
    return {k: repr(v) for k, v in a.items()} == {k: repr(v) for k, v in b.items()}


# --- the log of one job, on a fake clock ---------------------------------------------


def demo_job(**kw: Any) -> SimJob:
    """A demo-like job: created at T0, PENDING 20 s, QUEUING 40 s, RUNNING 180 s."""
    return SimJob("ft-unit-0001", "qwen3-8b", "sft", T0, usage=279808, **kw)


def test_every_record_line_parses_to_the_values_it_was_written_from() -> None:
    """Whatever a job writes, the exporter's parser reads back exactly: each scenario, each job."""
    seen = {"loss": 0, "eval_loss": 0, "train_loss": 0, "text": 0}
    for scenario in ("demo", *PROBLEM_JOBS):
        account = SimulatedAccount(scenario, clock=lambda: T0)
        for job in account.jobs:
            for line in training_log(job, account.tz):
                kind, record = classify(line.text)
                if line.record is None:
                    assert kind is LineKind.TEXT, line.text
                    seen["text"] += 1
                    continue
                assert kind is LineKind.RECORD and record is not None, line.text
                meant = {k: v for k, v in line.record.items() if k in RECOGNISED}
                assert same_numbers(dict(record.values), meant), line.text
                for key in ("loss", "eval_loss", "train_loss"):
                    seen[key] += key in meant
    assert min(seen.values()) > 0, seen


def test_a_job_writes_its_log_as_time_passes_and_never_changes_it() -> None:
    job = demo_job()
    at = [job.log_at(T0 + s, UTC8) for s in range(0, 400)]
    assert at[0] == at[59] == []  # PENDING, then QUEUING: nothing yet
    assert len(at[60]) == 1 and at[60][0].endswith(" - INFO - fine-tune job ft-unit-0001 started")
    for before, after in pairwise(at):
        assert after[: len(before)] == before  # only ever appended to
    running = [len(at[s]) for s in range(66, 240)]
    for s in range(len(running) - 4):
        assert running[s + 4] > running[s], f"no new line in 4 s at {s + 66}"
    assert at[240] == at[399] == job.log_at(T0 + 10**6, UTC8)  # ended: frozen
    final = at[240]
    assert 50 <= len(final) <= 200
    assert final[-5:] == [
        " Actual number of consumed tokens is 279808!",
        " use checkpoint-285 as final checkpoint",
        " Fine-tune succeeded!",
        "2024-10-27 11:37:20,000 - INFO - training usage 279808",  # T0 + 240 s in UTC+8
        "2024-10-27 11:37:20,045 - INFO - ##FT_COMPLETE##",
    ]
    assert "2024-10-27 11:37:18,400 - INFO - saving checkpoint-285" in final
    assert final.count(" Uploaded checkpoint!") == 3


def test_a_healthy_run_falls_and_decays_over_its_epochs() -> None:
    lines = demo_job().log_at(T0 + 240, UTC8)
    steps = [r for r in records(lines) if "loss" in r]
    assert len(steps) == 57
    number = r"[0-9]+\.[0-9]+(?:e-[0-9]+)?"
    trainer = re.compile(  # the Trainer's own shape: a dict repr, bare numbers
        rf"\{{'loss': {number}, 'grad_norm': {number}, 'learning_rate': {number}, "
        rf"'epoch': {number}\}}"
    )
    assert sum(1 for line in lines if trainer.fullmatch(line)) == 57
    epochs = [r["epoch"] for r in steps]
    assert epochs == sorted(epochs) and 0 < epochs[0] < 0.1 and epochs[-1] == 3.0
    rates = [r["learning_rate"] for r in steps]
    assert rates[0] == 1.6e-5  # the listed hyper_parameters' learning_rate
    gaps = [a - b for a, b in pairwise(rates)]
    assert all(gap == pytest.approx(1.6e-5 / 57, rel=1e-9) for gap in gaps)  # linear
    losses = [r["loss"] for r in steps]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5]) / 2
    evals = [r for r in records(lines) if "eval_loss" in r]
    assert [r["epoch"] for r in evals] == [1.0, 2.0, 3.0]
    falling = [r["eval_loss"] for r in evals]
    assert falling[0] > falling[1] > falling[2] > 0
    summary = records(lines)[-1]
    assert summary["epoch"] == 3.0 and summary["train_runtime"] == 178.2
    assert summary["train_loss"] == pytest.approx(sum(losses) / len(losses))


def test_the_log_follows_the_jobs_hyper_parameters_and_the_accounts_zone() -> None:
    hyper = {"n_epochs": "2", "learning_rate": 2e-4, "batch_size": 16}
    job = demo_job(extra={"hyper_parameters": hyper})
    lines = job.log_at(T0 + 240, UTC)
    steps = [r for r in records(lines) if "loss" in r]
    assert steps[0]["learning_rate"] == 2e-4 and steps[-1]["epoch"] == 2.0
    assert [r["epoch"] for r in records(lines) if "eval_loss" in r] == [1.0, 2.0]
    assert lines[0].startswith("2024-10-27 03:34:20,000 - INFO - ")  # T0 + 60 s in UTC
    assert lines[-1] == "2024-10-27 03:37:20,045 - INFO - ##FT_COMPLETE##"


def test_a_failed_run_ends_with_error_lines_and_no_summary() -> None:
    lines = demo_job(outcome="FAILED").log_at(T0 + 240, UTC8)
    assert lines[-2:] == [
        " RuntimeError: CUDA error: an illegal memory access was encountered",
        "2024-10-27 11:37:20,000 - ERROR - Fine-tune failed!",
    ]
    assert not any("train_loss" in r for r in records(lines))
    assert not any("FT_COMPLETE" in line for line in lines)


def test_eval_losses_fall_or_rise_past_ten_percent_when_overfitting() -> None:
    for seed in range(50):
        for n in (1, 3, 10, 60):
            healthy = eval_losses(n, None, random.Random(seed))
            assert falling(healthy), healthy
        over = eval_losses(12, 3, random.Random(seed))
        assert min(over) == over[2] and over[0] > over[1] > over[2]
        assert falling([-v for v in over[2:]]), over
        assert all(v > 1.1 * over[2] for v in over[4:]), over


def test_appended_lines_come_after_what_was_written_and_stay_there() -> None:
    now, clock = fake_clock()
    account = SimulatedAccount("empty", clock=clock)
    account.jobs.append(demo_job())
    account.add_jobs([{"job_id": "ft-fixed", "status": "RUNNING"}])
    assert account.log("ft-fixed") == []
    assert account.append_log("ft-fixed", ["a", "b"]) == 2
    assert account.log("ft-fixed") == ["a", "b"]
    now[0] = T0 + 100
    before = account.log("ft-unit-0001")
    assert before is not None
    assert account.append_log("ft-unit-0001", ["scripted"]) == len(before) + 1
    now[0] = T0 + 300
    after = account.log("ft-unit-0001")
    assert after is not None and after[: len(before) + 1] == [*before, "scripted"]
    assert len(after) > len(before) + 1
    assert account.log("ft-nope") is None and account.append_log("ft-nope", ["x"]) is None


@pytest.mark.parametrize("scenario", sorted(PROBLEM_JOBS))
def test_each_problem_scenario_at_start_and_hours_later(scenario: str) -> None:
    now, clock = fake_clock()
    account = SimulatedAccount(scenario, clock=clock)
    job_id = PROBLEM_JOBS[scenario]
    listed = {job["job_id"]: job for job in account.listing(T0, None)}
    assert [listed[j]["status"] for j in (job_id, HEALTHY_JOB)] == ["RUNNING", "RUNNING"]
    assert planned_epochs(listed[job_id]["hyper_parameters"]) is not None
    assert sorted(job["status"] for job in listed.values()) == [
        "FAILED",
        "RUNNING",
        "RUNNING",
        "SUCCEEDED",
    ]
    first = account.log(job_id)
    healthy = account.log(HEALTHY_JOB)
    assert first is not None and healthy is not None and 0 < len(first) < 1000
    for hours in (0.0, 0.5, 2.0):
        now[0] = T0 + hours * 3600
        assert {j["job_id"]: j["status"] for j in account.listing(now[0], None)}[job_id] == (
            "RUNNING"
        )
        lines = account.log(job_id)
        assert lines is not None and lines[: len(first)] == first
        show_problem(scenario, lines, now[0])
    grown = account.log(HEALTHY_JOB)
    assert grown is not None and len(grown) > len(healthy)


def show_problem(scenario: str, lines: list[str], now: float) -> None:
    """The problem the scenario is for, as the exporter's parser sees it."""
    if scenario == "diverging":
        losses = column(lines, "loss")
        assert math.isnan(losses[-1])
        first_bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
        assert losses[first_bad] == math.inf and all(math.isnan(v) for v in losses[first_bad + 1 :])
        assert all(0 < v < 5 for v in losses[:first_bad])
    elif scenario == "stalled":
        stamps = [s for s in map(stamp_of, lines) if s is not None]
        assert stamps[-1] == stamp_of(lines[-1]) == datetime.fromtimestamp(T0 - 2400, UTC8)
        assert len(stamps) >= 2
    else:
        evals = column(lines, "eval_loss")
        assert len(evals) >= 5 and evals[-1] > 1.1 * min(evals), evals
        assert evals[0] > evals[1] > evals[2] == min(evals)


# --- the endpoint, against the real simulator process --------------------------------


def get_logs(
    sim: Simulator, job_id: str, key: str | None = None, query: str | None = None, **params: Any
) -> tuple[int, dict[str, Any]]:
    """GET a job's log: (HTTP status, JSON body)."""
    url = f"{sim.url}/api/v1/fine-tunes/{quote(job_id, safe='')}/logs"
    query = urlencode(params) if query is None else query
    headers = {} if key == "" else {"Authorization": f"Bearer {key or sim.key}"}
    status, body = http_get(url + ("?" + query if query else ""), headers=headers)
    return status, json.loads(body)


def get_list(sim: Simulator) -> tuple[int, dict[str, Any]]:
    status, body = http_get(
        f"{sim.url}/api/v1/fine-tunes?page_size=100", headers={"Authorization": f"Bearer {sim.key}"}
    )
    return status, json.loads(body)


def read_all(sim: Simulator, job_id: str) -> list[str]:
    """A whole log, page by page as a reader would."""
    lines: list[str] = []
    while True:
        status, body = get_logs(sim, job_id, offset=len(lines), line=1000)
        assert status == 200, body
        lines += body["output"]["logs"]
        if not body["output"]["logs"] or len(lines) >= body["output"]["total"]:
            return lines


def post(sim: Simulator, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        sim.url + path, data=json.dumps(payload).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def test_offset_and_line_select_exact_lines(simulator: Simulator) -> None:
    job_id = "ft-log/1 ü?&"  # slash, space, non-ASCII, query characters: one path segment
    http_json(simulator.url + "/_sim/jobs", "POST", {"jobs": [{"job_id": job_id}]})
    status, body = get_logs(simulator, job_id)
    assert status == 200 and body["output"] == {"total": 0, "logs": []}
    assert body["request_id"].startswith("sim-")
    scripted = [f"line {i}" for i in range(250)]
    assert post(simulator, "/_sim/logs", {"job_id": job_id, "lines": scripted}) == (
        200,
        {"total": 250},
    )

    def served(**params: Any) -> dict[str, Any]:
        status, body = get_logs(simulator, job_id, **params)
        assert status == 200, body
        output: dict[str, Any] = body["output"]
        return output

    assert served() == {"total": 250, "logs": scripted[:100]}  # offset 0, line 100
    assert served(offset=240) == {"total": 250, "logs": scripted[240:]}
    assert served(offset=100, line=50) == {"total": 250, "logs": scripted[100:150]}
    assert served(offset=249, line=1) == {"total": 250, "logs": ["line 249"]}
    assert served(line=1000) == {"total": 250, "logs": scripted}
    assert served(offset=250) == {"total": 250, "logs": []}  # past the end
    assert served(offset=10**30, line=1000) == {"total": 250, "logs": []}
    assert served(offset="0007", line="3")["logs"] == scripted[7:10]
    post(simulator, "/_sim/logs", {"job_id": job_id, "lines": ["late 1", "late 2"]})
    assert served(offset=250) == {"total": 252, "logs": ["late 1", "late 2"]}


@pytest.mark.parametrize(
    "query",
    [
        "line=1001",
        "line=0",
        "line=-1",
        "line=abc",
        "line=1.5",
        "line=",
        "offset=-1",
        "offset=x",
        "offset=1e3",
        "offset=%D9%A1",  # an Arabic-Indic digit one, which int() would take
        "offset=0&line=99999999999999999999999",
    ],
)
def test_bad_offset_or_line_is_400_invalid_parameter(simulator: Simulator, query: str) -> None:
    status, body = get_logs(simulator, "ft-s01", query=query)
    assert status == 400
    assert body["code"] == "InvalidParameter" and body["request_id"].startswith("sim-")
    assert ("line" if query.startswith("line") or "&" in query else "offset") in body["message"]


def test_unknown_job_is_404_not_found_and_the_key_is_checked_first(
    simulator: Simulator,
) -> None:
    status, body = get_logs(simulator, "ft-nope")
    assert status == 404 and body["code"] == "NotFound" and body["request_id"].startswith("sim-")
    for key in ("", "sk-wrong"):
        for job_id in ("ft-s01", "ft-nope"):
            status, body = get_logs(simulator, job_id, key=key)
            assert (status, body["code"]) == (401, "InvalidApiKey"), (key, job_id)
    assert post(simulator, "/_sim/logs", {"job_id": "ft-nope", "lines": ["x"]})[0] == 404
    assert post(simulator, "/_sim/logs", {"job_id": "ft-s01", "lines": "x"})[0] == 400
    assert post(simulator, "/_sim/logs", ["ft-s01"])[0] == 400
    assert get_logs(simulator, "ft-s01")[1]["output"] == {"total": 0, "logs": []}


def test_a_fault_hits_only_the_endpoint_it_names(simulator: Simulator) -> None:
    def codes() -> tuple[int, int]:
        return get_list(simulator)[0], get_logs(simulator, "ft-s01")[0]

    simulator.fault("throttle")  # no endpoint: the list, as every older test means
    assert codes() == codes() == (429, 200)
    assert (simulator.stats()["fault"], simulator.stats()["fault_endpoint"]) == ("throttle", "list")
    simulator.fault("throttle", endpoint="logs", retry_after="3")
    assert codes() == codes() == (200, 429)
    status, body = get_logs(simulator, "ft-s01")
    assert (status, body["code"]) == (429, "Throttling")
    simulator.fault("error500", endpoint="logs", count=1)
    status, body = get_logs(simulator, "ft-s01")
    assert (status, body["code"]) == (500, "InternalError")
    assert codes() == (200, 200)  # count spent
    simulator.fault("throttle", endpoint="all", count=3)
    assert codes() == (429, 429)
    assert codes() == (429, 200)  # the third request spent it
    assert post(simulator, "/_sim/fault", {"mode": "throttle", "endpoint": "bogus"}) == (
        400,
        {"error": "unknown endpoint 'bogus'", "endpoints": ["list", "logs", "all"]},
    )
    assert simulator.stats()["fault"] == "none"
    simulator.fault("total_high", endpoint="logs", count=1)
    assert get_logs(simulator, "ft-s01")[1]["output"] == {"total": 50, "logs": []}
    simulator.fault("jobs_null", endpoint="logs", count=1)
    assert get_logs(simulator, "ft-s01")[1]["output"] == {"total": 0, "logs": None}
    simulator.fault("bad_key", endpoint="logs")
    assert get_logs(simulator, "ft-nope")[1]["code"] == "InvalidApiKey"
    assert get_list(simulator)[0] == 200
    simulator.clear_fault()
    assert codes() == (200, 200)


def test_stats_count_each_endpoint_exactly(simulator: Simulator) -> None:
    assert simulator.stats()["log_requests"] == 0
    for _ in range(3):
        get_list(simulator)
    get_logs(simulator, "ft-s01")
    get_logs(simulator, "ft-s01", line=0)  # refused, still a request to the endpoint
    get_logs(simulator, "ft-s01", key="sk-wrong")
    get_logs(simulator, "ft-nope")
    get_logs(simulator, "a/b")
    http_get(simulator.url + "/api/v1/other", headers={"Authorization": f"Bearer {simulator.key}"})
    post(simulator, "/_sim/logs", {"job_id": "ft-s01", "lines": ["x"]})  # control: not counted
    stats = simulator.stats()
    assert stats["requests"] == 3 + 5 + 1
    assert stats["list_requests"] == 3 and len(stats["request_log"]) == 3
    assert stats["log_requests"] == 5
    assert stats["log_requests_by_job"] == {"ft-s01": 3, "ft-nope": 1, "a/b": 1}


@pytest.mark.e2e
def test_demo_running_jobs_write_healthy_growing_logs(tmp_path: Path) -> None:
    sim = Simulator(tmp_path, scenario="demo")
    try:
        jobs = get_list(sim)[1]["output"]["jobs"]
        running = [job["job_id"] for job in jobs if job["status"] == "RUNNING"]
        assert running
        first = {job_id: read_all(sim, job_id) for job_id in running}
        assert all(first.values())  # running for a while already: lines to show
        job_id = running[0]
        wait_for(lambda: get_logs(sim, job_id)[1]["output"]["total"] > len(first[job_id]))
        later = read_all(sim, job_id)
        assert later[: len(first[job_id])] == first[job_id]
        for lines in (*first.values(), later):
            assert all(classify(line)[0] is not LineKind.TOO_LONG for line in lines)
            for line in lines:  # every line that looks like a record is one
                assert (classify(line)[0] is LineKind.RECORD) == line.startswith("{"), line
            values = [v for r in records(lines) for v in r.values()]
            assert values and all(math.isfinite(v) for v in values)
            evals = column(lines, "eval_loss")
            assert falling(evals), evals
            epochs = column(lines, "epoch")
            assert all(0 < e <= 3 for e in epochs)
    finally:
        sim.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", sorted(PROBLEM_JOBS))
def test_problem_scenario_shows_its_problem_to_the_parser(tmp_path: Path, scenario: str) -> None:
    sim = Simulator(tmp_path, scenario=scenario)
    started = time.time()
    try:
        jobs = {job["job_id"]: job for job in get_list(sim)[1]["output"]["jobs"]}
        problem = PROBLEM_JOBS[scenario]
        assert jobs[problem]["status"] == jobs[HEALTHY_JOB]["status"] == "RUNNING"
        assert planned_epochs(jobs[problem]["hyper_parameters"]) is not None
        lines = read_all(sim, problem)
        healthy = get_logs(sim, HEALTHY_JOB)[1]["output"]["total"]
        # The healthy job writes a line every 3 s: once it has, time has passed for both.
        wait_for(lambda: get_logs(sim, HEALTHY_JOB)[1]["output"]["total"] > healthy)
        again = read_all(sim, problem)
        assert again[: len(lines)] == lines
        if scenario == "diverging":
            losses = column(again, "loss")
            assert math.isnan(losses[-1]) and math.inf in losses
        elif scenario == "stalled":
            assert again == lines  # not one line more
            newest = [s for s in map(stamp_of, lines) if s is not None][-1]
            age = started - newest.timestamp()
            assert 40 * 60 - 5 <= age <= 40 * 60 + 60, age
        else:
            evals = column(again, "eval_loss")
            assert evals[-1] > 1.1 * min(evals), evals
    finally:
        sim.stop()
