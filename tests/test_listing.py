"""Full and incremental sweeps against ``responses``: the pages read, and the same snapshot.

Every case changes the fake API's list, sweeps with a client that has swept before, and
asserts the exact pages it asked for and that its snapshot (or its error) is what a fresh
client's full sweep of the same list gives. The pure parts of :mod:`ft_exporter.listing`
have unit tests at the end.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from conftest import UTC8

from ft_exporter import listing
from ft_exporter.client import ApiError, FineTuneClient
from ft_exporter.listing import (
    CHANGED,
    MISSING,
    NO_TOTAL,
    ORDER,
    TOTAL,
    UNDATED,
    Fallback,
    FullRead,
    IncrementalRead,
    Listing,
    ListingCache,
    merge,
)
from ft_exporter.model import Job, Snapshot, parse_job
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import Secret

BASE = "https://dashscope-intl.aliyuncs.com"
URL = BASE + "/api/v1/fine-tunes"
KEY = "sk-listing-test-key"
#: 2024-11-01 00:00:00 UTC: job n was created n minutes before it.
T0 = 1730419200


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC8).strftime("%Y-%m-%d %H:%M:%S")


def job(n: int, status: str = "SUCCEEDED", model: str = "qwen3-8b", **extra: Any) -> dict[str, Any]:
    """Job n, created n minutes before T0: a list sorted by n is newest first."""
    raw: dict[str, Any] = {
        "job_id": f"ft-{n:05d}",
        "status": status,
        "model": model,
        "training_type": "sft",
        "create_time": stamp(T0 - 60 * n),
    }
    if status in ("SUCCEEDED", "FAILED", "CANCELED"):
        raw["end_time"] = stamp(T0 - 60 * n + 30)
    raw.update(extra)
    return raw


class FakeApi:
    """Serves pages of ``lists[model]`` (newest first) and records each page asked for."""

    def __init__(self, jobs: list[dict[str, Any]], page_size: int = 10) -> None:
        self.lists: dict[str | None, list[dict[str, Any]]] = {None: jobs}
        self.page_size = page_size
        #: Added to the true total of every page (a lying API), or None: no total at all.
        self.total_error: int | None = 0
        #: Pages whose total is lied about (all when empty).
        self.lying_pages: set[int] = set()
        self.pages: list[int] = []
        self.models: list[str | None] = []
        responses.add_callback(responses.GET, URL, callback=self._page)

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return self.lists[None]

    def _page(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(str(request.url)).query)
        page_no, size = int(query["page_no"][0]), int(query["page_size"][0])
        model = query["model"][0] if "model" in query else None
        assert size == self.page_size
        self.pages.append(page_no)
        self.models.append(model)
        jobs = self.lists[model]
        output: dict[str, Any] = {"jobs": jobs[(page_no - 1) * size : page_no * size]}
        if self.total_error is not None:
            lie = not self.lying_pages or page_no in self.lying_pages
            output["total"] = len(jobs) + (self.total_error if lie else 0)
        return 200, {}, json.dumps({"request_id": f"rid-{page_no}", "output": output})

    def sweep(self, client: FineTuneClient, models: tuple[str, ...] = ()) -> Snapshot | str:
        """One sweep: its snapshot, or its error as text; the pages it read in ``pages``."""
        self.pages.clear()
        self.models.clear()
        try:
            return client.sweep(models)
        except ApiError as err:
            return str(err)

    def full(self, models: tuple[str, ...] = ()) -> Snapshot | str:
        """What a fresh client's full sweep gives now (its pages are not recorded)."""
        pages, seen = list(self.pages), list(self.models)
        try:
            return self.sweep(client(self.page_size), models)
        finally:
            self.pages, self.models = pages, seen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(
    page_size: int = 10, clock: Clock | None = None, interval: float = 600.0
) -> FineTuneClient:
    return FineTuneClient(
        BASE,
        Secret(KEY),
        page_size=page_size,
        tz=UTC8,
        retry=RetryPolicy(max_attempts=1),
        monotonic=clock or Clock(),
        clock=lambda: 5000.0,
        full_sweep_interval=interval,
    )


