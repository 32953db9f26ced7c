"""A simulator of the Model Studio fine-tune API (list and job logs), for the demo and tests.

It serves ``GET /api/v1/fine-tunes`` with the vendor's shapes (pagination,
model filter, Bearer key check) and ``GET /api/v1/fine-tunes/{job_id}/logs``
(``offset``, ``line``; 400 ``InvalidParameter``, 404 ``NotFound``), and lets a test
switch faults on and off through a small control API under ``/_sim/``:

- ``GET  /_sim/stats``   request counters (``requests`` every API request,
  ``list_requests``, ``log_requests`` and ``log_requests_by_job``), TCP
  connections accepted (``connections``, control requests included), and for
  the last 200 list requests ``request_log``: when each arrived (``time.monotonic()``, which
  is system-wide on Linux, so a test can compare) and the fault it was answered with
- ``POST /_sim/fault``   ``{"mode": "throttle", "count": 3, "delay": 2, "retry_after": "1"}``;
  ``"message"`` replaces the error message of ``throttle``, ``error500`` and ``bad_key``;
  ``"endpoint"`` is the requests it hits: ``"list"`` (the default), ``"logs"`` or ``"all"``
- ``DELETE /_sim/fault`` back to healthy
- ``POST /_sim/jobs``    ``{"jobs": [...]}`` adds jobs (API-shaped), ``{"fill_quota": 20}``
  adds SUCCEEDED jobs until that many jobs count against the limit
- ``POST /_sim/logs``    ``{"job_id": "...", "lines": [...]}`` appends lines to a job's log
  (a job added with ``/_sim/jobs`` has an empty log until then)
- ``PATCH /_sim/jobs/<job_id>``  ``{"fields": {"status": "SUCCEEDED", ...}}`` sets fields of
  the job as listed (for good: a timeline job keeps them whatever its timeline says);
  ``{"created": 1730192033.0}`` moves it to that place in the list, which is sorted by
  it, newest first (a job added through ``/_sim/jobs`` is placed by when it was added)
- ``DELETE /_sim/jobs/<job_id>``  deletes the job, as ``DELETE /fine-tunes/{id}`` does

A job of the timeline (``demo`` and the problem scenarios) writes a training log while it
runs, as a function of time: see :func:`training_log`.

Scenarios: ``demo`` (jobs come and go), ``static`` (a fixed account for exact
tests), ``empty``, ``hostile`` (text fields hostile to the exposition format),
``sprawl`` (200 models, each with its own undocumented status), and ``diverging``,
``stalled``, ``overfitting`` (a running job with that training problem, see
:func:`problem_jobs`), and ``bulk`` (``--jobs N`` jobs, the newest ``--active K`` of them
waiting to run, the rest ended: the request and CPU benchmark's account, see
:func:`bulk_jobs`).

Run on its own: ``python -m ft_exporter.simulator --port 8080 --key sk-demo``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import random
import re
import socket
import ssl
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, overload
from urllib.parse import parse_qs, unquote, urlsplit

from ft_exporter.trainlog import planned_epochs

log = logging.getLogger(__name__)

API_PATH = "/api/v1/fine-tunes"
#: A job's training log; the id is one percent-encoded path segment.
LOGS_PATH = re.compile(r"/api/v1/fine-tunes/([^/]+)/logs")
#: The documented bounds of the log endpoint's ``line`` parameter, and its default.
MAX_LOG_LINES, DEFAULT_LOG_LINES = 1000, 100
UTC8 = timezone(timedelta(hours=8))

FAULT_MODES = (
    "none",
    "throttle",  # 429 Throttling (JSON), optional Retry-After
    "error500",  # 500 InternalError (JSON)
    "slow",  # answer correctly after `delay` seconds
    "truncated",  # 200 with JSON cut in half
    "html502",  # 502 with an HTML page, as a gateway sends
    "empty502",  # 502 with an empty body
    "jobs_null",  # 200 with output.jobs = null
    "bad_key",  # 401 InvalidApiKey whatever key is sent
    "reset",  # headers and half a body, then the connection is reset
    "total_high",  # output.total larger than the real count
    "total_low",  # output.total smaller than the real count
    "endless",  # the same full page whatever page_no is asked, total = 1,000,000
    "huge",  # a 50 MB body
    "bad_utf8",  # 200 whose body is not valid UTF-8
)
HUGE_BYTES = 50 * 1024 * 1024
#: The control API's path of one job (``PATCH``, ``DELETE``), its id percent-encoded.
SIM_JOB_PATH = "/_sim/jobs/"
FAULT_ENDPOINTS = ("list", "logs", "all")
SCENARIOS = (
    "demo",
    "static",
    "empty",
    "hostile",
    "sprawl",
    "diverging",
    "stalled",
    "overfitting",
    "bulk",
)
#: The ``bulk`` scenario's defaults and its cap: a benchmark's account, not a memory bomb.
BULK_JOBS, BULK_ACTIVE, MAX_BULK_JOBS = 1000, 10, 200_000


#: The hyper-parameters a timeline job is listed with, unless ``extra`` replaces them.
DEFAULT_HYPER_PARAMETERS: dict[str, Any] = {
    "n_epochs": 3,
    "batch_size": 32,
    "learning_rate": "1.6e-5",
    "max_length": 8192,
}


class LogLine(NamedTuple):
    """One line of a job's log and the time it appears; a record line keeps its values."""

    at: float
    text: str
    record: dict[str, float] | None = None


