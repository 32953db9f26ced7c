"""The log tailer against ``responses``: offsets, first sight, jobs ending, failures kept apart.

Each test drives whole sweeps (the list, then the logs, inside one sweep window) through a
fake API that records every log request, so request counts are exact.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import responses
from conftest import UTC8, Recorder

from ft_exporter.client import ApiError, FineTuneClient, LogPage
from ft_exporter.model import Snapshot, Training
from ft_exporter.poller import Poller
from ft_exporter.retry import RetryPolicy, TokenBucket
from ft_exporter.secret import Secret
from ft_exporter.tailer import KEEP_FINISHED, LogTailer

BASE = "https://dashscope-intl.aliyuncs.com"
LIST_URL = BASE + "/api/v1/fine-tunes"
LOG_URL = re.compile(re.escape(LIST_URL) + r"/(?P<job>[^/?]+)/logs(\?.*)?$")
KEY = "sk-tailer-test-key-abcdef"
#: 2024-10-29 16:53:53 in UTC+8, the create_time of every job here.
CREATED = 1730192033.0


def record(loss: float, epoch: float, lr: float = 1e-4) -> str:
    return f"{{'loss': {loss}, 'learning_rate': {lr}, 'epoch': {epoch}}}"


class FakeAPI:
    """The list and log endpoints over ``responses``, with a log request journal."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}
        self.log_requests: list[tuple[str, int, int]] = []
        #: job_id -> (HTTP status, error code) answered instead of its log.
        self.log_errors: dict[str, tuple[int, str]] = {}
        self.list_requests = 0
        responses.add_callback(responses.GET, LIST_URL, callback=self._list)
        responses.add_callback(responses.GET, LOG_URL, callback=self._log)

    def job(self, job_id: str, status: str = "RUNNING", n_epochs: object = 3) -> None:
        self.jobs[job_id] = {
            "job_id": job_id,
            "status": status,
            "model": "qwen3-8b",
            "training_type": "sft",
            "create_time": "2024-10-29 16:53:53",
            "hyper_parameters": {"n_epochs": n_epochs},
        }
        self.logs.setdefault(job_id, [])

    def _list(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.list_requests += 1
        jobs = list(self.jobs.values())
        body = {"request_id": "rid", "output": {"total": len(jobs), "jobs": jobs}}
        return 200, {}, json.dumps(body)

    def _log(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        match = LOG_URL.match(f"{LIST_URL}{parts.path[len('/api/v1/fine-tunes') :]}")
        assert match is not None
        job_id = unquote(match["job"])
        query = parse_qs(parts.query)
        offset, line = int(query["offset"][0]), int(query["line"][0])
        self.log_requests.append((job_id, offset, line))
        if job_id in self.log_errors:
            status, code = self.log_errors[job_id]
            return status, {}, json.dumps({"code": code, "message": code, "request_id": "r"})
        if job_id not in self.logs:
            return 404, {}, json.dumps({"code": "NotFound", "message": "no such job"})
        lines = self.logs[job_id]
        body = {"request_id": "rid", "output": {"total": len(lines), "logs": lines[offset:][:line]}}
        return 200, {}, json.dumps(body)

    def requests_for(self, job_id: str) -> list[tuple[int, int]]:
        return [(offset, line) for j, offset, line in self.log_requests if j == job_id]


class Clock:
    def __init__(self, now: float = CREATED + 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """A client, a tailer and the sweep the CLI wires from them, on a fake clock."""

    def __init__(self, max_jobs: int = 20, max_lines: int = 1000, attempts: int = 1) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.client = FineTuneClient(
            BASE,
            Secret(KEY),
            page_size=100,
            timeout=2.0,
            tz=UTC8,
            observer=self.recorder,
            retry=RetryPolicy(max_attempts=attempts, base_delay=0.001, max_delay=0.001),
            clock=self.clock,
        )
        self.tailer = LogTailer(
            self.client, tz=UTC8, max_jobs=max_jobs, max_lines=max_lines, clock=self.clock
        )

    def sweep(self) -> Snapshot:
        with self.client.sweep_window():
            return self.tailer.follow(self.client.sweep())

    def training(self, job_id: str) -> Training:
        return self.sweep().training[job_id]


@responses.activate
def test_three_sweeps_read_every_line_exactly_once() -> None:
    api = FakeAPI()
    api.job("ft-a")
    api.logs["ft-a"] += [" Start training!", record(2.0, 0.1), record(1.8, 0.2)]
    rig = Rig()
    first = rig.training("ft-a")
    assert (first.train_loss, first.epoch, first.log_lines, first.unparsed_lines) == (
        1.8,
        0.2,
        3,
        1,
    )
    api.logs["ft-a"] += [record(1.5, 0.5), "{'eval_loss': 1.4, 'epoch': 1.0}", " Uploaded!"]
    second = rig.training("ft-a")
    assert (second.train_loss, second.eval_loss, second.eval_loss_min, second.epoch) == (
        1.5,
        1.4,
        1.4,
        1.0,
    )
    assert (second.log_lines, second.unparsed_lines) == (6, 2)
    third = rig.training("ft-a")  # nothing new: the same request at the end costs one call
    assert third == second
    # One request per sweep, each starting where the last one ended.
    assert api.requests_for("ft-a") == [(0, 1000), (3, 1000), (6, 1000)]
    assert api.list_requests == 3
    assert rig.recorder.endpoints == ["list", "logs"] * 3


@responses.activate
def test_a_restart_mid_job_reads_only_the_tail_of_a_long_log() -> None:
    api = FakeAPI()
    api.job("ft-long")
    # An eval only in the head, which a tail read never sees; a record every line after.
    api.logs["ft-long"] += ["{'eval_loss': 0.1, 'epoch': 0.01}"]
    api.logs["ft-long"] += [record(3.0 - i / 1000, i / 1000) for i in range(1, 2500)]
    rig = Rig()
    training = rig.training("ft-long")
    # One request to learn the total, one for the last 1000 lines: lines 1500..2499.
    assert api.requests_for("ft-long") == [(0, 1000), (1500, 1000)]
    assert training.log_lines == 2500
    assert training.train_loss == 3.0 - 2499 / 1000
    assert training.epoch == 2499 / 1000
    assert training.eval_loss is None and training.eval_loss_min is None
    assert training.unparsed_lines == 0
    api.logs["ft-long"] += [record(0.4, 2.6)] * 10
    assert rig.training("ft-long").train_loss == 0.4
    assert api.requests_for("ft-long")[2:] == [(2500, 1000)]


@responses.activate
def test_a_log_further_behind_than_the_budget_jumps_to_its_newest_lines() -> None:
    api = FakeAPI()
    api.job("ft-fast")
    api.logs["ft-fast"] += [record(2.0, 0.1)]
    rig = Rig(max_lines=300)
    rig.sweep()
    api.logs["ft-fast"] += [" chatter"] * 999 + [record(1.0, 2.0)]
    training = rig.training("ft-fast")
    # 1000 new lines, 300 may be read: the request at the offset shows the total, then
    # the newest 300 are read. Lines 1..700 are never read.
    assert api.requests_for("ft-fast") == [(0, 300), (1, 300), (701, 300)]
    assert (training.train_loss, training.log_lines, training.unparsed_lines) == (1.0, 1001, 299)


@responses.activate
def test_a_larger_budget_reads_in_requests_of_at_most_1000_lines() -> None:
    api = FakeAPI()
    api.job("ft-big")
    api.logs["ft-big"] += [record(1.0, 0.5)] * 2500
    rig = Rig(max_lines=5000)
    assert rig.training("ft-big").log_lines == 2500
    assert api.requests_for("ft-big") == [(0, 1000), (1000, 1000), (2000, 1000)]


@responses.activate
def test_an_ended_job_is_read_once_more_then_never_again() -> None:
    api = FakeAPI()
    api.job("ft-end")
    api.logs["ft-end"] += [record(1.2, 2.5), "{'eval_loss': 0.9, 'epoch': 2.0}"]
    rig = Rig()
    assert rig.training("ft-end").train_loss == 1.2
    api.jobs["ft-end"]["status"] = "SUCCEEDED"
    api.logs["ft-end"] += [
        "{'train_runtime': 216.4, 'train_loss': 0.91, 'epoch': 3.0}",
        " Fine-tune succeeded!",
        "2024-10-29 17:11:25,175 - INFO - ##FT_COMPLETE##",
    ]
    final = rig.training("ft-end")
    assert (final.train_loss, final.epoch, final.log_lines, final.unparsed_lines) == (
        0.91,
        3.0,
        5,
        2,
    )
    for _ in range(3):
        assert rig.training("ft-end") == final  # kept while listed, never asked for again
    assert api.requests_for("ft-end") == [(0, 1000), (2, 1000)]
    del api.jobs["ft-end"]
    assert rig.sweep().training == {}
    assert len(api.log_requests) == 2


@responses.activate
def test_a_job_already_ended_at_first_sight_is_not_read() -> None:
    api = FakeAPI()
    api.job("ft-old", "SUCCEEDED")
    api.job("ft-wait", "QUEUING")
    api.logs["ft-old"] += [record(1.0, 3.0)]
    rig = Rig()
    assert rig.sweep().training == {}
    assert api.log_requests == []


@responses.activate
def test_a_deleted_jobs_404_is_counted_and_its_values_kept_until_it_leaves() -> None:
    api = FakeAPI()
    api.job("ft-gone")
    api.logs["ft-gone"] += [record(1.5, 1.0)]
    rig = Rig()
    before = rig.training("ft-gone")
    del api.logs["ft-gone"]  # the log is gone (404), the list still shows the job
    snapshot = rig.sweep()
    assert snapshot.training["ft-gone"] == before
    assert rig.recorder.seen[-1] == "NotFound/404"
    assert rig.recorder.endpoints[-1] == "logs"
    assert rig.sweep().training["ft-gone"] == before  # asked again: once per sweep
    assert api.requests_for("ft-gone") == [(0, 1000), (1, 1000), (1, 1000)]
    del api.jobs["ft-gone"]
    assert rig.sweep().training == {}
    assert len(api.log_requests) == 3


@responses.activate
def test_throttled_logs_leave_the_list_and_up_alone() -> None:
    api = FakeAPI()
    for job_id in ("ft-1", "ft-2", "ft-3"):
        api.job(job_id)
        api.logs[job_id] += [record(1.0, 1.0)]
    rig = Rig(attempts=2)
    poller = Poller(rig.sweep, 60.0, clock=rig.clock)
    assert poller.run_once()
    api.log_errors = {job_id: (429, "Throttling") for job_id in api.jobs}
    assert poller.run_once() is True
    state = poller.state()
    assert state.up
    assert state.snapshot is not None
    assert {j.job_id for j in state.snapshot.jobs} == {"ft-1", "ft-2", "ft-3"}
    assert all(t.train_loss == 1.0 for t in state.snapshot.training.values())
    # The first throttled job was retried once (2 attempts), then the others were left
    # for the next sweep rather than throttled one by one.
    assert len(api.log_requests) == 3 + 2
    assert rig.recorder.seen[-2:] == ["Throttling/429", "Throttling/429"]
    api.log_errors = {}
    assert poller.run_once()
    assert len(api.log_requests) == 3 + 2 + 3


@responses.activate
def test_a_retry_after_on_the_logs_holds_off_the_logs_not_the_list() -> None:
    api = FakeAPI()
    api.job("ft-ra")
    rig = Rig()
    rig.sweep()
    responses.replace(
        responses.GET,
        LOG_URL,
        status=429,
        json={"code": "Throttling", "message": "slow down"},
        headers={"Retry-After": "120"},
    )
    rig.sweep()
    assert rig.client.throttled_for("logs") > 100
    assert rig.client.throttled_for("list") == 0
    log_calls = rig.recorder.endpoints.count("logs")
    rig.sweep()  # the list is read; the log is not asked for until Retry-After has passed
    assert rig.recorder.endpoints.count("logs") == log_calls
    assert api.list_requests == 3


@responses.activate
def test_at_most_max_jobs_are_followed_and_followed_jobs_keep_their_place() -> None:
    api = FakeAPI()
    for n in (1, 2, 3):
        api.job(f"ft-{n}")
        api.jobs[f"ft-{n}"]["create_time"] = f"2024-10-29 16:5{n}:00"
    rig = Rig(max_jobs=2)
    assert set(rig.sweep().training) == {"ft-3", "ft-2"}  # the newest
    api.job("ft-4")
    api.jobs["ft-4"]["create_time"] = "2024-10-29 17:00:00"
    assert set(rig.sweep().training) == {"ft-3", "ft-2"}  # no churn for a newcomer
    api.jobs["ft-2"]["status"] = "SUCCEEDED"
    rig.sweep()  # ft-2's final read; ft-4 takes its place
    assert set(rig.sweep().training) == {"ft-2", "ft-3", "ft-4"}
    # Steady state: one log request per followed job per sweep.
    before = len(api.log_requests)
    rig.sweep()
    assert len(api.log_requests) - before == 2


@responses.activate
def test_zero_max_jobs_turns_the_logs_off() -> None:
    api = FakeAPI()
    api.job("ft-x")
    rig = Rig(max_jobs=0)
    assert rig.sweep().training == {}
    assert api.log_requests == []


@responses.activate
def test_no_log_request_once_the_sweep_deadline_has_passed() -> None:
    api = FakeAPI()
    api.job("ft-late")
    rig = Rig()
    listed = rig.client.sweep()
    rig.client.sweep_timeout = -1.0  # the list was read; the deadline passes before the logs
    with rig.client.sweep_window():
        snapshot = rig.tailer.follow(listed)
    assert [j.job_id for j in snapshot.jobs] == ["ft-late"]
    assert api.log_requests == []


@responses.activate
def test_a_deadline_reached_while_pacing_stops_the_log_reads_without_a_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeAPI()
    for n in range(3):
        api.job(f"ft-{n}")
    rig = Rig()
    listed = rig.client.sweep()
    # The rate limit would make the first log read wait 10 s; 5 s of the sweep are left.
    rig.client._bucket = TokenBucket(0.1, monotonic=lambda: 0.0)
    rig.client._bucket.reserve()
    rig.client.sweep_timeout = 5.0
    with caplog.at_level(logging.WARNING), rig.client.sweep_window():
        snapshot = rig.tailer.follow(listed)
    assert api.log_requests == []
    assert [t.log_lines for t in snapshot.training.values()] == [0, 0, 0]
    # One line, for the sweep: not one "training log not read" per job.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "training logs not all read in this sweep: "
        "the sweep deadline (--poll.sweep-timeout) was reached"
    ]


@responses.activate
def test_first_sight_takes_the_newest_timestamped_line_as_the_last_growth() -> None:
    api = FakeAPI()
    api.job("ft-stall")
    api.logs["ft-stall"] += [
        "2024-10-29 17:00:00,000 - INFO - step 1",
        record(1.0, 0.5),
        "2024-10-29 17:10:00,500 - INFO - saving checkpoint-2",
        "2024-10-29 17:05:00 - INFO - out of order",
    ]
    rig = Rig()
    assert rig.training("ft-stall").last_growth == CREATED + 16 * 60 + 7 + 0.5
    rig.clock.now += 60
    assert rig.training("ft-stall").last_growth == CREATED + 16 * 60 + 7 + 0.5  # no growth
    rig.clock.now += 60
    api.logs["ft-stall"] += [record(0.9, 0.6)]
    assert rig.training("ft-stall").last_growth == rig.clock.now  # grew: seen now


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([record(1.0, 0.5)], "now"),  # no timestamp at all
        (["2099-01-01 00:00:00 - INFO - from the future"], "now"),
        (["2000-01-01 00:00:00 - INFO - before the job existed"], "created"),
        ([], "now"),  # an empty log: watched from now on
    ],
)
@responses.activate
def test_first_sight_without_a_usable_timestamp(lines: list[str], expected: str) -> None:
    api = FakeAPI()
    api.job("ft-t")
    api.logs["ft-t"] += lines
    rig = Rig()
    want = rig.clock.now if expected == "now" else CREATED
    assert rig.training("ft-t").last_growth == want


