"""The status page ``/``: what it shows of each account, bounded and escaped.

The page is rendered here from built snapshots and read back with the standard library's
HTML parser; the recent-errors test runs the exporter against the simulator. The page
in a real browser is tests/test_statuspage_browser.py.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser
from types import MappingProxyType

import pytest
from conftest import ROOT, Exporter, Simulator, http_get, readme_section, wait_for
from prometheus_client import CollectorRegistry

from ft_exporter.client import ApiError
from ft_exporter.collector import CollectorSettings
from ft_exporter.failures import MAX_MESSAGE_CHARS, FailedRequest, Failures, RecentFailures
from ft_exporter.http import statuspage
from ft_exporter.http.routes import Request, Routes
from ft_exporter.model import ExporterState, Job, Snapshot, Training
from ft_exporter.selfmetrics import SelfMetrics

NOW = 1_800_000_000.0
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def job(
    job_id: str,
    status: str = "RUNNING",
    *,
    name: str = "",
    model: str = "qwen3-8b",
    created: float | None = NOW - 3600,
    ended: float | None = None,
    tokens: int = 0,
    epochs: float | None = 3.0,
) -> Job:
    return Job(
        job_id=job_id,
        job_name=name or f"name-{job_id}",
        status=status,
        model=model,
        base_model=model,
        training_type="sft",
        finetuned_output="",
        created=created,
        ended=ended,
        usage_tokens=tokens,
        n_epochs=epochs,
    )


@dataclass
class FakeUnit:
    """A StatusUnit made of plain values."""

    jobs: tuple[Job, ...] = ()
    training: dict[str, Training] = field(default_factory=dict)
    name: str = "default"
    quota_limit: int = 20
    up: bool = True
    last_success: float | None = NOW - 30
    swept: bool = True
    failed: Failures = field(default_factory=Failures)
    poll_interval: float = 60.0

    @property
    def settings(self) -> CollectorSettings:
        return CollectorSettings(account=self.name, quota_limit=self.quota_limit)

    def state(self) -> ExporterState:
        snapshot = (
            Snapshot(self.jobs, self.last_success or NOW, 0, MappingProxyType(self.training))
            if self.swept
            else None
        )
        return ExporterState(snapshot, self.up, self.last_success if self.swept else None, 1.25)

    def failures(self) -> Failures:
        return self.failed


class Page(HTMLParser):
    """The page's text, and the text of the cells of each table by class, row by row."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.by_class: dict[str, list[str]] = {}
        self.tags: list[str] = []
        self._table = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        #: Open elements: their tag and where their text goes in by_class.
        self._open: list[tuple[str, list[tuple[str, int]]]] = []
        self.feed(body.decode("utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table":
            self._table = classes[0] if classes else ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        if tag not in ("meta", "br", "img", "input", "link"):
            slots = []
            for name in classes:
                texts = self.by_class.setdefault(name, [])
                texts.append("")
                slots.append((name, len(texts) - 1))
            self._open.append((tag, slots))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        for _, slots in self._open:
            for name, index in slots:
                self.by_class[name][index] += data

    def first(self, name: str) -> str:
        return self.by_class[name][0]

    def rows(self, table: str) -> list[list[str]]:
        """The body rows (the header row, all <th>, left out)."""
        return self.tables.get(table, [])[1:]


def render(*units: FakeUnit, alerts: str = "") -> bytes:
    return statuspage.render(
        units, NOW, version="1.2.3", links=statuspage.Links("/metrics", alerts)
    )


def test_hostile_text_is_escaped_everywhere_and_read_back_as_text() -> None:
    hostile = f"{SCRIPT}{IMG}&amp;'"
    unit = FakeUnit(
        jobs=(
            job("ft-1", name=hostile, model=hostile),
            job("ft-2", "FAILED", name=hostile, ended=NOW - 60),
            job("ft-3", hostile, created=NOW - 7200),
        ),
        name=hostile,
        failed=Failures(
            (statuspage_failed(message=hostile, request_id=hostile, code=hostile),),
            ((hostile, hostile, 1),),
        ),
    )
    body = render(unit)
    page = Page(body)
    assert "script" not in page.tags
    assert "img" not in page.tags
    assert b"<script" not in body
    assert b"<img" not in body
    # Every place a hostile value lands reads back as the value itself.
    assert page.first("account") == hostile
    assert page.rows("active")[0][0] == hostile
    assert page.rows("active")[0][1] == hostile
    assert page.rows("active")[1][2] == hostile  # the status
    assert page.rows("ended")[0][0] == hostile
    assert page.rows("failures")[0][3:] == [hostile, hostile, hostile]
    assert page.rows("errors")[0] == [hostile, hostile, "1"]
    assert hostile in [row[0] for row in page.rows("counts")]


def statuspage_failed(
    *,
    at: float = NOW - 5,
    endpoint: str = "list",
    code: str = "Throttling",
    http_status: str = "429",
    message: str = "Too many requests",
    request_id: str = "rid-1",
) -> FailedRequest:
    return FailedRequest(at, endpoint, code, http_status, message, request_id)


@pytest.mark.parametrize(
    ("used", "level", "words"),
    [
        (0, "ok", "20 more jobs can start."),
        (15, "ok", "5 more jobs can start."),
        (16, "warn", "4 more jobs can start."),  # 80 %: DashScopeFineTuneQuotaNearlyFull
        (19, "warn", "1 more job can start."),
        (20, "full", "No more jobs can start: new jobs are refused until some are deleted."),
        (23, "full", "No more jobs can start: new jobs are refused until some are deleted."),
    ],
)
def test_quota_bar_follows_the_alert_thresholds(used: int, level: str, words: str) -> None:
    counted = tuple(job(f"ft-{i}", "SUCCEEDED", ended=NOW - 60) for i in range(used))
    uncounted = (job("ft-f", "FAILED", ended=NOW), job("ft-c", "CANCELED", ended=NOW))
    body = render(FakeUnit(jobs=counted + uncounted))
    page = Page(body)
    assert (page.first("quota-used"), page.first("quota-limit")) == (str(used), "20")
    assert page.first("room") == words
    assert f'<div class="quota {level}">'.encode() in body
    width = min(used / 20, 1.0) * 100
    assert f'<span style="width:{width:.1f}%"></span>'.encode() in body


def test_a_limit_of_zero_is_full_without_dividing_by_zero() -> None:
    page = Page(render(FakeUnit(quota_limit=0)))
    assert page.first("room").startswith("No more jobs can start")


def test_counts_by_model_and_status_with_totals() -> None:
    jobs = (
        job("a", "RUNNING", model="m1"),
        job("b", "SUCCEEDED", model="m1", ended=NOW),
        job("c", "SUCCEEDED", model="m1", ended=NOW),
        job("d", "SUSPENDED", model="m2"),
        job("e", "QUEUING", model="m2"),
    )
    page = Page(render(FakeUnit(jobs=jobs)))
    assert page.rows("counts") == [
        ["m1", "3", "RUNNING\xa01 SUCCEEDED\xa02"],
        ["m2", "2", "QUEUING\xa01 SUSPENDED\xa01"],
        ["all models", "5", "QUEUING\xa01 RUNNING\xa01 SUCCEEDED\xa02 SUSPENDED\xa01"],
    ]
    assert page.first("jobs-total") == "5"


def test_active_jobs_with_age_progress_and_loss_newest_first() -> None:
    jobs = (
        job("old", "RUNNING", created=NOW - 2 * 86400 - 3 * 3600),
        job("new", "PENDING", created=NOW - 125, epochs=None),
        job("nan", "RUNNING", created=NOW - 7200),
    )
    training = {
        "old": Training(train_loss=0.123456, eval_loss=0.2, epoch=1.5),
        "nan": Training(train_loss=math.nan, epoch=0.5),
    }
    page = Page(render(FakeUnit(jobs=jobs, training=training)))
    assert page.rows("active") == [
        ["name-new", "qwen3-8b", "PENDING", "2m 5s", "\u2014", "\u2014"],
        ["name-nan", "qwen3-8b", "RUNNING", "2h 0m", "17%", "NaN"],
        ["name-old", "qwen3-8b", "RUNNING", "2d 3h", "50%", "0.1235 / 0.2"],
    ]


def test_lists_are_bounded_and_say_how_many_are_left_out() -> None:
    active = tuple(job(f"a{i:03d}", created=NOW - i) for i in range(130))
    ended = tuple(
        job(f"e{i:03d}", "SUCCEEDED", ended=NOW - 60 * i, tokens=1000 * i) for i in range(25)
    )
    page = Page(render(FakeUnit(jobs=active + ended)))
    rows = page.rows("active")
    assert len(rows) == statuspage.MAX_ACTIVE == 100
    assert rows[0][0] == "name-a000"
    assert "and 30 more (see /metrics)" in "".join(page.text)
    ended_rows = page.rows("ended")
    assert len(ended_rows) == statuspage.MAX_ENDED == 10
    assert [row[0] for row in ended_rows[:2]] == ["name-e000", "name-e001"]
    assert ended_rows[1][3:] == ["1m 0s ago", "1,000"]
    assert "10 of 25" in "".join(page.text)


def test_100_jobs_fit_in_50_kb() -> None:
    jobs = tuple(
        job(f"ft-2026112{i:04d}-{i:04x}", "RUNNING" if i % 2 else "SUCCEEDED", ended=NOW)
        for i in range(100)
    )
    training = {j.job_id: Training(train_loss=0.5, eval_loss=0.6, epoch=1.2) for j in jobs}
    failures = Failures(
        tuple(statuspage_failed(message="m" * MAX_MESSAGE_CHARS) for _ in range(10)),
        (("Throttling", "429", 10),),
    )
    body = render(FakeUnit(jobs=jobs, training=training, failed=failures))
    assert len(body) < 50_000, len(body)


def test_stale_data_and_no_sweep_yet_say_so() -> None:
    stale = Page(render(FakeUnit(up=False, last_success=NOW - 3600, jobs=(job("a"),))))
    text = "".join(stale.text)
    assert "The data is stale: the last complete sweep is 1h 0m ago." in text
    assert stale.first("stale") == "yes (older than 15m 0s)"
    assert stale.first("badge") == "down"
    assert stale.first("last-sweep") == "2027-01-15 07:00:00 UTC (1h 0m ago)"
    fresh = Page(render(FakeUnit(jobs=(job("a"),))))
    assert (fresh.first("stale"), fresh.first("badge")) == ("no", "up")
    failing = Page(render(FakeUnit(up=False, last_success=NOW - 60, jobs=(job("a"),))))
    assert (failing.first("stale"), failing.first("badge")) == ("no", "failing")
    assert "latest sweepfailed, took 1.25s" in "".join(failing.text)
    never = Page(render(FakeUnit(up=False, swept=False)))
    assert "No complete sweep yet" in "".join(never.text)
    assert never.first("last-sweep") == "never"
    assert "No account is polled yet." in "".join(Page(render()).text)


def test_links_refresh_and_several_accounts() -> None:
    body = render(
        FakeUnit(name="a", poll_interval=30),
        FakeUnit(name="b", poll_interval=90),
        alerts="https://example.org/ft-exporter#the-alerts",
    )
    assert b'<meta http-equiv="refresh" content="30">' in body
    for href in (
        "./metrics",
        "./-/healthy",
        "./-/ready",
        "https://example.org/ft-exporter#the-alerts",
    ):
        assert f'href="{href}"'.encode() in body
    page = Page(body)
    assert page.by_class["account"] == ["a", "b"]
    assert b'id="account-1"' in body and b'id="account-2"' in body
    assert b'content="5"' in render(FakeUnit(poll_interval=0.05))  # never faster than 5 s
    assert b"section \xe2\x80\x9cThe alerts\xe2\x80\x9d" in render(FakeUnit())  # no URL known


def test_alerts_url_comes_from_the_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    meta = Message()
    meta["Project-URL"] = "Issues, https://example.org/ft-exporter/issues"
    meta["Project-URL"] = "Repository, https://example.org/ft-exporter/"
    monkeypatch.setattr(importlib.metadata, "metadata", lambda _name: meta)
    assert statuspage.alerts_url() == "https://example.org/ft-exporter#the-alerts"
    monkeypatch.setattr(importlib.metadata, "metadata", lambda _name: Message())
    assert statuspage.alerts_url() == ""
    placeholder = Message()
    placeholder["Project-URL"] = "Source, https://ft-exporter.invalid/source"
    monkeypatch.setattr(importlib.metadata, "metadata", lambda _name: placeholder)
    assert statuspage.alerts_url() == ""  # a placeholder host is no link


def test_the_shipped_metadata_gives_no_dead_alerts_link() -> None:
    url = statuspage.alerts_url()
    assert ".invalid" not in url


def test_recent_failures_keep_the_last_ten_newest_first_and_count_all() -> None:
    clock = iter(range(100)).__next__
    ring = RecentFailures(clock=lambda: float(clock()))
    for i in range(12):
        ring.add("list", ApiError("Throttling", f"slow down {i}", "429", f"rid-{i}"))
    ring.add("logs", ApiError("InternalError", "line\nbreak\x1b[31m" + "x" * 500, "500"))
    got = ring.snapshot()
    assert [f.request_id for f in got.recent] == ["", *(f"rid-{i}" for i in range(11, 2, -1))]
    assert got.recent[0].message.startswith("line break\ufffd[31mxxx")
    assert len(got.recent[0].message) == MAX_MESSAGE_CHARS
    assert (got.recent[0].at, got.recent[0].endpoint) == (12.0, "logs")
    assert got.by_code == (("Throttling", "429", 12), ("InternalError", "500", 1))


def test_self_metrics_feed_the_ring_for_as_long_as_the_counters_live() -> None:
    metrics = SelfMetrics(CollectorRegistry())
    account = metrics.account("acct")
    account.observe("list", 0.1, ApiError("Throttling", "slow down", "429", "rid-1"))
    account.observe("list", 0.1, None)
    account.reject(ApiError("InvalidResponse", "total=3 but held 2", "200", "rid-2"))
    got = metrics.account("acct").failures()  # a restarted account keeps them
    assert [(f.code, f.http_status, f.request_id) for f in got.recent] == [
        ("InvalidResponse", "200", "rid-2"),
        ("Throttling", "429", "rid-1"),
    ]
    assert metrics.failures("other") == Failures()
    metrics.remove("acct")
    assert metrics.account("acct").failures() == Failures()


def test_routes_serve_the_page_with_headers_that_forbid_running_anything() -> None:
    unit = FakeUnit(jobs=tuple(job(f"ft-{i}") for i in range(20)))
    routes = Routes(CollectorRegistry(), lambda: True, units=lambda: [unit], clock=lambda: NOW)
    response = routes(Request("GET", "/"))
    assert response.status == 200
    assert response.content_type == "text/html; charset=utf-8"
    headers = dict(response.headers)
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; style-src")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert Page(response.body).first("quota-used") == "20"
    zipped = routes(Request("GET", "/", {"accept-encoding": "gzip"}))
    assert dict(zipped.headers)["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == response.body


def test_recent_errors_after_injected_faults_never_show_the_key(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    """429, 500 and an HTML 502 from the API: each listed with its code, HTTP status and
    request id (none for the HTML page, which has none), the key echoed by the API
    nowhere on the page."""
    key = simulator.key
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}", "--poll.interval=0.2"],
        env={"DASHSCOPE_API_KEY": key},
    )

    def failures() -> list[list[str]]:
        status, body = http_get(exp.url + "/")
        assert status == 200
        assert key.encode() not in body
        assert key[:12].encode() not in body
        return Page(body).rows("failures")

    echo = f"bad request with key {key} (Bearer {key})"
    simulator.fault("throttle", count=1, message=echo)
    wait_for(lambda: len(failures()) == 1, what="the 429 on the page")
    simulator.fault("error500", count=1, message=echo)
    wait_for(lambda: len(failures()) == 2, what="the 500 on the page")
    simulator.fault("html502", count=1)
    wait_for(lambda: len(failures()) == 3, what="the 502 on the page")
    rows = failures()
    assert [row[1:4] for row in rows] == [
        ["list", "502", "InvalidResponse"],
        ["list", "500", "InternalError"],
        ["list", "429", "Throttling"],
    ]
    assert rows[0][4:] == ["HTTP 502 with body without an error code", "\u2014"]
    for row in rows[1:]:
        assert row[4] == "bad request with key <redacted> (Bearer <redacted>)"
        assert re.fullmatch(r"sim-\d{8}", row[5]), row
    assert rows[1][5] != rows[2][5]
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row[0]), row
    assert Page(http_get(exp.url + "/")[1]).rows("errors") == [
        ["InternalError", "500", "1"],
        ["InvalidResponse", "502", "1"],
        ["Throttling", "429", "1"],
    ]


def test_long_text_from_the_api_is_clipped_on_the_page() -> None:
    long = "n" * 200
    page = Page(render(FakeUnit(jobs=(job("ft-1", name=long, model=long),))))
    assert page.rows("active")[0][:2] == ["n" * 79 + "\u2026"] * 2
    assert page.rows("counts")[0][0] == "n" * 79 + "\u2026"


def test_the_readme_shows_both_screenshots_and_they_stay_small() -> None:
    section = readme_section("## Status page")
    total = 0
    for name in ("status-page-desktop.png", "status-page-phone.png"):
        assert f"docs/{name}" in section
        data = (ROOT / "docs" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        total += len(data)
    assert total < 400_000, total
    for words in ("80 %", "2 more jobs can start", "the last 10 failed requests"):
        assert words in section
