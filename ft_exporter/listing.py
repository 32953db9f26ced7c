"""Reading one listing of the job list, page by page, and what the last sweep left to compare.

No HTTP here: the client fetches the pages a reader asks for and hands them over. A
:class:`FullRead` reads every page, up to ``total``; an :class:`IncrementalRead` reads from
page 1 only as far as the cache of the last sweep says it must, and gives up (the client
then reads in full, in the same sweep) on anything the cache cannot vouch for. Either way
the listing it yields is the one a full sweep would give at that moment.

Why an incremental read is exact: while the list is newest first (checked on every job
read, and on the whole list by each full sweep), a new job can only appear at the top, and
an ended job (SUCCEEDED, FAILED, CANCELED) never changes. So the pages down to the last job
that is new or was not ended at the last sweep hold every change, and the cached jobs below
them are still right when ``total`` is the jobs known plus the new ones (a deletion below
shows as a ``total`` one short). What this cannot see (a deletion and an insertion below
the pages read together, a changed ended job below them) a full sweep finds every
``--poll.full-sweep-interval``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from itertools import chain, islice
from typing import Any, Protocol, TypeVar

from ft_exporter.model import Job, JobParseError, parse_job

log = logging.getLogger(__name__)

#: However large an account, a sweep never requests more pages than this.
HARD_PAGE_CAP = 1000
#: Consecutive pages without a new job_id after which a list is deemed to repeat.
MAX_STALE_PAGES = 3

# Why the next sweep of a listing reads every page: the kind, logged once until an
# incremental sweep works again.
ORDER = "order"  # not newest first: create_time increases, or a new job below a known one
UNDATED = "undated"  # a job without create_time: the order cannot be told
NO_TOTAL = "no-total"  # the API gave no total: the cached rest cannot be vouched for
TOTAL = "total"  # total is not the jobs known plus the new ones
MISSING = "missing"  # a known job is missing or moved
CHANGED = "changed"  # a job that had ended changed
MALFORMED = "malformed"  # entries without a usable job_id: their place cannot be checked
REPEATED = "repeated"  # a job listed twice (the list moved while it was read)


class Rejected(Exception):
    """The listing as a whole is not to be published (the client counts an InvalidResponse)."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """Why a listing must be read in full: ``kind`` (one of the constants) and what was seen."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing as the last sweep read it: the jobs in list order, shared with the snapshot."""

    jobs: tuple[Job, ...]
    #: When the last full sweep of it started (the client's monotonic clock).
    full_at: float
    malformed: int = 0
    #: Why the next sweep must read every page; None when it may read only the changes.
    blocked: Fallback | None = None
    #: Position of the last job not ended, -1 when every job has ended.
    last_active: int = -1


def last_active(jobs: Sequence[Job]) -> int:
    """Position of the last job that has not ended, -1 when none."""
    for index in range(len(jobs) - 1, -1, -1):
        if not jobs[index].terminal:
            return index
    return -1


def merge(listings: Sequence[Listing]) -> tuple[Job, ...]:
    """The jobs of every listing, de-duplicated by job_id: first place, last value.

    One listing is returned as it is (no copy): the common case of no model filter.
    """
    if len(listings) == 1:
        return listings[0].jobs
    jobs: dict[str, Job] = {}
    for listing in listings:
        for job in listing.jobs:
            jobs[job.job_id] = job
    return tuple(jobs.values())


_Result_co = TypeVar("_Result_co", covariant=True)


class Reader(Protocol[_Result_co]):
    """What the client drives: which page to fetch next, each page fetched, the result."""

    def next_page(self) -> int | None:
        """The page to fetch next; None when done. Raises Rejected past the page cap."""

    def add(self, raw_jobs: Sequence[Any], total: int | None) -> None:
        """The next page's ``output.jobs`` and ``output.total``."""

    def finish(self) -> _Result_co:
        """The listing read (an incremental read: None when it must give way to a full one)."""


