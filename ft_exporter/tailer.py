"""Reads the training logs of running jobs after each list sweep, never a line twice.

The API has no cheaper way to learn whether a log grew than asking for the lines after
the ones already read: the answer holds the new lines and the new ``total`` at once. So
in steady state a tailed job costs exactly one request per sweep. A job seen for the
first time with a long log is read from its tail (one request to learn ``total``, one
for the last ``max_lines`` lines), and a job that falls more than ``max_lines`` behind
skips to its tail the same way: the newest values matter, not every line.

A failed log request never fails the sweep, never marks the exporter down and never
withdraws anything: the job keeps the values it had, and the next sweep asks again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import tzinfo
from types import MappingProxyType
from typing import Protocol

from ft_exporter.client import (
    LOGS,
    MAX_LOG_LINES_PER_REQUEST,
    SWEEP_TIMEOUT,
    ApiError,
    Cancelled,
    LogPage,
)
from ft_exporter.logs import FailureLog, crash_key
from ft_exporter.model import Job, Snapshot, Training
from ft_exporter.trainlog import classify, line_time

log = logging.getLogger(__name__)

#: Default of --logs.max-jobs: the account's limit of running-or-succeeded jobs.
DEFAULT_MAX_JOBS = 20
#: Default of --logs.max-lines-per-sweep: one request's worth.
DEFAULT_MAX_LINES = MAX_LOG_LINES_PER_REQUEST
#: A log read that keeps failing after its job ended is given up after this many sweeps.
FINAL_ATTEMPTS = 3
#: Ended jobs whose last values are kept (while the job is listed) for their series.
KEEP_FINISHED = 100
_WAITING = frozenset({"PENDING", "QUEUING"})


class LogSource(Protocol):
    """What the tailer needs of the API client."""

    def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage: ...

    def time_left(self) -> float: ...

    def throttled_for(self, endpoint: str) -> float: ...


class _StopReading(Exception):
    """No more log requests in this sweep (deadline reached, or throttled)."""


@dataclass(slots=True)
class _Tail:
    """One job's log as far as it has been read; mutable, owned by the poller thread."""

    running_since: float | None
    offset: int = 0
    total: int = 0
    read_once: bool = False
    train_loss: float | None = None
    eval_loss: float | None = None
    eval_loss_min: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    last_growth: float | None = None
    unparsed: int = 0
    final_attempts: int = 0
    finished_at: float | None = None

    def training(self) -> Training:
        return Training(
            train_loss=self.train_loss,
            eval_loss=self.eval_loss,
            eval_loss_min=self.eval_loss_min,
            learning_rate=self.learning_rate,
            epoch=self.epoch,
            log_lines=self.total,
            last_growth=self.last_growth,
            unparsed_lines=self.unparsed,
            running_since=self.running_since,
        )

    def take(self, values: Mapping[str, float]) -> None:
        """The values of one record line, in the order the log wrote them."""
        if "loss" in values:
            self.train_loss = values["loss"]
        if "train_loss" in values:  # the summary line at the end of a run
            self.train_loss = values["train_loss"]
        if "learning_rate" in values:
            self.learning_rate = values["learning_rate"]
        if "eval_loss" in values:
            self.eval_loss = values["eval_loss"]
            if math.isfinite(self.eval_loss) and (
                self.eval_loss_min is None or self.eval_loss < self.eval_loss_min
            ):
                self.eval_loss_min = self.eval_loss
        epoch = values.get("epoch")
        if epoch is not None and math.isfinite(epoch):
            self.epoch = epoch if self.epoch is None else max(self.epoch, epoch)