def account(count: int, active: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """``count`` jobs, newest first; those numbered in ``active`` are RUNNING."""
    return [job(n, "RUNNING" if n in active else "SUCCEEDED") for n in range(count)]


def primed() -> tuple[FakeApi, FineTuneClient]:
    """45 ended jobs, newest first, and a client that has swept them in full (5 pages)."""
    api = FakeApi(account(45))
    c = client()
    swept(api, c, [1, 2, 3, 4, 5])
    return api, c


def swept(
    api: FakeApi, c: FineTuneClient, pages: list[int], models: tuple[str, ...] = ()
) -> Snapshot | str:
    """Sweep, and check the pages read and that the result is a full sweep's."""
    result = api.sweep(c, models)
    assert api.pages == pages
    assert result == api.full(models)
    return result


# ---- full sweeps -------------------------------------------------------------------


@responses.activate
@pytest.mark.parametrize(("count", "pages"), [(0, [1]), (1, [1]), (20, [1, 2]), (25, [1, 2, 3])])
def test_a_full_sweep_reads_ceil_total_over_page_size_pages(count: int, pages: list[int]) -> None:
    """Never an extra empty page, even when the total fills the last page exactly."""
    api = FakeApi(account(count))
    snapshot = api.sweep(client())
    assert api.pages == pages
    assert isinstance(snapshot, Snapshot)
    assert [j.job_id for j in snapshot.jobs] == [f"ft-{n:05d}" for n in range(count)]


@responses.activate
def test_without_a_total_a_full_sweep_stops_on_a_short_or_empty_page() -> None:
    api = FakeApi(account(20))
    api.total_error = None
    c = client()
    assert len(swept(api, c, [1, 2, 3]).jobs) == 20  # type: ignore[union-attr]
    # No total: the cached rest cannot be vouched for, so every sweep is full.
    swept(api, c, [1, 2, 3])


# ---- incremental sweeps --------------------------------------------------------------


@responses.activate
def test_nothing_changed_one_page_and_the_very_same_jobs() -> None:
    api = FakeApi(account(45, active=(2, 5)))
    c = client()
    first = swept(api, c, [1, 2, 3, 4, 5])
    second = swept(api, c, [1])
    assert isinstance(first, Snapshot) and isinstance(second, Snapshot)
    assert second.jobs is first.jobs  # shared, not copied: nothing changed


@responses.activate
def test_a_new_job_reads_page_one_only() -> None:
    api = FakeApi(account(45, active=(2,)))
    c = client()
    first = swept(api, c, [1, 2, 3, 4, 5])
    api.jobs.insert(0, job(-1, "PENDING"))
    second = swept(api, c, [1])
    assert isinstance(first, Snapshot) and isinstance(second, Snapshot)
    assert second.jobs[0].job_id == "ft--0001"
    # Every job below the new one is the object the last sweep made.
    assert all(a is b for a, b in zip(second.jobs[1:], first.jobs, strict=True))


@responses.activate
def test_a_page_of_new_jobs_reads_on_to_the_first_known_one() -> None:
    api, c = primed()
    api.jobs[:0] = [job(-n, "QUEUING") for n in range(12, 0, -1)]
    swept(api, c, [1, 2])
    # Exactly a page of new jobs: page 2 starts with the first known one.
    api.jobs[:0] = [job(-n) for n in range(22, 12, -1)]
    swept(api, c, [1, 2, 3])
    # The 12 QUEUING jobs, still active, are at places 10 to 21 now: pages 2 and 3.
    swept(api, c, [1, 2, 3])


@responses.activate
def test_a_status_change_on_page_one_reads_page_one_only() -> None:
    api = FakeApi(account(45, active=(0, 3)))
    c = client()
    swept(api, c, [1, 2, 3, 4, 5])
    api.jobs[3] = job(3, "FAILED")
    snapshot = swept(api, c, [1])
    assert isinstance(snapshot, Snapshot)
    assert (snapshot.jobs[3].status, snapshot.jobs[3].ended) == ("FAILED", T0 - 150)


@responses.activate
def test_an_active_job_on_page_three_is_read_at_its_place_shifted_by_new_jobs() -> None:
    api = FakeApi(account(45, active=(27,)))  # place 27: page 3
    c = client()
    swept(api, c, [1, 2, 3, 4, 5])
    swept(api, c, [1, 2, 3])
    api.jobs[:0] = [job(-n) for n in range(3, 0, -1)]  # three new jobs: it moves to page 4
    swept(api, c, [1, 2, 3, 4])
    api.jobs[30] = job(27, "SUCCEEDED")  # it ends, where it now is
    snapshot = swept(api, c, [1, 2, 3, 4])
    assert isinstance(snapshot, Snapshot)
    assert snapshot.jobs[30].status == "SUCCEEDED"
    swept(api, c, [1])  # nothing active any more: page 1 is enough


@responses.activate
@pytest.mark.parametrize("place", [0, 4, 9])
def test_a_deletion_on_page_one_falls_back_to_a_full_sweep(place: int) -> None:
    api, c = primed()
    del api.jobs[place]
    swept(api, c, [1, 1, 2, 3, 4, 5])
    swept(api, c, [1])  # the full sweep's list is the cache now


@responses.activate
def test_a_deletion_below_the_pages_read_shows_in_the_total() -> None:
    api, c = primed()
    del api.jobs[33]
    swept(api, c, [1, 1, 2, 3, 4, 5])
    api.jobs.insert(0, job(-1))
    del api.jobs[40]  # a new job and a deletion: total is one short of 44 + 1
    swept(api, c, [1, 1, 2, 3, 4, 5])


@responses.activate
def test_a_new_job_below_a_known_one_breaks_the_order() -> None:
    api, c = primed()
    # Listed at its place by create_time, but below known jobs: not newest first.
    api.jobs.insert(5, job(4, job_id="ft-late"))
    swept(api, c, [1, 1, 2, 3, 4, 5])
    swept(api, c, [1])  # the list itself is in create_time order: incremental again


@responses.activate
def test_create_time_increasing_down_the_list_stops_incremental_sweeps() -> None:
    api, c = primed()
    api.jobs.insert(1, job(-5, job_id="ft-newer"))  # newer than the job above it
    swept(api, c, [1, 1, 2, 3, 4, 5])
    swept(api, c, [1, 2, 3, 4, 5])  # the full sweep found it too: no incremental attempt
    api.jobs.insert(0, api.jobs.pop(1))  # the list is newest first again
    swept(api, c, [1, 2, 3, 4, 5])
    swept(api, c, [1])


@responses.activate
def test_a_job_without_create_time_means_full_sweeps() -> None:
    api, c = primed()
    api.jobs.insert(0, job(-1, create_time=None))
    swept(api, c, [1, 1, 2, 3, 4, 5])
    swept(api, c, [1, 2, 3, 4, 5])


@responses.activate
@pytest.mark.parametrize("error", [50, -3])
def test_a_lying_total_is_never_trusted(error: int) -> None:
    """Too high: the full sweep reads to the short page 5; too low (42): reached on page 5,
    which holds 45. Either way the listing is rejected, as a fresh full sweep rejects it."""
    api, c = primed()
    api.total_error = error
    result = swept(api, c, [1, 1, 2, 3, 4, 5])
    assert result == (
        f"InvalidResponse HTTP 200: the list announced total={45 + error} but held 45 jobs "
        "(model=*) request_id=rid-5"
    )
    api.total_error = 0
    swept(api, c, [1])  # the cache outlived the rejected sweeps


@responses.activate
def test_a_total_that_lies_on_page_one_only_costs_one_full_sweep() -> None:
    api, c = primed()
    api.total_error, api.lying_pages = 1, {1}
    swept(api, c, [1, 1, 2, 3, 4, 5])  # published: the full sweep's last page tells the truth


@responses.activate
def test_a_job_that_had_ended_and_changed_falls_back() -> None:
    api, c = primed()
    api.jobs[2] = job(2, "SUCCEEDED", usage=123)
    snapshot = swept(api, c, [1, 1, 2, 3, 4, 5])
    assert isinstance(snapshot, Snapshot)
    assert snapshot.jobs[2].usage_tokens == 123


@responses.activate
def test_a_known_job_moved_down_falls_back() -> None:
    api, c = primed()
    api.jobs[3], api.jobs[4] = api.jobs[4], api.jobs[3]
    swept(api, c, [1, 1, 2, 3, 4, 5])


@responses.activate
def test_a_malformed_entry_means_full_sweeps() -> None:
    api, c = primed()
    api.jobs.insert(0, {"job_id": ""})
    snapshot = swept(api, c, [1, 1, 2, 3, 4, 5])
    assert isinstance(snapshot, Snapshot) and snapshot.malformed_jobs == 1
    swept(api, c, [1, 2, 3, 4, 5])
    del api.jobs[0]
    swept(api, c, [1, 2, 3, 4, 5])
    swept(api, c, [1])


@responses.activate
def test_the_full_sweep_interval_catches_what_page_one_cannot_see() -> None:
    """An ended job that changes below the pages read is what an incremental sweep cannot
    see: the full sweep due every --poll.full-sweep-interval publishes it."""
    clock = Clock()
    api = FakeApi(account(45))
    c = client(clock=clock)
    swept(api, c, [1, 2, 3, 4, 5])
    api.jobs[33] = job(33, "SUCCEEDED", usage=99)
    clock.now += 599.9
    stale = api.sweep(c)
    assert api.pages == [1]
    assert isinstance(stale, Snapshot) and stale.jobs[33].usage_tokens == 0
    clock.now += 0.1  # exactly the interval since the last full sweep
    snapshot = swept(api, c, [1, 2, 3, 4, 5])
    assert isinstance(snapshot, Snapshot) and snapshot.jobs[33].usage_tokens == 99
    clock.now += 599.9
    swept(api, c, [1])
    # The full sweep kept the object of every job that had not changed.
    assert isinstance(stale, Snapshot)
    shared = [a is b for a, b in zip(snapshot.jobs, stale.jobs, strict=True)]
    assert shared == [n != 33 for n in range(45)]


@responses.activate
def test_an_interval_of_zero_makes_every_sweep_full() -> None:
    api = FakeApi(account(20))
    c = client(interval=0)
    for _ in range(3):
        swept(api, c, [1, 2])


@responses.activate
def test_incremental_sweeps_in_a_list_that_fills_its_pages_exactly() -> None:
    api = FakeApi(account(20))
    c = client()
    swept(api, c, [1, 2])
    swept(api, c, [1])
    api.jobs.insert(0, job(-1))
    swept(api, c, [1])
    del api.jobs[0]
    swept(api, c, [1, 1, 2])


@responses.activate
def test_an_empty_account_and_its_first_job() -> None:
    api = FakeApi([])
    c = client()
    swept(api, c, [1])
    swept(api, c, [1])
    api.jobs.append(job(0, "RUNNING"))
    swept(api, c, [1])
    swept(api, c, [1])
    api.jobs.clear()
    swept(api, c, [1, 1])


@responses.activate
def test_each_model_filter_has_its_own_cache() -> None:
    api = FakeApi([])
    api.lists = {
        "m1": [job(n, model="m1") for n in range(0, 50, 2)],
        "m2": [job(n, model="m2") for n in range(1, 50, 2)],
    }
    c = client()
    models = ("m1", "m2")
    swept(api, c, [1, 2, 3, 1, 2, 3], models)
    assert api.models == ["m1"] * 3 + ["m2"] * 3
    swept(api, c, [1, 1], models)
    api.lists["m2"].insert(0, job(-1, "RUNNING", model="m2"))
    del api.lists["m1"][5]
    swept(api, c, [1, 1, 2, 3, 1], models)
    assert api.models == ["m1"] * 4 + ["m2"]
    # A filter dropped from the sweep is forgotten: asked again, it is read in full.
    swept(api, c, [1], ("m2",))
    swept(api, c, [1, 2, 3, 1], models)


@responses.activate
def test_a_fallback_is_logged_once_until_incremental_sweeps_work_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ft_exporter.client")
    api, c = primed()

    def sweep(pages: list[int]) -> None:
        """Only this client's sweep: a fresh client's full sweep would log for itself."""
        assert isinstance(api.sweep(c), Snapshot)
        assert api.pages == pages

    def said() -> list[str]:
        out = [r.getMessage() for r in caplog.records if r.name == "ft_exporter.client"]
        caplog.clear()
        return out

    assert said() == []
    api.jobs.insert(0, job(-1))
    api.jobs.insert(1, job(-2))  # created after the job above it
    sweep([1, 1, 2, 3, 4, 5])
    message = (
        "reading every page of the job list (model=*), not only what changed: "
        "ft--0002 is listed below ft--0001 but was created after it"
    )
    assert said() == [message]
    for _ in range(2):
        sweep([1, 2, 3, 4, 5])
        assert said() == []
    del api.jobs[1]
    sweep([1, 2, 3, 4, 5])
    sweep([1])
    assert said() == []
    api.jobs.insert(1, job(-2))  # the same reason, after incremental sweeps worked: news
    sweep([1, 1, 2, 3, 4, 5])
    assert said() == [message]


@responses.activate
@pytest.mark.parametrize(
    ("minutes", "pages", "then"), [(5.5, [1, 2, 1, 2, 3, 4], [1, 2, 3, 4]), (5, [1, 2], [1, 2])]
)
def test_the_last_active_job_read_is_checked_against_the_cached_job_below(
    minutes: float, pages: list[int], then: list[int]
) -> None:
    """Job 4, running, ends page 2 once a new job is on top; its create_time changes. Made
    older than job 5 below it, the list is not newest first at the seam: every page is read
    now and while it stays so. As old as job 5 is still newest first: page 2 is the end."""
    api = FakeApi(account(9, active=(4,)), page_size=3)
    c = client(page_size=3)
    swept(api, c, [1, 2, 3])
    api.jobs.insert(0, job(-1))
    api.jobs[5] = job(4, "RUNNING", create_time=stamp(T0 - 60 * minutes))
    swept(api, c, pages)
    swept(api, c, then)


@responses.activate
def test_each_model_filter_says_once_per_reason_why_it_reads_every_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fallback only the incremental read sees is logged, per filter and per reason, and
    again once that filter's incremental sweeps have worked."""
    caplog.set_level(logging.INFO, logger="ft_exporter.client")
    api = FakeApi([])
    api.lists = {m: [job(n, model=m) for n in range(5)] for m in ("m1", "m2")}
    c = client()
    models = ("m1", "m2")

    def said() -> list[str]:
        out = [r.getMessage() for r in caplog.records if r.name == "ft_exporter.client"]
        caplog.clear()
        return out

    def why(model: str, detail: str) -> str:
        return (
            f"reading every page of the job list (model={model}), not only what changed: " + detail
        )

    swept(api, c, [1, 1], models)
    assert said() == []
    for status in ("FAILED", "CANCELED"):
        old = api.lists["m1"][2]["status"]
        for m in models:
            api.lists[m][2] = job(2, status, model=m)
        swept(api, c, [1, 1, 1, 1], models)
        detail = f"ft-00002 changed although it had ended ({old})"
        assert said() == [why("m1", detail), why("m2", detail)]
        swept(api, c, [1, 1], models)  # incremental sweeps work: the next fallback is news
        assert said() == []
    api.lists["m1"][2] = job(2, "FAILED", model="m1")
    swept(api, c, [1, 1, 1], models)
    assert said() == [why("m1", "ft-00002 changed although it had ended (CANCELED)")]
    # Another reason before any incremental sweep worked: news too.
    del api.lists["m1"][1]
    swept(api, c, [1, 1, 1], models)
    missing = "ft-00002 is listed where ft-00001 was: a known job is missing or moved"
    assert said() == [why("m1", missing)]


@responses.activate
def test_each_model_filter_says_why_its_full_sweep_blocks_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ft_exporter.client")
    api = FakeApi([])
    api.lists = {m: [job(n, model=m) for n in range(5)] for m in ("m1", "m2")}
    api.total_error = None
    c = client()
    assert isinstance(api.sweep(c, ("m1", "m2")), Snapshot)
    assert api.pages == [1, 1]
    assert [r.getMessage() for r in caplog.records if r.name == "ft_exporter.client"] == [
        f"reading every page of the job list (model={m}), not only what changed: "
        "the API sent no total"
        for m in ("m1", "m2")
    ]


@responses.activate
def test_a_filter_whose_interval_passed_is_read_in_full_keeping_its_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ft_exporter.client")
    clock = Clock()
    api = FakeApi([])
    api.lists = {"m1": [job(n, model="m1") for n in range(15)]}
    c = client(clock=clock)
    first = swept(api, c, [1, 2], ("m1",))
    clock.now += 600
    caplog.clear()
    again = swept(api, c, [1, 2], ("m1",))
    assert [r.getMessage() for r in caplog.records if r.name == "ft_exporter.client"] == [
        "full sweep of model=m1: --poll.full-sweep-interval has passed"
    ]
    # The full sweep kept the object of every job that had not changed.
    assert isinstance(first, Snapshot) and isinstance(again, Snapshot)
    assert all(a is b for a, b in zip(first.jobs, again.jobs, strict=True))


@responses.activate
def test_the_page_cap_bounds_an_incremental_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "HARD_PAGE_CAP", 3)
    api = FakeApi(account(3, active=(0, 1, 2)), page_size=1)
    c = client(page_size=1)
    swept(api, c, [1, 2, 3])
    api.jobs.insert(0, job(-1, "RUNNING"))
    assert api.sweep(c) == (
        "InvalidResponse HTTP 200: page cap of 3 pages hit before the list ended "
        "(model=*, 3 jobs seen) request_id=rid-3"
    )
    assert api.pages == [1, 2, 3]