@responses.activate
def test_a_start_seen_happening_is_when_the_job_started_running() -> None:
    api = FakeAPI()
    api.job("ft-seen", "QUEUING")
    api.job("ft-already")
    rig = Rig()
    rig.sweep()
    rig.clock.now += 30
    api.jobs["ft-seen"]["status"] = "RUNNING"
    snapshot = rig.sweep()
    assert snapshot.training["ft-seen"].running_since == rig.clock.now
    assert snapshot.training["ft-already"].running_since is None


@responses.activate
def test_nan_and_inf_losses_are_kept_and_the_minimum_ignores_them() -> None:
    api = FakeAPI()
    api.job("ft-div")
    api.logs["ft-div"] += [
        "{'eval_loss': nan, 'epoch': 1.0}",  # never the minimum, even as the first
        "{'eval_loss': 0.8, 'epoch': 1.5}",
        "{'eval_loss': nan, 'epoch': 2.0}",
        "{'loss': inf, 'learning_rate': 1e-4, 'epoch': nan}",
    ]
    training = Rig().training("ft-div")
    assert training.train_loss == math.inf
    assert training.eval_loss is not None and math.isnan(training.eval_loss)
    assert training.eval_loss_min == 0.8
    assert training.epoch == 2.0  # a NaN epoch is no epoch