def _next_page(pages: int, cap: int, where: str, seen: int) -> int:
    """The page after ``pages``; Rejected when that would pass the cap."""
    if pages >= cap:
        raise Rejected(
            f"page cap of {cap} pages hit before the list ended ({where}, {seen} jobs seen)"
        )
    return pages + 1


class FullRead:
    """Every page, 1 to ceil(total / page_size), checking the list as a whole.

    Stops when the jobs seen reach ``total`` (the latest page's), or on a short or empty
    page: never on an extra empty page. A listing whose job count disagrees with its
    ``total`` (jobs created or deleted mid-sweep, or a lying API) is rejected.
    """

    def __init__(
        self, page_size: int, tz: tzinfo, where: str, now: float, previous: Listing | None = None
    ) -> None:
        self.page_size = page_size
        self.tz = tz
        self.where = where
        self.now = now
        self.pages = 0
        self.cap = HARD_PAGE_CAP
        self.total: int | None = None
        self.jobs: dict[str, Job] = {}
        self.malformed = 0
        self.done = False
        self._stale = 0
        self._blocked: Fallback | None = None
        self._last: Job | None = None
        #: The last sweep's jobs by id: an unchanged job keeps its object, and the one just
        #: parsed is dropped at once, so old and new lists never hold two copies of a job.
        self._previous = {job.job_id: job for job in previous.jobs} if previous else {}

    def next_page(self) -> int | None:
        return None if self.done else _next_page(self.pages, self.cap, self.where, len(self.jobs))

    def add(self, raw_jobs: Sequence[Any], total: int | None) -> None:
        self.pages += 1
        if total is not None:
            self.total = total
            # Enough pages for the announced total, plus slack for jobs created
            # mid-sweep; never more than the hard cap.
            pages = math.ceil(total / self.page_size)
            self.cap = min(HARD_PAGE_CAP, max(pages + 5, self.pages + 1))
        if not raw_jobs:
            self.done = True
            return
        before = len(self.jobs)
        for raw in raw_jobs:
            try:
                job = parse_job(raw, self.tz)
            except JobParseError as exc:
                self.malformed += 1
                log.debug("skipping malformed job on page %d: %s", self.pages, exc)
                continue
            self._check(job)
            known = self._previous.get(job.job_id)
            self.jobs[job.job_id] = known if known == job else job
        # Pages shift when jobs are created mid-sweep, so one page of known jobs
        # is normal; several in a row means the API repeats itself.
        self._stale = self._stale + 1 if len(self.jobs) == before else 0
        if self._stale >= MAX_STALE_PAGES:
            raise Rejected(
                f"{self._stale} pages in a row brought no new job ({self.where}, page {self.pages})"
            )
        seen = len(self.jobs) + self.malformed
        if len(raw_jobs) < self.page_size or (self.total is not None and seen >= self.total):
            self.done = True

    def _check(self, job: Job) -> None:
        """Newest first, each job once: what an incremental sweep after this one relies on."""
        last, self._last = self._last, job
        if self._blocked is not None:
            return
        if job.job_id in self.jobs:
            self._blocked = Fallback(REPEATED, f"{job.job_id} was listed twice")
        elif job.created is None:
            self._blocked = Fallback(UNDATED, f"{job.job_id} has no create_time")
        elif last is not None and last.created is not None and job.created > last.created:
            self._blocked = Fallback(
                ORDER, f"{job.job_id} is listed below {last.job_id} but was created after it"
            )

    def finish(self) -> Listing:
        seen = len(self.jobs) + self.malformed
        if self.total is not None and seen != self.total:
            raise Rejected(
                f"the list announced total={self.total} but held {seen} jobs ({self.where})"
            )
        blocked = self._blocked
        if blocked is None and self.malformed:
            blocked = Fallback(MALFORMED, f"{self.malformed} malformed entries in the list")
        if blocked is None and self.total is None:
            blocked = Fallback(NO_TOTAL, "the API sent no total")
        jobs = tuple(self.jobs.values())
        self._previous.clear()
        return Listing(jobs, self.now, self.malformed, blocked, last_active(jobs))