# ---- the pure parts ------------------------------------------------------------------


def parsed(*numbers: int, status: str = "SUCCEEDED") -> tuple[Job, ...]:
    return tuple(parse_job(job(n, status), UTC8) for n in numbers)


def test_the_cache_allows_an_incremental_read_only_within_the_interval() -> None:
    cache = ListingCache(600.0)
    assert cache.base_for(None, 0.0) is None
    clean = Listing(parsed(1, 2), full_at=100.0)
    cache.store(None, clean)
    assert [cache.base_for(None, t) for t in (99.9, 100.0, 699.9, 700.0)] == [
        None,
        clean,
        clean,
        None,
    ]
    assert [cache.due(None, t) for t in (100.0, 700.0)] == [False, True]
    cache.store("m", Listing((), 100.0, blocked=Fallback(ORDER, "x")))
    assert (cache.base_for("m", 200.0), cache.due("m", 700.0)) == (None, False)
    cache.keep_only(["m"])
    assert (cache.get(None), cache.get("m") is not None) == (None, True)
    off = ListingCache(0.0)
    off.store(None, clean)
    assert (off.base_for(None, 100.0), off.due(None, 100.0)) == (None, False)


def test_first_time_per_reason_until_it_worked() -> None:
    cache = ListingCache(600.0)
    assert [cache.first_time(None, k) for k in (ORDER, ORDER, TOTAL, ORDER)] == [
        True,
        False,
        True,
        False,
    ]
    assert cache.first_time("m", ORDER) is True
    cache.worked(None)
    assert (cache.first_time(None, ORDER), cache.first_time("m", ORDER)) == (True, False)
    cache.keep_only([None])
    assert cache.first_time("m", ORDER) is True
    assert ListingCache(0.0).first_time(None, ORDER) is False


