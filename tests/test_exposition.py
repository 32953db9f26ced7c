"""/metrics from cached bytes equals prometheus_client rendering the registry on the spot.

Every scrape here is answered by Routes (what the server serves) and compared byte for
byte with ``generate_latest`` of the same registry at the same moment, in both formats
and gzipped; the registry is built as cli.main builds it, minus the collectors whose
values move between two renderings (process, GC).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gzip
import logging
import math
import random
import subprocess
import threading
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import pytest
from conftest import Exporter as ProcessExporter
from conftest import Simulator, require_tool
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector

from ft_exporter import cli
from ft_exporter.client import LIST, ApiError
from ft_exporter.collector import CollectorSettings, FineTuneCollector, Part, StateUnit
from ft_exporter.cost import Prices
from ft_exporter.http.exposition import (
    COMBINE_BYTES,
    OPENMETRICS,
    TEXT,
    ExporterRegistry,
    Exposition,
    crc32_combine,
)
from ft_exporter.http.routes import MIN_GZIP_BYTES, Request, Routes
from ft_exporter.http.server import ExporterHTTPServer, HttpMetrics
from ft_exporter.model import ExporterState, Job, JobParseError, Snapshot, Training, parse_job
from ft_exporter.reload import Reloader
from ft_exporter.selfmetrics import SelfMetrics
from ft_exporter.simulator import hostile_jobs, static_jobs

NOW = 10_000.0
OM_ACCEPT = "application/openmetrics-text; version=1.0.0"


def job(n: int, status: str = "RUNNING", **fields: object) -> Job:
    values: dict[str, object] = {
        "job_id": f"ft-{n:04d}",
        "job_name": f"name-{n}",
        "status": status,
        "model": f"qwen3-{n % 3}b",
        "base_model": "qwen3-8b",
        "training_type": "sft",
        "finetuned_output": "",
        "created": 1000.0 + n,
        "ended": 2000.0 + n if status in ("SUCCEEDED", "FAILED", "CANCELED") else None,
        "usage_tokens": 100 * n,
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


def state(
    *jobs: Job, taken_at: float = NOW - 5, training: dict[str, Training] | None = None
) -> ExporterState:
    return ExporterState(
        Snapshot(tuple(jobs), taken_at=taken_at, malformed_jobs=1, training=training or {}),
        up=True,
        last_success=taken_at,
        last_sweep_duration=0.5,
    )


@dataclass
class Unit:
    """An account whose state a test replaces, as a poller publishes a sweep."""

    settings: CollectorSettings
    current: ExporterState = field(default_factory=ExporterState)

    def state(self) -> ExporterState:
        return self.current


class Fixed(Collector):
    """Live families of the kinds the exporter's own counters have: counter, histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = Counter("fixed_events", "Events.", ["kind"], registry=self.registry)
        self.histogram = Histogram("fixed_seconds", "Time.", registry=self.registry)
        self.counter.labels('a"\\\n').inc()
        self.histogram.observe(0.3)

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        yield from self.registry.collect()


class InPlace(Collector):
    """A collector that yields one Metric object, changed in place between scrapes."""

    def __init__(self) -> None:
        self.family = GaugeMetricFamily("in_place", "Changed in place.", labels=["n"])

    def collect(self) -> Iterator[Metric]:
        yield self.family


@dataclass
class Exporter:
    """A registry wired as cli.main wires it, and the Routes that serve it."""

    units: list[Unit]
    prices: list[Prices | None]
    clock: list[float]
    registry: ExporterRegistry
    metrics: SelfMetrics
    collector: FineTuneCollector
    routes: Routes
    connections: list[int] = field(default_factory=lambda: [0])
    in_place: InPlace = field(default_factory=lambda: InPlace())

    def scrape(self, accept: str = "", encoding: str = "") -> tuple[int, bytes, dict[str, str]]:
        headers = {"accept": accept, "accept-encoding": encoding}
        response = self.routes(Request("GET", "/metrics", headers))
        return response.status, response.body, dict(response.headers)

    def expected(self, accept: str = "") -> bytes:
        if accept:
            return bytes(generate_openmetrics(self.registry))  # type: ignore[no-untyped-call]
        return generate_latest(self.registry)

    def check(self) -> bytes:
        """Every format, plain and gzipped, equals rendering on the spot; the text body."""
        for accept in ("", OM_ACCEPT):
            expected = self.expected(accept)
            status, body, _ = self.scrape(accept)
            assert status == 200
            assert body == expected
            status, body, headers = self.scrape(accept, "gzip")
            assert status == 200
            assert headers.get("Content-Encoding") == "gzip"
            assert gzip.decompress(body) == expected
            # One gzip member: readers that stop after the first (curl) get it all.
            reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert reader.decompress(body) == expected
            assert reader.eof and reader.unused_data == b""
        return self.expected()