@dataclass
class SimJob:
    """A job whose status follows a timeline, or stays fixed when ``fixed`` is set.

    A timeline job also writes a training log while it runs (see :func:`training_log`);
    ``diverge_at``, ``overfit_after`` and ``stall_at`` give that log a problem. A fixed
    job's log holds only what ``POST /_sim/logs`` appended.
    """

    job_id: str
    model: str
    training_type: str
    created: float
    pending_s: float = 20.0
    queue_s: float = 40.0
    run_s: float = 180.0
    outcome: str = "SUCCEEDED"
    usage: int | None = 0
    fixed: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Seconds between two loss records while it runs.
    log_every: float = 3.0
    #: From this time on the loss is ``inf`` (the first record), then ``nan``.
    diverge_at: float | None = None
    #: The eval loss falls until this epoch, then rises (overfitting).
    overfit_after: int | None = None
    #: The log stops at this time (a timestamped line is its last), while the job runs on.
    stall_at: float | None = None
    #: Lines appended through the control API, with the time each was appended.
    appended: list[LogLine] = field(default_factory=list, repr=False)
    _timeline: list[LogLine] | None = field(default=None, init=False, repr=False)

    @property
    def run_start(self) -> float:
        return self.created + self.pending_s + self.queue_s

    @property
    def end(self) -> float:
        return self.run_start + self.run_s

    def status_at(self, now: float) -> tuple[str, float | None]:
        """The job's status at ``now``, and its end time when it has ended."""
        t = now - self.created
        if t < self.pending_s:
            return "PENDING", None
        if t < self.pending_s + self.queue_s:
            return "QUEUING", None
        if now < self.end:
            return "RUNNING", None
        return self.outcome, self.end

    def hyper_parameters(self) -> dict[str, Any]:
        """As listed: the log's epochs and learning rate follow them."""
        source = self.fixed if self.fixed is not None else self.extra
        given = source.get("hyper_parameters")
        if isinstance(given, dict):
            return dict(given)
        return {} if self.fixed is not None else dict(DEFAULT_HYPER_PARAMETERS)

    def log_at(self, now: float, tz: tzinfo) -> list[str]:
        """The job's log as the API serves it at ``now``: it only ever grows."""
        if self.fixed is not None:
            written: list[LogLine] = []
        else:
            if self._timeline is None:
                self._timeline = training_log(self, tz)
            cut = bisect_right(self._timeline, now, key=lambda line: line.at)
            written = self._timeline[:cut]
        # A line appended at T comes after every timeline line up to T and before the rest.
        merged = heapq.merge(written, self.appended, key=lambda line: line.at)
        return [line.text for line in merged]

    def to_api(self, now: float, tz: tzinfo) -> dict[str, Any]:
        if self.fixed is not None:
            return dict(self.fixed)
        status, ended = self.status_at(now)
        job: dict[str, Any] = {
            "job_id": self.job_id,
            "job_name": self.job_id,
            "status": status,
            "model": self.model,
            "base_model": self.model,
            "training_file_ids": ["976bd01a-f30b-4414-86fd-50c54486e3ef"],
            "validation_file_ids": [],
            "hyper_parameters": self.hyper_parameters(),
            "training_type": self.training_type,
            "create_time": _fmt(self.created, tz),
            "workspace_id": "llm-simulated",
            "user_identity": "1000000000000000",
            "creator": "1000000000000000",
            "modifier": "1000000000000000",
            "group": "llm",
        }
        if ended is not None:
            job["end_time"] = _fmt(ended, tz)
            if status == "SUCCEEDED":
                job["finetuned_output"] = f"{self.model}-ft-{self.job_id[3:]}"
                job["usage"] = self.usage
            elif status == "CANCELED":
                job["usage"] = 0
                job["code"] = "1"
        job.update(self.extra)
        return job


#: Training steps between two loss records (the Trainer's ``logging_steps``).
STEPS_PER_RECORD = 5


def _stamp(ts: float, tz: tzinfo) -> str:
    """The log's own time prefix, ``2024-10-29 17:11:25,130 - ``, in the account's zone."""
    moment = datetime.fromtimestamp(ts, tz)
    return f"{moment:%Y-%m-%d %H:%M:%S},{moment.microsecond // 1000:03d} - "


def eval_losses(n_epochs: int, overfit_after: int | None, rng: random.Random) -> list[float]:
    """The eval loss at each whole epoch: strictly falling, or rising after ``overfit_after``.

    When rising, every eval from two epochs after the minimum on is more than 10 % above it.
    """
    start, floor = rng.uniform(1.2, 1.6), rng.uniform(0.45, 0.65)
    falls_until = overfit_after if overfit_after is not None else n_epochs
    losses: list[float] = []
    for k in range(1, n_epochs + 1):
        if k <= falls_until:
            value = floor + (start - floor) * math.exp(-3.0 * k / falls_until)
        else:
            lowest = losses[falls_until - 1]
            value = lowest * (1 + 0.3 * (1 - math.exp(-(k - falls_until) / 3.0)))
        losses.append(round(value, 4))
    return losses