def test_merge_keeps_the_first_place_and_the_last_value() -> None:
    a = Listing(parsed(1, 2), 0.0)
    b = Listing(parsed(3) + parsed(2, status="RUNNING"), 0.0)
    assert merge([a]) is a.jobs
    merged = merge([a, b])
    assert [(j.job_id, j.status) for j in merged] == [
        ("ft-00001", "SUCCEEDED"),
        ("ft-00002", "RUNNING"),
        ("ft-00003", "SUCCEEDED"),
    ]


def test_last_active_is_the_place_of_the_last_job_not_ended() -> None:
    assert listing.last_active(()) == -1
    assert listing.last_active(parsed(1, 2)) == -1
    jobs = parsed(0, status="RUNNING") + parsed(1) + parsed(2, status="PENDING") + parsed(3)
    assert listing.last_active(jobs) == 2


def read_full(pages: list[list[dict[str, Any]]], total: int | None) -> FullRead:
    reader = FullRead(2, UTC8, "model=*", now=7.0)
    for jobs in pages:
        assert reader.next_page() == reader.pages + 1
        reader.add(jobs, total)
    assert reader.next_page() is None
    return reader


@pytest.mark.parametrize(
    ("raws", "kind", "detail"),
    [
        ([job(1), job(2), job(2)], listing.REPEATED, "ft-00002 was listed twice"),
        ([job(1), job(2, create_time=""), job(3)], UNDATED, "ft-00002 has no create_time"),
        (
            [job(2), job(1), job(3)],
            ORDER,
            "ft-00001 is listed below ft-00002 but was created after it",
        ),
        (
            [job(1), {"job_id": None}, job(3)],
            listing.MALFORMED,
            "1 malformed entries in the list",
        ),
    ],
)
def test_a_full_read_says_why_the_next_sweep_must_be_full(
    raws: list[dict[str, Any]], kind: str, detail: str
) -> None:
    result = read_full([raws[:2], raws[2:]], None).finish()
    assert result.blocked == Fallback(kind, detail)
    assert result.full_at == 7.0