@responses.activate
def test_hostile_ids_are_quoted_whole_and_dot_ids_never_asked_for() -> None:
    api = FakeAPI()
    api.job("a/b?c=1#d")
    api.job("..")
    api.logs["a/b?c=1#d"] += [record(1.0, 0.1)]
    rig = Rig()
    snapshot = rig.sweep()
    assert set(snapshot.training) == {"a/b?c=1#d"}
    assert [call.request.url for call in responses.calls][-1] == (
        LIST_URL + "/a%2Fb%3Fc%3D1%23d/logs?offset=0&line=1000"
    )
    assert api.requests_for("..") == []


@pytest.mark.parametrize(
    "output",
    [
        {"total": 2, "logs": "not a list"},
        {"logs": ["x"]},
        {"total": -1, "logs": []},
        {"total": True, "logs": []},
    ],
)
@responses.activate
def test_a_malformed_log_answer_is_an_invalid_response_and_nothing_else(
    output: dict[str, Any],
) -> None:
    api = FakeAPI()
    api.job("ft-bad")
    responses.replace(responses.GET, LOG_URL, json={"request_id": "r", "output": output})
    rig = Rig()
    snapshot = rig.sweep()
    assert [j.job_id for j in snapshot.jobs] == ["ft-bad"]
    assert snapshot.training["ft-bad"] == Training(last_growth=None)
    assert rig.recorder.seen == ["ok", "InvalidResponse/200"]