class LogTailer:
    """Follows the logs of up to ``max_jobs`` RUNNING jobs, and reads each ended one once more."""

    def __init__(
        self,
        client: LogSource,
        *,
        tz: tzinfo,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_lines: int = DEFAULT_MAX_LINES,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._tz = tz
        self.max_jobs = max_jobs
        self.max_lines = max(max_lines, 1)
        self._clock = clock
        self._tails: dict[str, _Tail] = {}
        #: Jobs that were PENDING or QUEUING in the previous sweep: a start seen happening.
        self._waiting: frozenset[str] = frozenset()
        self._failures = FailureLog(log, monotonic, logging.WARNING)
        self._over_cap_logged = 0

    @property
    def enabled(self) -> bool:
        return self.max_jobs > 0

    def follow(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot with what the logs say about its jobs; reads the new lines first."""
        if not self.enabled:
            return snapshot
        try:
            self._read_logs(snapshot)
        except Cancelled:
            raise
        except Exception as err:  # a bug here must not cost the list its sweep
            self._failures.failed(
                crash_key(err),
                "reading training logs failed, keeping their last values: %s",
                "reading training logs still failing (%d times in a row): %s",
                f"unexpected {type(err).__name__}: {err}",
                err,
            )
        listed = {job.job_id for job in snapshot.jobs}
        training = {
            job_id: tail.training() for job_id, tail in self._tails.items() if job_id in listed
        }
        return replace(snapshot, training=MappingProxyType(training))

    def _read_logs(self, snapshot: Snapshot) -> None:
        now = self._clock()
        listed = {job.job_id: job for job in snapshot.jobs}
        for job_id in [j for j in self._tails if j not in listed]:
            del self._tails[job_id]  # deleted, or gone from the list: forgotten
        ending = [
            listed[job_id]
            for job_id, tail in self._tails.items()
            if tail.finished_at is None and listed[job_id].status != "RUNNING"
        ]
        running = self._tailed(listed.values(), now)
        self._waiting = frozenset(j.job_id for j in listed.values() if j.status in _WAITING)
        ok = True
        try:
            for job in ending:
                ok = self._read_final(job, now) and ok
            for job in running:
                ok = self._read(job, self._tails[job.job_id], now) and ok
        except _StopReading as stop:
            ok = False
            self._failures.failed(
                (str(stop),),
                "training logs not all read in this sweep: %s",
                "training logs still not all read (%d sweeps in a row): %s",
                str(stop),
            )
        if ok:
            failures = self._failures.recovered()
            if failures:
                log.info("training logs read again after %d failed sweep(s)", failures)
        self._forget_oldest_finished()

    def _tailed(self, jobs: Iterable[Job], now: float) -> list[Job]:
        """The RUNNING jobs to read: those already followed first, then the newest."""
        running = [j for j in jobs if j.status == "RUNNING" and j.tailable]
        followed = [j for j in running if j.job_id in self._tails]
        for job in followed:
            self._tails[job.job_id].finished_at = None  # back to RUNNING: follow again
        new = sorted(
            (j for j in running if j.job_id not in self._tails),
            key=lambda j: (j.created or 0.0, j.job_id),
            reverse=True,
        )
        chosen = followed[: self.max_jobs] + new[: max(self.max_jobs - len(followed), 0)]
        for job in chosen:
            if job.job_id not in self._tails:
                since = now if job.job_id in self._waiting else None
                self._tails[job.job_id] = _Tail(running_since=since)
        left_out = len(running) - len(chosen)
        if left_out != self._over_cap_logged:
            self._over_cap_logged = left_out
            if left_out:
                log.warning(
                    "%d running job(s) not followed: over --logs.max-jobs=%d",
                    left_out,
                    self.max_jobs,
                )
        return chosen

    def _read_final(self, job: Job, now: float) -> bool:
        """The job has ended: read its last lines once, then stop asking."""
        tail = self._tails[job.job_id]
        tail.final_attempts += 1
        ok = self._read(job, tail, now)
        if ok or tail.final_attempts >= FINAL_ATTEMPTS:
            tail.finished_at = now
        return ok

    def _read(self, job: Job, tail: _Tail, now: float) -> bool:
        """Read what is new in one job's log; False when a request failed."""
        try:
            self._read_new_lines(job, tail, now)
        except ApiError as err:
            if err.code == SWEEP_TIMEOUT:  # no request made: stop, as _check_window does
                raise _StopReading(
                    "the sweep deadline (--poll.sweep-timeout) was reached"
                ) from None
            self._failures.failed(
                (err.code, err.http_status),
                "training log not read, keeping its last values: %s",
                "training logs still not read (%d times in a row): %s",
                f"job {job.job_id}: {err}",
            )
            if err.code == "Throttling":
                raise _StopReading("the log endpoint is throttling") from None
            return False
        return True

    def _read_new_lines(self, job: Job, tail: _Tail, now: float) -> None:
        budget = self.max_lines
        offset = tail.offset
        jumped = False
        newest: float | None = None
        total = tail.total
        while budget > 0:
            self._check_window()
            want = min(budget, MAX_LOG_LINES_PER_REQUEST)
            page = self._client.fetch_log(job.job_id, offset, want)
            total = page.total
            if total < offset:
                log.warning(
                    "training log of job %s shrank from %d to %d lines; reading on from there",
                    job.job_id,
                    offset,
                    total,
                )
                offset = total
                break
            lines = page.lines[: min(want, total - offset)]
            if not jumped and total - offset > budget and offset + len(lines) < total:
                # Too far behind to read every new line in this sweep: read the newest.
                jumped = True
                offset = total - budget
                continue
            for line in lines:
                record = classify(line)[1]
                if record is None:
                    tail.unparsed += 1
                else:
                    tail.take(record.values)
                if not tail.read_once:
                    stamp = line_time(line, self._tz)
                    if stamp is not None and (newest is None or stamp > newest):
                        newest = stamp
            offset += len(lines)
            budget -= len(lines)
            if offset >= total or not lines:
                break
        if not tail.read_once:
            tail.last_growth = self._first_growth(job, newest, now)
        elif total > tail.total:
            tail.last_growth = now
        tail.read_once = True
        tail.offset = offset
        tail.total = total

    @staticmethod
    def _first_growth(job: Job, newest: float | None, now: float) -> float:
        """On first sight: the newest time a line carries, within [created, now]; else now."""
        if newest is None:
            return now
        low = job.created if job.created is not None else -math.inf
        return min(max(newest, low), now)

    def _check_window(self) -> None:
        if self._client.time_left() <= 0:
            raise _StopReading("the sweep deadline (--poll.sweep-timeout) was reached")
        wait = self._client.throttled_for(LOGS)
        if wait > 0:
            raise _StopReading(f"honouring Retry-After of the log endpoint for {wait:.0f}s more")

    def _forget_oldest_finished(self) -> None:
        finished = sorted(
            (tail.finished_at, job_id)
            for job_id, tail in self._tails.items()
            if tail.finished_at is not None
        )
        for _, job_id in finished[: max(len(finished) - KEEP_FINISHED, 0)]:
            del self._tails[job_id]