def test_a_full_read_of_a_clean_list() -> None:
    result = read_full([[job(1), job(1, job_id="ft-tie")], [job(2, "RUNNING")]], 3).finish()
    # Equal create_time is newest first too.
    assert (result.blocked, result.last_active, result.malformed) == (None, 2, 0)
    no_total = read_full([[job(1)]], None).finish()
    assert no_total.blocked == Fallback(NO_TOTAL, "the API sent no total")


def incremental(
    pages: list[list[dict[str, Any]]], total: int, running: bool = False
) -> IncrementalRead:
    """An incremental read over jobs 1, 2 (ended) and 3 (ended, or running) at two a page."""
    base = parsed(1, 2) + parsed(3, status="RUNNING" if running else "SUCCEEDED")
    reader = IncrementalRead(Listing(base, 3.0, last_active=2 if running else -1), 2, UTC8, "-")
    for jobs in pages:
        assert reader.next_page() == reader.pages + 1
        reader.add(jobs, total)
    return reader


MOVED = "a known job is missing or moved"
#: Job 2 as listed with job 3's create_time: where it stands is the only thing wrong.
JOB_2_LATE = job(2, create_time=stamp(T0 - 180))


@pytest.mark.parametrize(
    ("pages", "total", "running", "kind", "detail"),
    [
        ([[job(1), job(3)]], 3, False, MISSING, f"ft-00003 is listed where ft-00002 was: {MOVED}"),
        (
            [[job(2), job(3)]],
            2,
            False,
            MISSING,
            f"ft-00002 is listed where ft-00001 was expected: {MOVED}",
        ),
        (
            [[job(1), job(0)]],
            4,
            False,
            ORDER,
            "ft-00000 is listed below ft-00001 but was created after it",
        ),
        ([[job(1), job(2, job_id="x")]], 4, False, ORDER, "new job x is listed below known jobs"),
        (
            [[job(1), job(2, usage=5)]],
            3,
            False,
            CHANGED,
            "ft-00002 changed although it had ended (SUCCEEDED)",
        ),
        (
            [[job(0), job(1)]],
            5,
            False,
            TOTAL,
            "total=5 but 3 known jobs and 1 new ones make 4: a job was deleted or the list "
            "changed below page 1",
        ),
        (
            [[job(1), job(2)], [job(3, "RUNNING")]],
            5,
            True,
            TOTAL,
            "the list announced total=5 but held 3 jobs",
        ),
        ([[job(0, create_time=None)]], 4, False, UNDATED, "ft-00000 has no create_time"),
        ([[job(0), job(0)]], 5, False, listing.REPEATED, "ft-00000 was listed twice"),
        (
            [[job(1), job(2)], [job(3, "RUNNING"), job(4)]],
            4,
            True,
            ORDER,
            "new job ft-00004 is listed below known jobs",
        ),
        (
            [[job(1), job(2)], [job(3, "RUNNING"), JOB_2_LATE]],
            4,
            True,
            MISSING,
            f"ft-00002 is listed below the last known job: {MOVED}",
        ),
        ([[job(1), job(2)]], 2, False, MISSING, "the list ended after 2 of the 3 known jobs"),
        ([[]], 0, False, MISSING, "the list ended after 0 of the 3 known jobs"),
        (
            [[{"job_id": None}]],
            4,
            False,
            listing.MALFORMED,
            "a malformed entry on page 1: job has no job_id",
        ),
    ],
)
def test_an_incremental_read_falls_back_and_says_why(
    pages: list[list[dict[str, Any]]], total: int, running: bool, kind: str, detail: str
) -> None:
    reader = incremental(pages, total, running)
    assert reader.next_page() is None
    assert reader.finish() is None
    assert reader.fallback == Fallback(kind, detail)