class IncrementalRead:
    """From page 1 only as far as the last sweep's listing says anything can have changed.

    New jobs must all come first, newest first; from the first known job on, every job
    must be the cached one at its place shifted by the new jobs, and an ended job must be
    unchanged. Reading stops at the first page after which every job is known and had
    ended at the last sweep; the cached rest is trusted only when ``total`` is the jobs
    known plus the new ones. Anything else sets :attr:`fallback` and stops.
    """

    def __init__(self, base: Listing, page_size: int, tz: tzinfo, where: str) -> None:
        self.base = base
        self.page_size = page_size
        self.tz = tz
        self.where = where
        self.pages = 0
        self.total: int | None = None
        #: The jobs read, in list order (the cached object where a job is unchanged).
        self.read: list[Job] = []
        #: Jobs above the first known one; fixed once ``anchored``.
        self.new = 0
        self.anchored = False
        self.done = False
        self.fallback: Fallback | None = None
        self._new_ids: set[str] = set()
        self._known: frozenset[str] | None = None

    def next_page(self) -> int | None:
        if self.done:
            return None
        return _next_page(self.pages, HARD_PAGE_CAP, self.where, len(self.read))

    def add(self, raw_jobs: Sequence[Any], total: int | None) -> None:
        self.pages += 1
        if total is None:
            self._fall(NO_TOTAL, f"page {self.pages} came without a total")
            return
        self.total = total
        for raw in raw_jobs:
            try:
                job = parse_job(raw, self.tz)
            except JobParseError as exc:
                self._fall(MALFORMED, f"a malformed entry on page {self.pages}: {exc}")
                return
            if not self._take(job):
                return
        read = len(self.read)
        if len(raw_jobs) < self.page_size or read >= total:
            self._end_of_list()
        elif self.anchored and self.base.last_active + self.new < read:
            self._trust_rest()

    def _is_known(self, job_id: str) -> bool:
        """A job of the cached listing (the set is built only when a page holds a stranger)."""
        if self._known is None:
            self._known = frozenset(job.job_id for job in self.base.jobs)
        return job_id in self._known

    def _take(self, job: Job) -> bool:
        """Check one job at its place and keep it; False (with a fallback) when it does not fit."""
        cached_jobs = self.base.jobs
        last = self.read[-1] if self.read else None
        if job.created is None:
            return self._fall(UNDATED, f"{job.job_id} has no create_time")
        if last is not None and last.created is not None and job.created > last.created:
            return self._fall(
                ORDER, f"{job.job_id} is listed below {last.job_id} but was created after it"
            )
        if job.job_id in self._new_ids:
            return self._fall(REPEATED, f"{job.job_id} was listed twice")
        if not self.anchored:
            if cached_jobs and job.job_id == cached_jobs[0].job_id:
                self.anchored = True
                self.new = len(self.read)
            elif self._is_known(job.job_id):
                return self._fall(
                    MISSING,
                    f"{job.job_id} is listed where {cached_jobs[0].job_id} was expected: "
                    "a known job is missing or moved",
                )
            else:
                self._new_ids.add(job.job_id)
                self.read.append(job)
                return True
        place = len(self.read) - self.new
        expected = cached_jobs[place] if place < len(cached_jobs) else None
        if expected is None or job.job_id != expected.job_id:
            if not self._is_known(job.job_id):
                return self._fall(ORDER, f"new job {job.job_id} is listed below known jobs")
            where = f"where {expected.job_id} was" if expected else "below the last known job"
            return self._fall(
                MISSING, f"{job.job_id} is listed {where}: a known job is missing or moved"
            )
        unchanged = job == expected
        if expected.terminal and not unchanged:
            return self._fall(
                CHANGED, f"{job.job_id} changed although it had ended ({expected.status})"
            )
        self.read.append(expected if unchanged else job)
        return True

    def _end_of_list(self) -> None:
        """The whole list has been read: every cached job must have been in it."""
        read = len(self.read)
        if not self.anchored:
            self.new = read
        known = read - self.new
        if read != self.total:
            self._fall(TOTAL, f"the list announced total={self.total} but held {read} jobs")
        elif known != len(self.base.jobs):
            self._fall(
                MISSING, f"the list ended after {known} of the {len(self.base.jobs)} known jobs"
            )
        else:
            self.done = True

    def _trust_rest(self) -> None:
        """Every job below the pages read is known and had ended: kept if ``total`` agrees."""
        known = len(self.base.jobs)
        if self.total != known + self.new:
            self._fall(
                TOTAL,
                f"total={self.total} but {known} known jobs and {self.new} new ones make "
                f"{known + self.new}: a job was deleted or the list changed below page "
                f"{self.pages}",
            )
            return
        below = self.base.jobs[len(self.read) - self.new]
        last = self.read[-1]
        if last.created is not None and below.created is not None and below.created > last.created:
            self._fall(
                ORDER, f"{below.job_id} is listed below {last.job_id} but was created after it"
            )
            return
        self.done = True

    def _fall(self, kind: str, detail: str) -> bool:
        self.fallback = Fallback(kind, detail)
        self.done = True
        return False

    def finish(self) -> Listing | None:
        """The listing, sharing every unchanged job (and, when nothing changed, the tuple)."""
        if self.fallback is not None:
            return None
        base = self.base
        rest = len(self.read) - self.new
        if self.new == 0 and all(a is b for a, b in zip(self.read, base.jobs, strict=False)):
            return base  # nothing changed: the same listing, the same tuple
        jobs = tuple(chain(self.read, islice(base.jobs, rest, None)))
        return Listing(jobs, base.full_at, 0, None, last_active(self.read))