def _positive_number(raw: object) -> float | None:
    """A hyper-parameter as a number (the API sends numbers or numbers as strings)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def training_log(job: SimJob, tz: tzinfo) -> list[LogLine]:
    """Every line the job's run writes, each with the time it appears, in order.

    Nothing before the job runs; a few free-text start lines; a loss record every
    ``log_every`` seconds (loss falling with noise, learning rate decaying linearly from
    the job's ``learning_rate`` to 0, epoch going from 0 to ``n_epochs`` over the run); an
    eval record and a checkpoint at each whole epoch; and, at the job's end, the summary
    and the closing lines of a success, or a couple of error lines of a failure. A
    deterministic function of the job (seeded by its id): the same job always writes the
    same log, so what a reader saw never changes.
    """
    hyper = job.hyper_parameters()
    n_epochs = max(1, round(planned_epochs(hyper) or 3))
    rate = _positive_number(hyper.get("learning_rate")) or 1.6e-5
    rng = random.Random(job.job_id)
    lines: list[LogLine] = []

    def write(at: float, text: str, stamped: bool = False, stamp_at: float | None = None) -> None:
        at = max(at, lines[-1].at) if lines else at
        stamp = _stamp(at if stamp_at is None else stamp_at, tz)
        lines.append(LogLine(at, stamp + text if stamped else text))

    def write_record(at: float, record: dict[str, float]) -> None:
        """A record as the Trainer writes it: the dict's repr (``nan``, ``inf`` bare)."""
        at = max(at, lines[-1].at) if lines else at
        lines.append(LogLine(at, repr(record), record))

    startup = min(5.0, job.run_s * 0.05)
    tail = min(2.0, job.run_s * 0.01)
    train_s = job.run_s - startup - tail
    per_epoch = max(1, round(train_s / job.log_every / n_epochs))
    records = per_epoch * n_epochs
    samples = rng.randrange(500, 5000)
    t0 = job.run_start
    write(t0, f"INFO - fine-tune job {job.job_id} started", stamped=True)
    write(t0 + startup * 0.2, f" Loading base model {job.model}")
    write(t0 + startup * 0.4, f" Number of training samples: {samples}, epochs: {n_epochs}")
    write(t0 + startup * 0.6, " ***** Running training *****")
    first_loss, floor = rng.uniform(1.8, 2.6), rng.uniform(0.3, 0.6)
    evals = eval_losses(n_epochs, job.overfit_after, rng)
    losses: list[float] = []
    checkpoint = 0
    for i in range(1, records + 1):
        at = t0 + startup + train_s * i / records
        progress = i / records
        epoch = n_epochs * progress
        diverged = job.diverge_at is not None and at >= job.diverge_at
        if diverged:
            loss = grad = math.nan if losses and not math.isfinite(losses[-1]) else math.inf
        else:
            loss = round(
                (floor + (first_loss - floor) * math.exp(-4.0 * progress))
                * (1 + rng.gauss(0, 0.03)),
                4,
            )
            grad = round(abs(rng.gauss(1.2, 0.3)) * (1 - 0.5 * progress), 4)
        losses.append(loss)
        learning_rate = rate * (1 - (i - 1) / records)
        record = {"loss": loss, "grad_norm": grad, "learning_rate": learning_rate}
        write_record(at, {**record, "epoch": round(epoch, 4)})
        if i % per_epoch == 0:
            k = i // per_epoch
            eval_loss = math.nan if diverged else evals[k - 1]
            runtime = round(rng.uniform(2.5, 4.5), 4)
            write_record(
                at + 0.1,
                {
                    "eval_loss": eval_loss,
                    "eval_runtime": runtime,
                    "eval_samples_per_second": round(samples * 0.1 / runtime, 3),
                    "epoch": float(k),
                },
            )
            checkpoint = i * STEPS_PER_RECORD
            write(at + 0.2, f"INFO - saving checkpoint-{checkpoint}", stamped=True)
            write(at + 0.3, " Uploaded checkpoint!")
    if job.stall_at is not None:
        lines = [line for line in lines if line.at < job.stall_at]
        steps = sum(1 for line in lines if line.record and "loss" in line.record)
        write(job.stall_at, f"INFO - saving checkpoint-{steps * STEPS_PER_RECORD}", True)
        return lines
    end = job.end
    if job.outcome == "SUCCEEDED":
        runtime = round(job.run_s - tail, 4)
        usage = job.usage or 0
        summary = {
            "train_runtime": runtime,
            "train_samples_per_second": round(samples * n_epochs / runtime, 3),
            "train_steps_per_second": round(records * STEPS_PER_RECORD / runtime, 3),
            "train_loss": sum(losses) / len(losses),
            "epoch": float(n_epochs),
        }
        write_record(end, summary)
        write(end, f" Actual number of consumed tokens is {usage}!")
        write(end, f" use checkpoint-{checkpoint} as final checkpoint")
        write(end, " Fine-tune succeeded!")
        write(end, f"INFO - training usage {usage}", stamped=True)
        write(end, "INFO - ##FT_COMPLETE##", stamped=True, stamp_at=end + 0.045)
    elif job.outcome == "FAILED":
        write(end, " RuntimeError: CUDA error: an illegal memory access was encountered")
        write(end, "ERROR - Fine-tune failed!", stamped=True)
    return lines


def _fmt(ts: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def _job_id(ts: float, rng: random.Random) -> str:
    stamp = datetime.fromtimestamp(ts, UTC8).strftime("%Y%m%d%H%M")
    return f"ft-{stamp}-{rng.randrange(16**4):04x}"


def _static(
    job_id: str,
    model: str,
    training_type: str,
    status: str,
    usage: Any = None,
    *,
    created: str = "2024-10-29 16:53:53",
    ended: str | None = None,
    **extra: Any,
) -> SimJob:
    fixed: dict[str, Any] = {
        "job_id": job_id,
        "job_name": f"name-{job_id}",
        "status": status,
        "model": model,
        "base_model": model,
        "training_type": training_type,
        "create_time": created,
        "hyper_parameters": {"learning_rate": "1.6e-5", "n_epochs": 3},
    }
    if ended is not None:
        fixed["end_time"] = ended
    if usage is not None:
        fixed["usage"] = usage
    if status.upper().startswith("SUCCEED"):
        fixed["finetuned_output"] = f"{model}-out-{job_id}"
    fixed.update(extra)
    return SimJob(job_id=job_id, model=model, training_type=training_type, created=0.0, fixed=fixed)


def static_jobs() -> list[SimJob]:
    """A fixed account of 20 list entries (19 valid jobs, 1 malformed) for exact tests.

    Expected figures are spelt out in tests/fixtures.py; change both together.
    """
    m14, m8, m7 = "qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct"
    e = "2024-10-30 10:00:00"
    jobs = [
        _static("ft-s01", m14, "sft", "SUCCEEDED", 279808, ended="2024-10-29 17:11:26"),
        _static("ft-s02", m14, "sft", "SUCCEEDED", 100000, ended=e),
        _static("ft-s03", m14, "sft", "SUCCEEDED", 50000, ended=e),
        _static("ft-s04", m14, "sft", "RUNNING", created="2024-11-01 08:00:00"),
        _static("ft-s05", m14, "sft", "FAILED", ended=e),
        _static("ft-s06", m14, "sft", "CANCELED", 0, ended=e, code="1"),
        _static("ft-s07", m14, "efficient_sft", "SUCCEED", 12345, ended=e),
        _static("ft-s08", m14, "efficient_sft", "PENDING", created="2024-11-01 09:00:00"),
        _static("ft-s09", m14, "efficient_sft", "queuing", created="2024-11-01 09:30:00"),
        _static(
            "ft-s10",
            m8,
            "sft",
            "SUCCEEDED",
            2000,
            ended=e,
            hyper_parameters={"learning_rate": 0.000016},
        ),
        _static("ft-s11", m8, "sft", "SUCCEEDED", 3000, ended=e, unknown_field={"x": 1}),
        _static("ft-s12", m8, "sft", "CANCELING"),
        _static("ft-s13", m8, "sft", "QUEUING"),
        _static("ft-s14", m8, "sft", "QUEUING"),
        _static("ft-s15", m8, "dpo_lora", "RUNNING"),
        _static("ft-s16", m8, "dpo_lora", "FAILED", ended=e),
        _static("ft-s17", m8, "dpo_lora", "SUSPENDED"),
        _static("ft-s18", m7, "cpt", "SUCCEEDED", "4096", ended=e),
        _static("ft-s19", m7, "cpt", "RUNNING"),
    ]
    assert jobs[15].fixed is not None
    jobs[15].fixed["usage"] = None  # usage: null, as the API may send
    broken = SimJob(
        job_id="",
        model=m7,
        training_type="cpt",
        created=0.0,
        fixed={"job_name": "no-id", "status": "RUNNING", "model": m7},
    )
    jobs.append(broken)
    return jobs


#: Ten KiB of text, for a job field far longer than any label should be.
TEN_KIB = "0123456789" * 1024


def hostile_jobs() -> list[SimJob]:
    """Jobs whose text fields are valid JSON but hostile to an exposition format.

    Lone surrogates, quotes, backslashes, line breaks, NUL and other controls,
    10 KiB values, emoji and bidi marks, in every text field, job_id included.
    Expected labels are spelt out in tests/test_hostile_data.py; change both together.
    """
    e = "2024-10-30 10:00:00"
    return [
        _static("ft-h01", "qwen3-8b", "sft", "RUNNING", job_name="x \udc80"),
        _static(
            "ft-h02",
            "m \ud800 high",
            "sft",
            "RUNNING",
            job_name='say "hi" C:\\new\\table \\x41 \\u12 \\"} 1\n# EOF \\',
        ),
        _static(
            "ft-h03",
            "qwen3-8b",
            "SFT\x00",
            "SUCCEEDED",
            10,
            ended=e,
            job_name="line1\nline2\r\nline3\rend\tTab",
            finetuned_output="nul\x00 bel\x07 esc\x1b[31m del\x7f c1\x85\x9b",
        ),
        _static(
            "ft-h04",
            "qwen3-8b",
            "sft",
            "paused\u2028\x00 \udc80",
            job_name="para\u2028graph\u2029end\x1c",
        ),
        _static("ft-h05", TEN_KIB, "sft", "RUNNING", job_name=TEN_KIB, finetuned_output=TEN_KIB),
        _static(
            "ft-h06",
            "qwen3-8b",
            "sft",
            "RUNNING",
            job_name="\U0001f680 tune \U0001f469\u200d\U0001f52c",
            base_model="\u202eevil\u202c \u200fRTL\u200e",
        ),
        # Ids that cleaning alone would merge or bloat: each must stay one distinct job.
        _static("ft-dup\x01", "qwen3-8b", "sft", "RUNNING"),
        _static("ft-dup\x02", "qwen3-8b", "sft", "RUNNING"),
        _static("ft-\udc80", "qwen3-8b", "sft", "RUNNING"),
        _static(TEN_KIB, "qwen3-8b", "sft", "RUNNING", job_name="long-id"),
    ]


def sprawl_jobs(count: int = 200) -> list[SimJob]:
    """``count`` jobs, each of its own model and its own undocumented status.

    The worst case for aggregate cardinality: before the cap, every status was
    zero-filled for every model (count x (count + 7) series).
    """
    return [
        _static(f"ft-sprawl-{i:03d}", f"model-{i:03d}", "sft", f"STATUS_{i:03d}", i)
        for i in range(count)
    ]


def demo_jobs(now: float, rng: random.Random) -> list[SimJob]:
    """A lived-in account: ended history from past days plus jobs in flight."""
    day = 86400.0
    plan = [
        ("qwen3-14b", "sft", 6.0 * day, "SUCCEEDED", 279808),
        ("qwen3-14b", "sft", 5.2 * day, "SUCCEEDED", 412160),
        ("qwen3-14b", "efficient_sft", 4.1 * day, "FAILED", None),
        ("qwen3-8b", "sft", 3.5 * day, "SUCCEEDED", 98304),
        ("qwen3-8b", "dpo_lora", 2.2 * day, "CANCELED", 0),
        ("qwen2.5-7b-instruct", "efficient_sft", 1.4 * day, "SUCCEEDED", 53248),
        ("qwen3-8b", "sft", 1.1 * day, "SUCCEEDED", 131072),
    ]
    jobs = []
    for model, ttype, age, outcome, usage in plan:
        created = now - age
        jobs.append(
            SimJob(
                _job_id(created, rng), model, ttype, created, 60, 600, 3600 * 1.5, outcome, usage
            )
        )
    # In flight now: one running, one queuing, one pending.
    for model, ttype, age in (
        ("qwen3-14b", "sft", 200.0),
        ("qwen3-8b", "efficient_sft", 40.0),
        ("qwen2.5-7b-instruct", "dpo_lora", 5.0),
    ):
        created = now - age
        jobs.append(
            SimJob(
                _job_id(created, rng), model, ttype, created, usage=rng.randrange(50_000, 400_000)
            )
        )
    return jobs


#: The job of each problem scenario whose log shows its problem.
PROBLEM_JOBS = {
    "diverging": "ft-diverging",
    "stalled": "ft-stalled",
    "overfitting": "ft-overfitting",
}
#: The healthy running job each problem scenario has beside the problem job.
HEALTHY_JOB = "ft-healthy"


def problem_jobs(scenario: str, now: float) -> list[SimJob]:
    """A small account for one training problem, its problem job RUNNING for hours.

    ``diverging``: the loss turned ``inf`` 20 minutes ago, ``nan`` on every record since.
    ``stalled``: the log stopped 40 minutes ago on a timestamped line and never grows.
    ``overfitting``: eval loss lowest at epoch 3 of 60, then rising (from epoch 5 on, more
    than 10 % above that minimum). Beside it: two ended jobs and a healthy running job
    whose log grows every 3 seconds.
    """
    hour, day = 3600.0, 86400.0
    jobs = [
        SimJob("ft-done", "qwen3-8b", "sft", now - 2 * day, 60, 300, 1.5 * hour, usage=131072),
        SimJob("ft-failed", "qwen3-14b", "sft", now - day, 60, 300, 0.5 * hour, "FAILED", None),
        SimJob(HEALTHY_JOB, "qwen3-8b", "sft", now - 600, 20, 40, 8 * hour, usage=98304),
    ]
    job_id, model, started = PROBLEM_JOBS[scenario], "qwen3-14b", now - 2 * hour
    if scenario == "diverging":
        problem = SimJob(job_id, model, "sft", started, run_s=12 * hour, log_every=20)
        problem.diverge_at = now - 20 * 60
    elif scenario == "stalled":
        problem = SimJob(job_id, model, "sft", started, run_s=12 * hour, log_every=20)
        problem.stall_at = now - 40 * 60
    else:
        problem = SimJob(job_id, model, "efficient_sft", now - hour, run_s=6 * hour, log_every=30)
        problem.overfit_after = 3
        problem.extra["hyper_parameters"] = {**DEFAULT_HYPER_PARAMETERS, "n_epochs": 60}
    return [*jobs, problem]


BULK_MODELS = ("qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct", "qwen3-32b")
BULK_TYPES = ("sft", "efficient_sft", "dpo_lora")
#: The ended jobs' outcomes, in turn down the list: 3 in 5 succeeded.
BULK_OUTCOMES = ("SUCCEEDED", "SUCCEEDED", "FAILED", "SUCCEEDED", "CANCELED")
#: Seconds between two bulk jobs' creation: whole seconds, so every ``create_time`` differs.
BULK_SPACING = 600


def bulk_jobs(now: float, count: int, active: int) -> tuple[list[SimJob], list[SimJob]]:
    """``count`` jobs, newest first: the ``active`` newest waiting, the rest ended.

    Returns (waiting, ended). The waiting jobs alternate PENDING and QUEUING and stay so
    (they never run, so an exporter reads no training log and the list's requests are
    measured alone); the ended ones are SUCCEEDED (with usage), FAILED or CANCELED in
    turn, over several models and training types. ``create_time`` falls by
    ``BULK_SPACING`` seconds from one job to the next, so the order is strict to the
    second. A job's number counts up in creation order (the oldest is ``ft-bulk-000000``).
    Deterministic: the same arguments give the same jobs, whatever the time but ``now``.
    """
    newest = math.floor(now) - 60
    waiting: list[SimJob] = []
    ended: list[SimJob] = []
    forever = 1e12  # seconds: a waiting job never reaches its next status
    for i in range(count):
        created = float(newest - i * BULK_SPACING)
        job_id = f"ft-bulk-{count - 1 - i:06d}"
        model, ttype = BULK_MODELS[i % len(BULK_MODELS)], BULK_TYPES[i % len(BULK_TYPES)]
        if i < active:
            pending, queue = (forever, 0.0) if i % 2 == 0 else (0.0, forever)
            waiting.append(SimJob(job_id, model, ttype, created, pending, queue, forever))
            continue
        outcome = BULK_OUTCOMES[i % len(BULK_OUTCOMES)]
        usage = 1000 + (i * 7919) % 400_000 if outcome == "SUCCEEDED" else None
        # Ended within the spacing: 1 min pending, 2 min queued, 5 min running.
        ended.append(SimJob(job_id, model, ttype, created, 60.0, 120.0, 300.0, outcome, usage))
    return waiting, ended


class _Listing(Sequence[dict[str, Any]]):
    """The live jobs' dicts followed by the frozen ended ones, without copying either.

    A page is a slice: it costs its own length, never the account's size.
    """

    def __init__(self, head: list[dict[str, Any]], tail: list[dict[str, Any]]) -> None:
        self._head = head
        self._tail = tail

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        size, cut = len(self), len(self._head)
        if isinstance(index, slice):
            start, stop, step = index.indices(size)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            stop = max(start, stop)
            return self._head[start:stop] + self._tail[max(start - cut, 0) : max(stop - cut, 0)]
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("listing index out of range")
        return self._head[index] if index < cut else self._tail[index - cut]


@dataclass
class Fault:
    mode: str = "none"
    count: int | None = None  # requests left to affect; None = until cleared
    delay: float = 0.0
    retry_after: str | None = None
    message: str | None = None  # the API's error message, to test what reaches the log
    endpoint: str = "list"  # which requests it hits: "list", "logs" or "all"


class SimulatedAccount:
    """The account's jobs and the fault switch, shared by all request threads."""

    def __init__(
        self,
        scenario: str = "demo",
        *,
        tz: tzinfo = UTC8,
        clock: Callable[[], float] = time.time,
        seed: int = 7,
        new_job_every: float = 120.0,
        max_active_quota: int = 12,
        jobs: int = BULK_JOBS,
        active: int = BULK_ACTIVE,
    ) -> None:
        self.tz = tz
        self.clock = clock
        self.scenario = scenario
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.fault = Fault()
        self.requests = 0
        self.list_requests = 0
        self.log_requests = 0
        self.log_requests_by_job: dict[str, int] = {}
        self.connections = 0  # TCP connections accepted: keep-alive reuse is visible
        self.request_times: list[float] = []  # time.monotonic() of recent list requests
        #: (arrival, fault mode) of recent list requests: gaps between faulted attempts.
        self.request_log: list[tuple[float, str]] = []
        self.new_job_every = new_job_every
        self.max_active_quota = max_active_quota
        now = clock()
        self._last_spawn = now
        #: ``bulk``: the ended jobs' dicts, built once, newest first (all, and per model).
        self._frozen: list[dict[str, Any]] | None = None
        self._frozen_by_model: dict[str, list[dict[str, Any]]] = {}
        if scenario == "bulk":
            _check_bulk(jobs, active)
            self.jobs, ended = bulk_jobs(now, jobs, active)
            self._frozen = [job.to_api(now, tz) for job in ended]
            for raw in self._frozen:
                self._frozen_by_model.setdefault(raw["model"], []).append(raw)
        elif scenario == "static":
            self.jobs = static_jobs()
        elif scenario == "empty":
            self.jobs = []
        elif scenario == "hostile":
            self.jobs = hostile_jobs()
        elif scenario == "sprawl":
            self.jobs = sprawl_jobs()
        elif scenario == "demo":
            self.jobs = demo_jobs(now, self._rng)
        elif scenario in PROBLEM_JOBS:
            self.jobs = problem_jobs(scenario, now)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")

    def _evolve(self, now: float) -> None:
        """Demo only: new jobs arrive; old successes are deleted to stay under the limit."""
        if self.scenario != "demo":
            return
        models = ("qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct")
        types = ("sft", "efficient_sft", "dpo_lora")
        while now - self._last_spawn >= self.new_job_every:
            self._last_spawn += self.new_job_every
            created = self._last_spawn
            self.jobs.append(
                SimJob(
                    _job_id(created, self._rng),
                    self._rng.choice(models),
                    self._rng.choice(types),
                    created,
                    usage=self._rng.randrange(50_000, 400_000),
                )
            )
        counted = [
            j
            for j in self.jobs
            if j.fixed is None and j.status_at(now)[0] not in ("FAILED", "CANCELED")
        ]
        excess = len(counted) - self.max_active_quota
        if excess > 0:
            done = sorted(
                (j for j in counted if j.status_at(now)[0] == "SUCCEEDED"), key=lambda j: j.created
            )
            for job in done[:excess]:
                self.jobs.remove(job)

    def listing(self, now: float, model: str | None) -> Sequence[dict[str, Any]]:
        """Every job (of ``model``) as the API lists them, newest first.

        ``bulk`` keeps its ended jobs frozen after the live ones (which are all newer): a
        page of 50,000 jobs costs the page and the live jobs, not the whole account.
        """
        with self._lock:
            self._evolve(now)
            jobs = [j for j in self.jobs if model is None or j.model == model]
            ordered = sorted(jobs, key=lambda j: j.created, reverse=True)
            live = [j.to_api(now, self.tz) for j in ordered]
            if self._frozen is None:
                return live
            frozen = self._frozen if model is None else self._frozen_by_model.get(model, [])
            return _Listing(live, frozen)

    def add_jobs(self, raw_jobs: list[dict[str, Any]]) -> None:
        with self._lock:
            for raw in raw_jobs:
                self.jobs.append(
                    SimJob(
                        job_id=str(raw.get("job_id", "")),
                        model=str(raw.get("model", "")),
                        training_type=str(raw.get("training_type", "sft")),
                        created=self.clock(),
                        fixed=dict(raw),
                    )
                )

    def fill_quota(self, target: int) -> int:
        """Add SUCCEEDED jobs until ``target`` jobs count against the limit."""
        now = self.clock()
        counted = sum(
            1
            for job in self.listing(now, None)
            if str(job.get("status", "")).upper() not in ("FAILED", "CANCELED")
        )
        missing = max(target - counted, 0)
        stamp = _fmt(now - 3600, self.tz)
        self.add_jobs(
            [
                {
                    "job_id": f"ft-fill-{i:03d}",
                    "job_name": f"fill-{i}",
                    "status": "SUCCEEDED",
                    "model": "qwen3-8b",
                    "base_model": "qwen3-8b",
                    "training_type": "sft",
                    "create_time": stamp,
                    "end_time": stamp,
                    "usage": 1000,
                    "finetuned_output": f"qwen3-8b-fill-{i}",
                }
                for i in range(missing)
            ]
        )
        return missing

    def _job(self, job_id: str) -> SimJob | None:
        return next((job for job in self.jobs if job.job_id == job_id), None)

    def log(self, job_id: str) -> list[str] | None:
        """The job's log as it stands now; None for a job the account does not have."""
        with self._lock:
            now = self.clock()
            self._evolve(now)
            job = self._job(job_id)
            return None if job is None else job.log_at(now, self.tz)

    def append_log(self, job_id: str, lines: list[str]) -> int | None:
        """Appends lines to a job's log; its new total, or None for an unknown job."""
        with self._lock:
            now = self.clock()
            job = self._job(job_id)
            if job is None:
                return None
            job.appended.extend(LogLine(now, line) for line in lines)
            return len(job.log_at(now, self.tz))

    def patch_job(self, job_id: str, fields: dict[str, Any], created: float | None) -> bool:
        """Sets listed fields of a job and, with ``created``, its place; False if unknown."""
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return False
            (job.fixed if job.fixed is not None else job.extra).update(fields)
            if created is not None:
                job.created = created
            return True

    def delete_job(self, job_id: str) -> bool:
        """Deletes a job (it leaves the list); False if unknown."""
        with self._lock:
            job = self._job(job_id)
            if job is None:
                return False
            self.jobs.remove(job)
            return True

    def take_fault(self, endpoint: str) -> Fault:
        """The fault for this request to ``endpoint`` (``list``, ``logs``), counting it down."""
        with self._lock:
            fault = self.fault
            if fault.mode == "none" or fault.endpoint not in (endpoint, "all"):
                return Fault()
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.fault = Fault()
            return replace(fault)


def _check_bulk(jobs: object, active: object) -> None:
    """``bulk``'s sizes: whole numbers, 0 <= active <= jobs <= MAX_BULK_JOBS."""
    for name, number in (("jobs", jobs), ("active", active)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"bulk: {name} must be a whole number, not {number!r}")
    assert isinstance(jobs, int) and isinstance(active, int)
    if not 0 <= jobs <= MAX_BULK_JOBS:
        raise ValueError(f"bulk: jobs must be 0 to {MAX_BULK_JOBS:,}, not {jobs:,}")
    if not 0 <= active <= jobs:
        raise ValueError(f"bulk: active must be 0 to jobs ({jobs:,}), not {active:,}")


def _doctored_total(fault: Fault, total: int) -> int:
    """``output.total`` as the ``total_high`` / ``total_low`` faults misreport it."""
    if fault.mode == "total_high":
        return total + 50
    if fault.mode == "total_low":
        return max(total - 5, 0)
    return total


def _query_int(query: dict[str, list[str]], name: str, default: int) -> int | None:
    """A query parameter as an integer (ASCII digits, optional minus); None if it is not one.

    Beyond 18 digits the value is taken as +-10**18: past any end, and no int() of
    thousands of digits (which Python refuses).
    """
    given = query.get(name)
    if not given:
        return default
    match = re.fullmatch(r"(-?)([0-9]+)", given[0])
    if match is None:
        return None
    sign = -1 if match[1] else 1
    digits = match[2].lstrip("0") or "0"
    return sign * (int(digits) if len(digits) <= 18 else 10**18)


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.account._lock:
            self.account.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("simulator: connection from %s ended badly", client_address)

    def __init__(
        self, address: tuple[str, int], account: SimulatedAccount, key: str, latency: float = 0.0
    ) -> None:
        self.account = account
        self.key = key
        #: Seconds every API answer waits first, as a distant region does (benchmarks).
        self.latency = latency
        super().__init__(address, _Handler)

    scheme = "http"

    def enable_tls(self, cert_file: str, key_file: str) -> None:
        """Serve HTTPS, so tests can check certificate verification and proxies."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="simulator", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    server_version = "dashscope-simulator"
    # Headers and body go out in separate writes; without TCP_NODELAY a keep-alive
    # client waits out the peer's delayed ACK (~40 ms) on every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator %s", format % args)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _raw(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        rid = f"sim-{self.server.account.requests:08d}"
        self._json(status, {"code": code, "message": message, "request_id": rid}, headers)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        account = self.server.account
        if parts.path == "/_sim/stats":
            with account._lock:
                stats = {
                    "requests": account.requests,
                    "list_requests": account.list_requests,
                    "log_requests": account.log_requests,
                    "log_requests_by_job": dict(account.log_requests_by_job),
                    "connections": account.connections,
                    "request_times": account.request_times[-200:],
                    "request_log": [
                        {"at": at, "fault": mode} for at, mode in account.request_log[-200:]
                    ],
                    "fault": account.fault.mode,
                    "fault_endpoint": account.fault.endpoint,
                }
            self._json(200, stats)
            return
        with account._lock:
            account.requests += 1
        if self.server.latency:
            time.sleep(self.server.latency)
        path = parts.path.rstrip("/")
        logs = LOGS_PATH.fullmatch(path)
        if path == API_PATH:
            self._list(parse_qs(parts.query))
        elif logs is not None:
            job_id = unquote(logs[1], errors="surrogatepass")
            with account._lock:
                account.log_requests += 1
                by_job = account.log_requests_by_job
                by_job[job_id] = by_job.get(job_id, 0) + 1
            self._logs(job_id, parse_qs(parts.query, keep_blank_values=True))
        else:
            self._error(404, "NotFound", "Not Found!")

    def _admitted(self, fault: Fault) -> bool:
        """Checks the key and applies the request's fault; False when that answered it."""
        authorized = self.headers.get("Authorization") == f"Bearer {self.server.key}"
        if fault.mode == "bad_key" or not authorized:
            message = fault.message if fault.mode == "bad_key" else None
            self._error(401, "InvalidApiKey", message or "Invalid API-key provided.")
            return False
        if fault.delay or fault.mode == "slow":
            time.sleep(fault.delay)
        return not self._faulted(fault)

    def _list(self, query: dict[str, list[str]]) -> None:
        account = self.server.account
        arrived = time.monotonic()
        with account._lock:
            account.list_requests += 1
            account.request_times.append(arrived)
            del account.request_times[:-200]
        fault = account.take_fault("list")
        with account._lock:
            account.request_log.append((arrived, fault.mode))
            del account.request_log[:-200]
        if not self._admitted(fault):
            return
        try:
            page_no = int(query.get("page_no", ["1"])[0])
            page_size = int(query.get("page_size", ["10"])[0])
        except ValueError:
            self._error(400, "InvalidParameter", "page_no and page_size must be integers")
            return
        if page_no < 1 or not 1 <= page_size <= 100:
            self._error(400, "InvalidParameter", "page_size must be between 1 and 100")
            return
        model = query.get("model", [None])[0]
        jobs = account.listing(account.clock(), model)
        if fault.mode == "endless":
            page_no = 1
        start = (page_no - 1) * page_size
        output: dict[str, Any] = {
            "page_no": page_no,
            "page_size": page_size,
            "total": _doctored_total(fault, len(jobs)),
            "jobs": jobs[start : start + page_size],
        }
        if fault.mode == "jobs_null":
            output["jobs"] = None
        elif fault.mode == "endless":
            output["total"] = 1_000_000
        self._json(200, {"request_id": f"sim-{account.requests:08d}", "output": output})

    def _logs(self, job_id: str, query: dict[str, list[str]]) -> None:
        """The job log endpoint, as the facts sheet documents it.

        A fault for ``logs`` or ``all`` hits it like the list; of the list's own faults,
        ``jobs_null`` makes ``logs`` null, ``total_high``/``total_low`` misreport ``total``
        and ``endless`` does nothing here.
        """
        account = self.server.account
        fault = account.take_fault("logs")
        if not self._admitted(fault):
            return
        offset = _query_int(query, "offset", 0)
        if offset is None or offset < 0:
            self._error(400, "InvalidParameter", "offset must be an integer of 0 or more")
            return
        count = _query_int(query, "line", DEFAULT_LOG_LINES)
        if count is None or not 1 <= count <= MAX_LOG_LINES:
            self._error(400, "InvalidParameter", "line must be an integer from 1 to 1000")
            return
        lines = account.log(job_id)
        if lines is None:
            self._error(404, "NotFound", "The fine-tune job does not exist.")
            return
        output: dict[str, Any] = {
            "total": _doctored_total(fault, len(lines)),
            "logs": None if fault.mode == "jobs_null" else lines[offset : offset + count],
        }
        self._json(200, {"request_id": f"sim-{account.requests:08d}", "output": output})

    def _faulted(self, fault: Fault) -> bool:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        if fault.mode == "throttle":
            message = fault.message or "Too many requests, please retry later."
            self._error(429, "Throttling", message, headers)
        elif fault.mode == "error500":
            self._error(500, "InternalError", fault.message or "Internal server error!")
        elif fault.mode == "truncated":
            self._raw(
                200, b'{"request_id": "sim-trunc", "output": {"page_no": 1, "jo', "application/json"
            )
        elif fault.mode == "html502":
            self._raw(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif fault.mode == "empty502":
            self._raw(502, b"", "text/plain")
        elif fault.mode == "bad_utf8":
            self._raw(
                200, b'{"request_id": "sim-\xff\xfe", "output": {"jobs": []}}', "application/json"
            )
        elif fault.mode == "reset":
            self._reset_mid_body()
        elif fault.mode == "huge":
            self._huge()
        else:
            return False
        return True

    def _reset_mid_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "4096")
        self.end_headers()
        self.wfile.write(b'{"request_id": "sim-reset", "output": {"jobs": [')
        self.wfile.flush()
        # SO_LINGER 0: close() sends a TCP reset instead of a clean FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _huge(self) -> None:
        head = b'{"request_id": "sim-huge", "output": {"total": 0, "jobs": []}, "pad": "'
        tail = b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(head) + HUGE_BYTES + len(tail)))
        self.end_headers()
        try:
            self.wfile.write(head)
            block = b"x" * (1024 * 1024)
            for _ in range(HUGE_BYTES // len(block)):
                self.wfile.write(block)
            self.wfile.write(tail)
        except OSError:
            self.close_connection = True  # the client stopped reading, as it should

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        account = self.server.account
        try:
            body = self._body()
        except ValueError:
            self._json(400, {"error": "body is not JSON"})
            return
        if path == "/_sim/fault":
            mode = body.get("mode", "none")
            if mode not in FAULT_MODES:
                self._json(400, {"error": f"unknown mode {mode!r}", "modes": FAULT_MODES})
                return
            endpoint = body.get("endpoint", "list")
            if endpoint not in FAULT_ENDPOINTS:
                error = f"unknown endpoint {endpoint!r}"
                self._json(400, {"error": error, "endpoints": FAULT_ENDPOINTS})
                return
            with account._lock:
                account.fault = Fault(
                    mode,
                    body.get("count"),
                    float(body.get("delay", 0)),
                    body.get("retry_after"),
                    body.get("message"),
                    endpoint,
                )
            self._json(200, {"fault": mode, "endpoint": endpoint})
        elif path == "/_sim/jobs":
            if "fill_quota" in body:
                added = account.fill_quota(int(body["fill_quota"]))
            else:
                jobs = body.get("jobs", [])
                account.add_jobs(jobs)
                added = len(jobs)
            self._json(200, {"added": added})
        elif path == "/_sim/logs":
            self._append_log(body)
        else:
            self._json(404, {"error": "no such control endpoint"})

    def _append_log(self, body: Any) -> None:
        if not isinstance(body, dict):
            body = {}
        job_id, lines = body.get("job_id"), body.get("lines")
        if not isinstance(job_id, str) or not (
            isinstance(lines, list) and all(isinstance(line, str) for line in lines)
        ):
            self._json(400, {"error": "expected {job_id: string, lines: [string, ...]}"})
            return
        total = self.server.account.append_log(job_id, lines)
        if total is None:
            self._json(404, {"error": f"no job {job_id!r}"})
        else:
            self._json(200, {"total": total})

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_sim/fault":
            with self.server.account._lock:
                self.server.account.fault = Fault()
            self._json(200, {"fault": "none"})
        elif path.startswith(SIM_JOB_PATH):
            job_id = unquote(path[len(SIM_JOB_PATH) :])
            if self.server.account.delete_job(job_id):
                self._json(200, {"deleted": job_id})
            else:
                self._json(404, {"error": f"no job {job_id!r}"})
        else:
            self._json(404, {"error": "no such control endpoint"})

    def do_PATCH(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith(SIM_JOB_PATH):
            self._json(404, {"error": "no such control endpoint"})
            return
        job_id = unquote(path[len(SIM_JOB_PATH) :])
        try:
            body = self._body()
        except ValueError:
            body = None
        fields = body.get("fields", {}) if isinstance(body, dict) else None
        created = body.get("created") if isinstance(body, dict) else None
        if not isinstance(fields, dict) or not (
            created is None or (isinstance(created, int | float) and not isinstance(created, bool))
        ):
            self._json(400, {"error": "expected {fields: {...}, created: seconds}"})
            return
        if self.server.account.patch_job(job_id, fields, created):
            self._json(200, {"patched": job_id})
        else:
            self._json(404, {"error": f"no job {job_id!r}"})


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    key: str = "sk-simulator",
    scenario: str = "demo",
    **account_options: Any,
) -> SimulatorServer:
    """Start a simulator in a background thread and return it (``.url``, ``.stop()``)."""
    server = SimulatorServer((host, port), SimulatedAccount(scenario, **account_options), key)
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ft_exporter.simulator",
        description="Simulator of the DashScope fine-tune list API",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--key", default="sk-simulator", help="the only API key accepted")
    parser.add_argument("--scenario", choices=SCENARIOS, default="demo")
    parser.add_argument(
        "--new-job-every", type=float, default=120.0, help="demo: seconds between new jobs"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help=f"bulk: jobs in the account (default {BULK_JOBS}, at most {MAX_BULK_JOBS})",
    )
    parser.add_argument(
        "--active",
        type=int,
        metavar="K",
        help=f"bulk: the newest K jobs are waiting to run, the rest ended (default {BULK_ACTIVE})",
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's key (PEM)")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay every API answer by this long (not /_sim/ control requests)",
    )
    args = parser.parse_args(argv)
    if args.scenario != "bulk" and (args.jobs is not None or args.active is not None):
        parser.error("--jobs and --active apply to --scenario bulk only")
    try:
        account = SimulatedAccount(
            args.scenario,
            new_job_every=args.new_job_every,
            jobs=BULK_JOBS if args.jobs is None else args.jobs,
            active=BULK_ACTIVE if args.active is None else args.active,
        )
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = SimulatorServer((args.host, args.port), account, args.key, args.latency)
    if args.tls_cert and args.tls_key:
        server.enable_tls(args.tls_cert, args.tls_key)
    print(f"simulator listening on {server.url}{API_PATH} (scenario {args.scenario})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