def exporter(*units: Unit, prices: Prices | None = None) -> Exporter:
    """cli.main's registry: platform, own counters, the collector, HTTP, reload gauges."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as cli.build_registry does
    registry = ExporterRegistry()
    PlatformCollector(registry=registry)
    registry.register(Fixed())
    metrics = SelfMetrics(registry)
    for unit in units:
        metrics.account(unit.settings.account)
    unit_list = list(units)
    price_list = [prices]
    clock = [NOW]
    collector = FineTuneCollector(
        lambda: unit_list, clock=lambda: clock[0], prices=lambda: price_list[0]
    )
    registry.register(collector)
    connections = [3]
    HttpMetrics(registry, 512, lambda: connections[0])
    in_place = InPlace()
    registry.register(in_place)
    Reloader(registry, lambda: None, lambda _: None, clock=lambda: 1234.5)
    routes = Routes(registry, lambda: True)
    return Exporter(
        unit_list, price_list, clock, registry, metrics, collector, routes, connections, in_place
    )


def many_jobs(count: int) -> list[Job]:
    statuses = ("RUNNING", "SUCCEEDED", "FAILED", "QUEUING", "CANCELED", "PAUSED")
    return [job(n, statuses[n % len(statuses)]) for n in range(count)]


def account(name: str, *jobs: Job, **settings: object) -> Unit:
    return Unit(CollectorSettings(account=name, **settings), state(*jobs))  # type: ignore[arg-type]


def test_main_builds_a_registry_that_lists_its_collectors_in_order() -> None:
    registry = cli.build_registry()
    assert isinstance(registry, ExporterRegistry)
    kinds = [type(c).__name__ for c in registry.collectors()]
    assert kinds == ["ProcessCollector", "PlatformCollector", "GCCollector"]
    collector = FineTuneCollector(lambda: [])
    registry.register(collector)
    assert registry.collectors()[-1] is collector
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(FineTuneCollector(lambda: []))  # a duplicate name: refused
    assert registry.collectors()[-1] is collector
    registry.unregister(collector)
    assert collector not in registry.collectors()


def test_one_account_many_jobs_with_training() -> None:
    jobs = many_jobs(300)
    training = Training(
        train_loss=math.nan, eval_loss=0.25, epoch=1.5, log_lines=7, last_growth=NOW - 60
    )
    unit = Unit(CollectorSettings(), state(*jobs, training={jobs[-1].job_id: training}))
    exp = exporter(unit)
    text = exp.check().decode()
    assert 'dashscope_finetune_job_train_loss{account="default",job_id="ft-0299"} NaN' in text
    assert text.count("# TYPE dashscope_finetune_job_info gauge") == 1
    assert text.count("dashscope_finetune_job_info{") == 100  # --jobs.max-series


def test_several_accounts_one_family_per_name_with_prices() -> None:
    prices = Prices("CNY", {"qwen3-1b": 0.5}, 0.125)
    exp = exporter(
        account("sg", *many_jobs(40)),
        account("bj", job(1, "SUCCEEDED", model="other")),
        account("empty"),
        prices=prices,
    )
    text = exp.check().decode()
    assert text.count("# HELP dashscope_finetune_estimated_cost ") == 1
    assert 'dashscope_finetune_estimated_cost{account="bj",currency="CNY",model="other"}' in text
    assert text.count("# TYPE dashscope_finetune_up gauge") == 1
    up = [line for line in text.splitlines() if line.startswith("dashscope_finetune_up{")]
    assert up == [
        'dashscope_finetune_up{account="sg"} 1.0',
        'dashscope_finetune_up{account="bj"} 1.0',
        'dashscope_finetune_up{account="empty"} 1.0',
    ]


def test_stale_and_never_swept_accounts_decided_at_scrape_time() -> None:
    fresh = account("fresh", job(1))
    old = account("old", job(2))
    old.current = state(job(2), taken_at=NOW - 600)
    never = Unit(CollectorSettings(account="never"))
    exp = exporter(fresh, old, never, prices=Prices("USD", {}, 1.0))
    text = exp.check().decode()
    assert 'job_info{account="old"' in text
    exp.clock[0] = NOW + 400  # "old" passes --poll.max-staleness (900 s), "fresh" does not
    text = exp.check().decode()
    assert 'job_info{account="old"' not in text
    assert 'job_info{account="fresh"' in text
    assert 'estimated_cost{account="old"' not in text
    assert 'dashscope_finetune_up{account="old"} 1.0' in text
    exp.clock[0] = NOW + 1000  # every account stale: no job-state family at all
    text = exp.check().decode()
    assert "dashscope_finetune_jobs" not in text
    assert "# TYPE dashscope_finetune_up gauge" in text


def hostile_api_jobs() -> list[Job]:
    jobs = []
    for sim in [*hostile_jobs(), *static_jobs()]:
        with contextlib.suppress(JobParseError):  # the malformed job of the static scenario
            jobs.append(parse_job(sim.to_api(NOW, UTC), UTC))
    return jobs


def test_hostile_label_values_from_the_api_and_built_raw() -> None:
    raw = job(
        7,
        job_id='ft-raw"\\\n\udc80',
        job_name="\x00\x1b[31m\u2028 # EOF\n",
        model='m{a="b"}',
        status="paused\u202e",
    )
    exp = exporter(
        account('ho"st\\ile\n', *hostile_api_jobs()),
        account("raw", raw),
        prices=Prices("CNY", {}, 1.0),
    )
    text = exp.check().decode()
    assert 'account="ho\\"st\\\\ile\\n"' in text


def test_a_new_snapshot_replaces_the_cached_bytes() -> None:
    unit = account("sg", job(1, "RUNNING"))
    exp = exporter(unit, account("bj", job(2)))
    first = exp.check()
    assert exp.check() == first  # unchanged: the cached bytes again
    unit.current = state(job(1, "SUCCEEDED"), job(3, "QUEUING"))
    second = exp.check()
    assert second != first
    assert 'job_id="ft-0003"' in second.decode()
    # A failed sweep keeps the snapshot and publishes a new state: up goes to 0.
    unit.current = dataclasses.replace(unit.current, up=False, last_sweep_duration=9.0)
    text = exp.check().decode()
    assert 'dashscope_finetune_up{account="sg"} 0.0' in text
    assert 'dashscope_finetune_sweep_duration_seconds{account="sg"} 9.0' in text
    lines = exp.routes.exposition._lines
    # Only the parts now served stay cached: the replaced snapshot's went.
    served = set(exp.collector.parts())
    assert set(lines[id(exp.collector), TEXT]) == served
    assert set(lines[id(exp.collector), OPENMETRICS]) == served


def test_an_account_removed_by_reload_leaves_no_bytes() -> None:
    units = (account("keep", job(1)), account("gone", job(2)))
    exp = exporter(*units)
    assert 'account="gone"' in exp.check().decode()
    del exp.units[1]
    exp.metrics.remove("gone")  # what Accounts.apply does for a removed account
    text = exp.check().decode()
    assert 'account="gone"' not in text
    assert 'account="keep"' in text


def test_the_live_part_changes_between_scrapes() -> None:
    exp = exporter(account("sg", job(1)))
    exp.check()
    exp.connections[0] = 17
    exp.in_place.family.add_metric(["5"], 1.0)
    text = exp.check().decode()
    assert "dashscope_finetune_exporter_http_open_connections 17.0" in text
    assert 'in_place{n="5"} 1.0' in text  # the same Metric object, a sample more
    metrics = exp.metrics.account("sg")
    metrics.observe(LIST, 0.2, ApiError("Throttling", "slow down", "429"))
    text = exp.check().decode()
    assert (
        'dashscope_finetune_api_errors_total{account="sg",code="Throttling",'
        'endpoint="list",http_status="429"} 1.0' in text
    )


def test_no_accounts_and_small_bodies_are_not_gzipped() -> None:
    registry = ExporterRegistry()
    registry.register(FineTuneCollector(lambda: []))
    routes = Routes(registry, lambda: True)
    for accept, expected in (("", b""), (OM_ACCEPT, b"# EOF\n")):
        response = routes(Request("GET", "/metrics", {"accept": accept, "accept-encoding": "gzip"}))
        assert response.status == 200
        assert response.body == expected
        assert len(expected) < MIN_GZIP_BYTES
        assert ("Content-Encoding", "gzip") not in response.headers


def test_a_plain_registry_is_rendered_whole() -> None:
    registry = CollectorRegistry()
    registry.register(Fixed())
    body = Routes(registry, lambda: True)(Request("GET", "/metrics")).body
    assert body == generate_latest(registry)


def test_each_part_is_rendered_once_per_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    real = Exposition._part_lines

    def counted(self: Exposition, part: Part, fmt: object) -> dict[str, bytes]:
        rendered.append(part.families[0].name)
        return real(self, part, fmt)  # type: ignore[arg-type]

    monkeypatch.setattr(Exposition, "_part_lines", counted)
    unit = account("sg", job(1))
    exp = exporter(unit, account("bj", job(2)))
    for _ in range(3):
        exp.scrape()
        exp.scrape(encoding="gzip")
    # Two accounts, each its job-state, status and own-counter parts, rendered once.
    once = ["dashscope_finetune_jobs", "dashscope_finetune_quota_limit_jobs"]
    once.append("dashscope_finetune_api_requests")
    assert sorted(rendered) == sorted(once * 2)
    rendered.clear()
    unit.current = state(job(1, "FAILED"))
    exp.scrape()
    # Only the account whose sweep published a new snapshot and state.
    assert sorted(rendered) == once[:2]
    rendered.clear()
    exp.metrics.account("bj").observe(LIST, 0.1, None)
    exp.scrape()
    exp.scrape()
    assert rendered == ["dashscope_finetune_api_requests"]  # only bj's own counters


class Broken(Collector):
    def describe(self) -> Iterator[object]:
        return iter(())

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        raise RuntimeError("boom")


def test_a_render_failure_answers_500_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_state() -> ExporterState:
        raise RuntimeError("no state")

    collectors: list[Callable[[], Collector]] = [
        Broken,
        lambda: FineTuneCollector(lambda: [StateUnit(CollectorSettings(), broken_state)]),
    ]
    for make in collectors:
        registry = ExporterRegistry()
        registry.register(make())
        routes = Routes(registry, lambda: True)
        caplog.clear()
        with caplog.at_level(logging.ERROR, "ft_exporter.http.routes"):
            for encoding in ("", "gzip", ""):
                response = routes(Request("GET", "/metrics", {"accept-encoding": encoding}))
                assert (response.status, response.body) == (500, b"Error rendering metrics\n")
        assert [r.getMessage() for r in caplog.records] == ["rendering metrics failed"]


def test_created_series_are_rendered_live_and_still_equal() -> None:
    """With *_created series the text format moves samples: no joining of lines then."""
    enable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        registry = ExporterRegistry()
        metrics = SelfMetrics(registry)
        metrics.account("sg").observe(LIST, 0.1, None)
        metrics.account("bj")
        exp = Exporter(
            [],
            [None],
            [NOW],
            registry,
            metrics,
            FineTuneCollector(lambda: []),
            Routes(registry, lambda: True),
        )
        text = exp.check().decode()
        assert "# TYPE dashscope_finetune_api_requests_created gauge" in text
    finally:
        disable_created_metrics()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("first", "second"), [(0, 0), (0, 7), (7, 0), (1, 1), (1000, 300_000), (5, 1 << 20)]
)
def test_crc32_combine_equals_the_crc_of_the_joined_bytes(first: int, second: int) -> None:
    rng = random.Random(first * 7 + second)
    a, b = rng.randbytes(first), rng.randbytes(second)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_a_hundred_accounts_body_past_the_combine_threshold() -> None:
    units = [account(f"acct-{n:03d}", *hostile_api_jobs()) for n in range(100)]
    exp = exporter(*units, prices=Prices("CNY", {}, 1.0))
    assert len(exp.check()) > 2 * COMBINE_BYTES
    units[50].current = state(job(1, "FAILED"))  # one account's new sweep
    exp.metrics.account("acct-007").sweep_ended(False)
    text = exp.check().decode()
    assert 'dashscope_finetune_sweep_failures_total{account="acct-007"} 1.0' in text


# -- against the real process ---------------------------------------------------------------


def promtool_check(text: bytes) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


@pytest.mark.e2e
def test_the_real_process_serves_gzip_in_both_formats_that_parses(
    tmp_path: Path, exporter_factory: Callable[..., ProcessExporter]
) -> None:
    """Hostile jobs and a price table, several scrapes (cached and fresh), gzipped: the
    text passes promtool, OpenMetrics prometheus_client's strict parser."""
    sim = Simulator(tmp_path, scenario="hostile")
    config = tmp_path / "accounts.yml"
    config.write_text(
        "prices:\n  currency: CNY\n  per_1k_tokens:\n    default: 0.5\naccounts:\n"
        + "".join(
            f"  - name: {name}\n    base_url: {sim.url}\n    api_key_env: SIM_KEY\n"
            for name in ("one", "two")
        )
    )
    try:
        exp = exporter_factory([f"--config.file={config}"], env={"SIM_KEY": sim.key})
        for _ in range(3):
            status, body = exp.get("/metrics", headers={"Accept-Encoding": "gzip"})
            assert status == 200
            text = gzip.decompress(body)
            promtool_check(text)
            assert text.count(b"# TYPE dashscope_finetune_job_info gauge") == 1
            assert b'dashscope_finetune_estimated_cost{account="two"' in text
            status, body = exp.get(
                "/metrics", headers={"Accept-Encoding": "gzip", "Accept": OM_ACCEPT}
            )
            assert status == 200
            om_text = gzip.decompress(body).decode()
            assert om_text.endswith("# EOF\n")
            families = {f.name: f for f in parse_openmetrics(om_text)}  # type: ignore[no-untyped-call]
            accounts = {
                s.labels["account"] for s in families["dashscope_finetune_job_info"].samples
            }
            assert accounts == {"one", "two"}
    finally:
        sim.stop()


def test_a_render_in_progress_does_not_hold_up_the_event_loop() -> None:
    """Routes run on worker threads: while a render waits, health checks are answered."""
    rendering = threading.Event()
    release = threading.Event()

    class Slow(Collector):
        def describe(self) -> Iterator[Metric]:
            return iter(())

        def collect(self) -> Iterator[Metric]:
            rendering.set()
            release.wait(30)
            yield GaugeMetricFamily("slow", "Slow.", value=1.0)

    registry = ExporterRegistry()
    registry.register(Slow())
    server = ExporterHTTPServer(("127.0.0.1", 0), registry, lambda: True)
    server.serve_in_thread()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            scrape = pool.submit(
                lambda: urllib.request.urlopen(base + "/metrics", timeout=30).read()
            )
            assert rendering.wait(10)
            with urllib.request.urlopen(base + "/-/healthy", timeout=10) as response:
                assert response.read() == b"Healthy\n"
            assert not scrape.done()  # the render still waits, and the loop answered
            release.set()
            # The server's own gauges follow, registered after Slow.
            assert scrape.result(30).startswith(b"# HELP slow Slow.\n# TYPE slow gauge\nslow 1.0\n")
    finally:
        release.set()
        server.shutdown()
        server.server_close()