def test_an_incremental_read_without_a_total_falls_back() -> None:
    reader = IncrementalRead(Listing(parsed(1), 3.0), 2, UTC8, "model=*")
    reader.add([job(1)], None)
    assert reader.fallback == Fallback(NO_TOTAL, "page 1 came without a total")
    assert reader.next_page() is None


def test_an_incremental_read_that_stops_early_keeps_the_cached_rest() -> None:
    base = parsed(1, 2, 3, 4, 5)
    cached = Listing(base, 3.0)
    reader = IncrementalRead(cached, 2, UTC8, "model=*")
    reader.add([job(0, "RUNNING"), job(1)], 6)
    assert reader.next_page() is None
    result = reader.finish()
    assert result is not None
    assert [j.job_id for j in result.jobs] == [f"ft-{n:05d}" for n in range(6)]
    assert all(a is b for a, b in zip(result.jobs[1:], base, strict=True))
    assert (result.full_at, result.last_active, result.blocked) == (3.0, 0, None)
    # Nothing changed: the very same listing.
    again = IncrementalRead(cached, 2, UTC8, "model=*")
    again.add([job(1), job(2)], 5)
    assert again.finish() is cached


@responses.activate
def test_a_list_out_of_order_from_the_start_is_explained_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ft_exporter.client")
    clock = Clock()
    api = FakeApi(account(15))
    api.jobs.insert(3, job(-1))
    c = client(clock=clock)

    def said() -> list[tuple[int, str]]:
        out = [
            (r.levelno, r.getMessage()) for r in caplog.records if r.name == "ft_exporter.client"
        ]
        caplog.clear()
        return out

    for _ in range(3):
        assert isinstance(api.sweep(c), Snapshot) and api.pages == [1, 2]
    assert said() == [
        (
            logging.INFO,
            "reading every page of the job list (model=*), not only what changed: "
            "ft--0001 is listed below ft-00002 but was created after it",
        )
    ]
    del api.jobs[3]
    api.sweep(c)
    api.sweep(c)
    assert api.pages == [1]
    clock.now += 600
    api.sweep(c)
    assert api.pages == [1, 2]
    assert said() == [
        (logging.DEBUG, "full sweep of model=*: --poll.full-sweep-interval has passed")
    ]