@responses.activate
def test_odd_lines_are_counted_and_never_break_a_read() -> None:
    api = FakeAPI()
    api.job("ft-odd")
    responses.replace(
        responses.GET,
        LOG_URL,
        json={
            "request_id": "r",
            "output": {
                "total": 6,
                "logs": [
                    None,
                    17,
                    "x" * (64 * 1024 + 1),
                    "{'loss': 1.0, 'epoch': 0.5",  # truncated
                    "{'loss': __import__('os').system('id')}",
                    record(0.7, 0.9),
                    "one line more than total",
                ],
            },
        },
    )
    training = Rig().training("ft-odd")
    assert (training.train_loss, training.epoch, training.log_lines) == (0.7, 0.9, 6)
    assert training.unparsed_lines == 5  # the 7th line is past the total: not read


@responses.activate
def test_a_log_that_shrinks_is_read_on_from_its_new_end(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAPI()
    api.job("ft-shrink")
    api.logs["ft-shrink"] += [record(1.0, 0.1)] * 5
    rig = Rig()
    rig.sweep()
    api.logs["ft-shrink"][:] = [record(2.0, 0.2)] * 2
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        assert rig.training("ft-shrink").log_lines == 2
    assert "shrank from 5 to 2 lines" in caplog.text
    api.logs["ft-shrink"] += [record(0.5, 0.3)]
    assert rig.training("ft-shrink").train_loss == 0.5
    assert api.requests_for("ft-shrink") == [(0, 1000), (5, 1000), (2, 1000)]


class Exploding:
    """A log source with a bug: the list's sweep must survive it."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error
        self.calls = 0

    def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
        self.calls += 1
        raise self.error()

    def time_left(self) -> float:
        return 60.0

    def throttled_for(self, endpoint: str) -> float:
        return 0.0


def test_a_bug_in_reading_logs_is_logged_once_and_keeps_the_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ft_exporter.model import Job

    running = Job("ft-b", "ft-b", "RUNNING", "m", "m", "sft", "", CREATED, None, 0)
    source = Exploding(lambda: RuntimeError("boom"))
    tailer = LogTailer(source, tz=UTC8)
    snapshot = Snapshot(jobs=(running,), taken_at=CREATED)
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        for _ in range(3):
            out = tailer.follow(snapshot)
            assert out.jobs == snapshot.jobs
            assert out.training == {"ft-b": Training(running_since=None)}
    assert source.calls == 3
    assert caplog.text.count("reading training logs failed") == 1
    assert "Traceback" in caplog.text


def test_an_api_error_of_one_job_does_not_stop_the_others() -> None:
    from ft_exporter.model import Job

    jobs = tuple(
        Job(f"ft-{n}", f"ft-{n}", "RUNNING", "m", "m", "sft", "", CREATED + n, None, 0)
        for n in (1, 2)
    )
    source = Exploding(lambda: ApiError("InternalError", "oops", "500"))
    LogTailer(source, tz=UTC8).follow(Snapshot(jobs=jobs, taken_at=CREATED))
    assert source.calls == 2


def test_finished_jobs_kept_are_bounded() -> None:
    from ft_exporter.model import Job

    class Empty(Exploding):
        def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
            return LogPage(0, [], "r")

    tailer = LogTailer(Empty(RuntimeError), tz=UTC8, max_jobs=1000)
    many = [
        Job(f"ft-{n}", f"ft-{n}", "RUNNING", "m", "m", "sft", "", CREATED + n, None, 0)
        for n in range(KEEP_FINISHED + 5)
    ]
    tailer.follow(Snapshot(jobs=tuple(many), taken_at=CREATED))
    ended = tuple(
        Job(j.job_id, j.job_name, "SUCCEEDED", "m", "m", "sft", "", j.created, None, 0)
        for j in many
    )
    assert len(tailer.follow(Snapshot(jobs=ended, taken_at=CREATED)).training) == KEEP_FINISHED


class Script:
    """A log source that answers from lists in memory and journals every call."""

    def __init__(self) -> None:
        self.logs: dict[str, list[str]] = {}
        self.errors: dict[str, ApiError] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.left = 60.0
        self.wait = 0.0
        self.endpoints: list[str] = []

    def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
        self.calls.append((job_id, offset, lines))
        if job_id in self.errors:
            raise self.errors[job_id]
        log = self.logs[job_id]
        return LogPage(len(log), log[offset : offset + lines], "r")

    def time_left(self) -> float:
        return self.left

    def throttled_for(self, endpoint: str) -> float:
        self.endpoints.append(endpoint)
        return self.wait


def job(job_id: str, status: str = "RUNNING", created: float | None = CREATED) -> Any:
    from ft_exporter.model import Job

    return Job(job_id, job_id, status, "m", "m", "sft", "", created, None, 0)


def snap(*jobs: Any) -> Snapshot:
    return Snapshot(jobs=tuple(jobs), taken_at=CREATED)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scripted(max_jobs: int = 20, max_lines: int = 1000) -> tuple[Script, LogTailer, Clock, Ticks]:
    source, clock, ticks = Script(), Clock(), Ticks()
    tailer = LogTailer(
        source, tz=UTC8, max_jobs=max_jobs, max_lines=max_lines, clock=clock, monotonic=ticks
    )
    return source, tailer, clock, ticks


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "ft_exporter.tailer"]


def test_every_value_of_a_record_reaches_the_snapshot() -> None:
    source, tailer, clock, _ = scripted()
    source.logs["ft-v"] = [
        record(2.0, 0.5, lr=3e-5),
        "{'eval_loss': 1.5, 'epoch': 1.0}",
        "{'eval_loss': 1.7, 'epoch': 0.9}",  # higher: not the minimum; an older epoch
        "{'train_runtime': 9.0, 'train_loss': 1.1, 'epoch': 1.0}",
    ]
    training = tailer.follow(snap(job("ft-v"))).training["ft-v"]
    assert training == Training(
        train_loss=1.1,
        eval_loss=1.7,
        eval_loss_min=1.5,
        learning_rate=3e-5,
        epoch=1.0,
        log_lines=4,
        last_growth=clock.now,
        unparsed_lines=0,
        running_since=None,
    )


def test_a_nan_eval_loss_alone_has_no_minimum_and_a_record_may_lack_an_epoch() -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-n"] = ["{'eval_loss': nan}", "{'loss': 1.0, 'learning_rate': 1e-4}"]
    training = tailer.follow(snap(job("ft-n"))).training["ft-n"]
    assert training.eval_loss_min is None
    assert (training.train_loss, training.epoch) == (1.0, None)


def test_a_lower_eval_loss_is_the_new_minimum_and_epochs_only_go_up() -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-m"] = ["{'eval_loss': 1.5, 'epoch': 2.0}", "{'eval_loss': 1.2, 'epoch': 1.5}"]
    training = tailer.follow(snap(job("ft-m"))).training["ft-m"]
    assert (training.eval_loss, training.eval_loss_min, training.epoch) == (1.2, 1.2, 2.0)


def test_jobs_over_max_jobs_are_warned_about_when_their_count_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, _, _ = scripted(max_jobs=1)
    for n in (1, 2, 3):
        source.logs[f"ft-{n}"] = []
    two = snap(job("ft-1"), job("ft-2", created=CREATED + 1))
    three = snap(*two.jobs, job("ft-3", created=None))
    with caplog.at_level(logging.INFO, "ft_exporter"):
        assert set(tailer.follow(two).training) == {"ft-2"}  # the newest
        tailer.follow(two)  # the same count: not logged again
        assert set(tailer.follow(three).training) == {"ft-2"}
        tailer.follow(snap(job("ft-2")))
        tailer.follow(two)
    warned = (logging.WARNING, "1 running job(s) not followed: over --logs.max-jobs=1")
    assert messages(caplog) == [
        warned,
        (logging.WARNING, "2 running job(s) not followed: over --logs.max-jobs=1"),
        warned,  # back over the cap after all were followed
    ]


def test_equal_creation_times_follow_the_greater_job_id_first() -> None:
    source, tailer, _, _ = scripted(max_jobs=1)
    source.logs = {"ft-a": [], "ft-b": []}
    assert set(tailer.follow(snap(job("ft-a"), job("ft-b"))).training) == {"ft-b"}


def test_a_job_without_creation_time_is_followed_last() -> None:
    source, tailer, _, _ = scripted(max_jobs=1)
    source.logs = {"ft-none": [], "ft-old": []}
    jobs = snap(job("ft-none", created=None), job("ft-old", created=0.5))
    assert set(tailer.follow(jobs).training) == {"ft-old"}


def test_a_failed_read_is_logged_once_then_recovery_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, _, ticks = scripted()
    source.logs["ft-e"] = [record(1.0, 0.1)]
    with caplog.at_level(logging.INFO, "ft_exporter"):
        tailer.follow(snap(job("ft-e")))  # fine, and nothing to recover from: silent
        source.errors["ft-e"] = ApiError("InternalError", "oops", "500")
        for _ in range(3):
            ticks.now += 1
            assert tailer.follow(snap(job("ft-e"))).training["ft-e"].train_loss == 1.0
        ticks.now += 600
        tailer.follow(snap(job("ft-e")))
        del source.errors["ft-e"]
        tailer.follow(snap(job("ft-e")))
        tailer.follow(snap(job("ft-e")))
    assert messages(caplog) == [
        (
            logging.WARNING,
            "training log not read, keeping its last values: "
            "job ft-e: InternalError HTTP 500: oops",
        ),
        (
            logging.WARNING,
            "training logs still not read (4 times in a row): "
            "job ft-e: InternalError HTTP 500: oops",
        ),
        (logging.INFO, "training logs read again after 4 failed sweep(s)"),
    ]


def test_another_error_is_news_and_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-e"] = []
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        source.errors["ft-e"] = ApiError("InternalError", "oops", "500")
        tailer.follow(snap(job("ft-e")))
        source.errors["ft-e"] = ApiError("InternalError", "oops", "503")
        tailer.follow(snap(job("ft-e")))
    assert len(messages(caplog)) == 2


@pytest.mark.parametrize(
    ("left", "wait", "why"),
    [
        (0.0, 0.0, "the sweep deadline (--poll.sweep-timeout) was reached"),
        (-5.0, 0.0, "the sweep deadline (--poll.sweep-timeout) was reached"),
        (60.0, 4.6, "honouring Retry-After of the log endpoint for 5s more"),
        (60.0, 0.4, "honouring Retry-After of the log endpoint for 0s more"),
    ],
)
def test_no_request_past_the_deadline_or_inside_a_retry_after(
    caplog: pytest.LogCaptureFixture, left: float, wait: float, why: str
) -> None:
    source, tailer, _, ticks = scripted()
    source.logs["ft-w"] = [record(1.0, 0.1)]
    source.left, source.wait = left, wait
    with caplog.at_level(logging.INFO, "ft_exporter"):
        tailer.follow(snap(job("ft-w")))
        tailer.follow(snap(job("ft-w")))  # the same reason: not logged again
        ticks.now += 600
        tailer.follow(snap(job("ft-w")))
        source.left, source.wait = 60.0, 0.0
        tailer.follow(snap(job("ft-w")))
    assert source.calls == [("ft-w", 0, 1000)]
    assert messages(caplog) == [
        (logging.WARNING, f"training logs not all read in this sweep: {why}"),
        (logging.WARNING, f"training logs still not all read (3 sweeps in a row): {why}"),
        (logging.INFO, "training logs read again after 3 failed sweep(s)"),
    ]


def test_another_reason_to_stop_reading_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-w"] = []
    source.left = 0.0
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        tailer.follow(snap(job("ft-w")))
        source.left, source.wait = 60.0, 30.0
        tailer.follow(snap(job("ft-w")))
    assert [text for _, text in messages(caplog)] == [
        "training logs not all read in this sweep: "
        "the sweep deadline (--poll.sweep-timeout) was reached",
        "training logs not all read in this sweep: "
        "honouring Retry-After of the log endpoint for 30s more",
    ]


def test_a_sliver_of_time_left_and_no_retry_after_still_read() -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-s"] = []
    source.left = 0.001
    tailer.follow(snap(job("ft-s")))
    assert source.calls == [("ft-s", 0, 1000)]
    assert source.endpoints == ["logs"]


def test_throttling_stops_the_sweep_other_errors_do_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, _, _ = scripted()
    source.logs = {"ft-1": [], "ft-2": []}
    jobs = snap(job("ft-1", created=CREATED + 1), job("ft-2"))
    source.errors["ft-1"] = ApiError("Throttling", "slow down", "429")
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        tailer.follow(jobs)
    assert [c[0] for c in source.calls] == ["ft-1"]
    assert messages(caplog)[-1] == (
        logging.WARNING,
        "training logs not all read in this sweep: the log endpoint is throttling",
    )


def test_an_ended_jobs_failing_read_is_tried_three_times_in_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, clock, _ = scripted()
    source.logs = {"ft-x": [], "ft-y": []}
    tailer.follow(snap(job("ft-x", created=CREATED + 1), job("ft-y")))
    source.errors["ft-x"] = ApiError("InternalError", "oops", "500")
    source.logs["ft-y"].append(" Fine-tune succeeded!")
    clock.now += 60
    ended = snap(job("ft-x", "FAILED", CREATED + 1), job("ft-y", "SUCCEEDED"))
    with caplog.at_level(logging.INFO, "ft_exporter"):
        for _ in range(3):
            tailer.follow(ended)
    # ft-x's failure does not keep ft-y from its one final read.
    assert [c[0] for c in source.calls[2:]] == ["ft-x", "ft-y", "ft-x", "ft-x"]
    assert [level for level, _ in messages(caplog)] == [logging.WARNING]  # no recovery
    with caplog.at_level(logging.INFO, "ft_exporter"):
        training = tailer.follow(ended).training
    assert len(source.calls) == 6
    assert messages(caplog)[-1] == (
        logging.INFO,
        "training logs read again after 3 failed sweep(s)",
    )
    assert set(training) == {"ft-x", "ft-y"}
    assert (training["ft-y"].log_lines, training["ft-y"].last_growth) == (1, clock.now)


def test_a_job_running_again_after_it_ended_is_followed_again() -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-r"] = [record(1.0, 0.1)]
    tailer.follow(snap(job("ft-r")))
    tailer.follow(snap(job("ft-r", "SUCCEEDED")))
    tailer.follow(snap(job("ft-r", "SUCCEEDED")))
    source.logs["ft-r"].append(record(0.5, 0.2))
    assert tailer.follow(snap(job("ft-r"))).training["ft-r"].train_loss == 0.5
    tailer.follow(snap(job("ft-r")))
    tailer.follow(snap(job("ft-r", "SUCCEEDED")))  # ended again: one more final read
    tailer.follow(snap(job("ft-r", "SUCCEEDED")))
    assert [offset for _, offset, _ in source.calls] == [0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("new_lines", "requests"),
    [
        (300, [(1, 300)]),  # exactly the budget: all read, no jump
        (301, [(1, 300), (2, 300)]),  # one more: the newest 300
    ],
)
def test_the_jump_starts_one_line_past_the_budget(
    new_lines: int, requests: list[tuple[int, int]]
) -> None:
    source, tailer, _, _ = scripted(max_lines=300)
    source.logs["ft-j"] = [" first"]
    tailer.follow(snap(job("ft-j")))
    source.logs["ft-j"] += [record(1.0, 0.1)] * new_lines
    training = tailer.follow(snap(job("ft-j"))).training["ft-j"]
    assert [(o, n) for _, o, n in source.calls[1:]] == requests
    assert (training.log_lines, training.unparsed_lines) == (1 + new_lines, 1)


def test_a_budget_over_one_request_reads_on_in_the_same_sweep() -> None:
    source, tailer, _, _ = scripted(max_lines=1500)
    source.logs["ft-b"] = [record(1.0, 0.1)] * 1200
    training = tailer.follow(snap(job("ft-b"))).training["ft-b"]
    assert [(o, n) for _, o, n in source.calls] == [(0, 1000), (1000, 500)]
    assert training.log_lines == 1200


def test_a_zero_line_budget_still_reads_one_line() -> None:
    source, tailer, _, _ = scripted(max_lines=0)
    source.logs["ft-z"] = [record(1.0, 0.1), record(0.5, 0.2)]
    assert tailer.max_lines == 1
    assert tailer.follow(snap(job("ft-z"))).training["ft-z"].train_loss == 0.5
    assert [(o, n) for _, o, n in source.calls] == [(0, 1), (1, 1)]


def test_an_empty_page_short_of_the_total_ends_the_read() -> None:
    class Short(Script):
        def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
            self.calls.append((job_id, offset, lines))
            return LogPage(5, [], "r")

    source, clock = Short(), Clock()
    tailer = LogTailer(source, tz=UTC8, max_lines=3000, clock=clock)
    training = tailer.follow(snap(job("ft-s"))).training["ft-s"]
    assert source.calls == [("ft-s", 0, 1000)]
    assert training.log_lines == 5
    tailer.follow(snap(job("ft-s")))
    assert source.calls[-1] == ("ft-s", 0, 1000)  # nothing was read: asked from 0 again


def test_a_shrinking_log_warns_with_the_job_and_both_sizes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-k"] = [" a", " b", " c"]
    tailer.follow(snap(job("ft-k")))
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        tailer.follow(snap(job("ft-k")))  # no growth is no shrinking
    source.logs["ft-k"] = [" a"]
    with caplog.at_level(logging.WARNING, "ft_exporter"):
        assert tailer.follow(snap(job("ft-k"))).training["ft-k"].log_lines == 1
    assert messages(caplog) == [
        (
            logging.WARNING,
            "training log of job ft-k shrank from 3 to 1 lines; reading on from there",
        )
    ]


def test_first_sight_of_a_job_without_creation_time_keeps_an_old_line_time() -> None:
    source, tailer, _, _ = scripted()
    source.logs["ft-o"] = ["2000-01-01 08:00:00 - INFO - long ago"]
    training = tailer.follow(snap(job("ft-o", created=None))).training["ft-o"]
    assert training.last_growth == 946684800.0


def test_a_bugs_repeat_is_logged_after_the_interval_with_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, tailer, _, ticks = scripted()
    del source.logs  # every read is a bug: AttributeError
    with caplog.at_level(logging.INFO, "ft_exporter"):
        tailer.follow(snap(job("ft-b")))
        ticks.now += 600
        tailer.follow(snap(job("ft-b")))
    got = messages(caplog)
    assert [level for level, _ in got] == [logging.WARNING, logging.WARNING]
    assert got[0][1].startswith(
        "reading training logs failed, keeping their last values: unexpected AttributeError: "
    )
    assert got[1][1].startswith(
        "reading training logs still failing (2 times in a row): unexpected AttributeError: "
    )
    assert caplog.records[0].exc_info is not None
    assert caplog.records[1].exc_info is None


def test_a_log_growing_faster_than_it_is_read_jumps_once_per_sweep() -> None:
    class Racing(Script):
        def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
            page = super().fetch_log(job_id, offset, lines)
            self.logs[job_id] += [record(1.0, 0.1)] * 500  # written while we read
            return page

    source, clock = Racing(), Clock()
    tailer = LogTailer(source, tz=UTC8, max_lines=300, clock=clock)
    source.logs["ft-r"] = [record(1.0, 0.1)] * 1000
    training = tailer.follow(snap(job("ft-r"))).training["ft-r"]
    assert [(o, n) for _, o, n in source.calls] == [(0, 300), (700, 300)]
    assert (training.log_lines, training.unparsed_lines) == (1500, 0)


def test_lines_past_the_total_are_never_read_further_into_a_log() -> None:
    class Padded(Script):
        def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
            page = super().fetch_log(job_id, offset, lines)
            return LogPage(page.total, [*page.lines, " not in the log"], "r")

    source, clock = Padded(), Clock()
    tailer = LogTailer(source, tz=UTC8, clock=clock)
    source.logs["ft-p"] = [record(1.0, 0.1)] * 3
    tailer.follow(snap(job("ft-p")))
    source.logs["ft-p"] += [record(0.5, 0.2)] * 2
    training = tailer.follow(snap(job("ft-p"))).training["ft-p"]
    assert (training.log_lines, training.unparsed_lines) == (5, 0)


def test_more_running_jobs_than_finished_ones_kept_are_all_followed() -> None:
    source, tailer, _, _ = scripted(max_jobs=1000)
    many = [job(f"ft-{n}", created=CREATED + n) for n in range(KEEP_FINISHED + 5)]
    for j in many:
        source.logs[j.job_id] = []
    tailer.follow(snap(*many))
    assert len(tailer.follow(snap(*many)).training) == KEEP_FINISHED + 5


def test_exactly_the_budget_behind_reads_on_from_the_offset_without_a_jump() -> None:
    source, tailer, _, _ = scripted(max_lines=1500)
    source.logs["ft-b"] = [record(1.0, 0.1)] * 1000
    tailer.follow(snap(job("ft-b")))
    source.logs["ft-b"] += [record(0.5, 0.2)] * 1500
    training = tailer.follow(snap(job("ft-b"))).training["ft-b"]
    assert [(o, n) for _, o, n in source.calls[1:]] == [(1000, 1000), (2000, 500)]
    assert (training.log_lines, training.train_loss) == (2500, 0.5)