class ListingCache:
    """The listing of each model filter as the last sweep left it, and what was logged."""

    def __init__(self, full_sweep_interval: float) -> None:
        #: Seconds after which a full sweep runs anyway; 0 means every sweep is full.
        self.full_sweep_interval = full_sweep_interval
        self._listings: dict[Hashable, Listing] = {}
        self._logged: dict[Hashable, set[str]] = {}

    def get(self, key: Hashable) -> Listing | None:
        return self._listings.get(key)

    def base_for(self, key: Hashable, now: float) -> Listing | None:
        """The cached listing when the next sweep of ``key`` may be incremental, else None."""
        listing = self._listings.get(key)
        if listing is None or listing.blocked is not None:
            return None
        if not 0 <= now - listing.full_at < self.full_sweep_interval:
            return None
        return listing

    def due(self, key: Hashable, now: float) -> bool:
        """True when only the full-sweep interval stands between ``key`` and an incremental read."""
        listing = self._listings.get(key)
        return (
            listing is not None
            and listing.blocked is None
            and self.full_sweep_interval > 0
            and self.base_for(key, now) is None
        )

    def store(self, key: Hashable, listing: Listing) -> None:
        self._listings[key] = listing

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        """Forget the listings of filters no longer swept."""
        wanted = set(keys)
        for key in [k for k in self._listings if k not in wanted]:
            del self._listings[key]
        for key in [k for k in self._logged if k not in wanted]:
            del self._logged[key]

    def first_time(self, key: Hashable, kind: str) -> bool:
        """True the first time ``kind`` stops incremental sweeps of ``key`` since they worked."""
        if self.full_sweep_interval <= 0:
            return False  # incremental sweeps are off: nothing to explain
        logged = self._logged.setdefault(key, set())
        if kind in logged:
            return False
        logged.add(kind)
        return True

    def worked(self, key: Hashable) -> None:
        """An incremental sweep of ``key`` worked: the next fallback is news again."""
        self._logged.pop(key, None)