#: Jobs 0 to 8, job 4 running, read three a page below one new job (-1): job 4 ends page 2.
SEAM_BASE = parsed(0, 1, 2, 3) + parsed(4, status="RUNNING") + parsed(5, 6, 7, 8)


def read_to_the_seam(minutes: float) -> IncrementalRead:
    """Pages 1 and 2 of the list above, job 4 created ``minutes`` before T0 now."""
    reader = IncrementalRead(Listing(SEAM_BASE, 3.0, last_active=4), 3, UTC8, "model=*")
    moved = job(4, "RUNNING", create_time=stamp(T0 - 60 * minutes))
    for page in ([job(-1), job(0), job(1)], [job(2), job(3), moved]):
        assert reader.next_page() == reader.pages + 1
        reader.add(page, 10)
    assert reader.next_page() is None
    return reader


def test_an_incremental_read_checks_the_order_where_the_cached_rest_begins() -> None:
    reader = read_to_the_seam(5.5)  # older than job 5, the first cached job below
    assert reader.finish() is None
    assert reader.fallback == Fallback(
        ORDER, "ft-00005 is listed below ft-00004 but was created after it"
    )
    same_time = read_to_the_seam(5).finish()  # as old as job 5: still newest first
    assert same_time is not None
    assert [j.job_id for j in same_time.jobs] == [f"ft-{n:05d}" for n in range(-1, 9)]
    assert same_time.jobs[5].created == same_time.jobs[6].created == T0 - 300
    assert all(a is b for a, b in zip(same_time.jobs[6:], SEAM_BASE[5:], strict=True))


def test_an_incremental_read_stops_at_the_page_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "HARD_PAGE_CAP", 1)
    running = Listing(parsed(1, 2, 3, status="RUNNING"), 3.0, last_active=2)
    reader = IncrementalRead(running, 2, UTC8, "model=m")
    assert reader.next_page() == 1
    reader.add([job(1, "RUNNING"), job(2, "RUNNING")], 3)
    with pytest.raises(listing.Rejected) as info:
        reader.next_page()
    assert str(info.value) == "page cap of 1 pages hit before the list ended (model=m, 2 jobs seen)"


def test_a_full_read_counts_malformed_entries_towards_the_total() -> None:
    """Four entries, one malformed, make the announced total: no third page is asked for."""
    result = read_full([[job(1), {"job_id": None}], [job(2), job(3)]], 4).finish()
    assert (len(result.jobs), result.malformed) == (3, 1)


def test_the_cache_of_each_filter_and_an_interval_under_a_second() -> None:
    cache = ListingCache(0.5)  # allowed: incremental reads for half a second
    cache.store("m", Listing(parsed(1, 2), full_at=100.0))
    assert [cache.due("m", t) for t in (100.0, 100.4, 100.5)] == [False, False, True]
    assert cache.first_time("m", ORDER) is True
    assert cache.first_time("m", ORDER) is False
    cache.worked("m")  # that filter's incremental read worked: its next fallback is news
    assert cache.first_time("m", ORDER) is True
