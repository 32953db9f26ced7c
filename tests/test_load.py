"""Load and soak: many scrapers cost no API calls; hundreds of sweeps leak nothing."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import tracemalloc
from collections.abc import Callable

import pytest
from conftest import ROOT, UTC8, Exporter, Simulator, value
from prometheus_client import CollectorRegistry, generate_latest

from ft_exporter import simulator
from ft_exporter.client import FineTuneClient
from ft_exporter.collector import CollectorSettings, FineTuneCollector
from ft_exporter.poller import Poller
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import Secret
from ft_exporter.selfmetrics import ExporterMetrics

sys.path.insert(0, str(ROOT / "benchmarks"))
from load import run_load


@pytest.mark.xdist_group("heavy")  # global load: never two at once
def test_200_concurrent_scrapers_while_sweeps_run(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(
        [
            f"--dashscope.base-url={simulator.url}",
            "--poll.interval=1s",
            "--dashscope.page-size=7",
            "--dashscope.max-requests-per-second=100",
        ],
        env={"DASHSCOPE_API_KEY": simulator.key},
    )
    result = run_load(exp.url + "/metrics", scrapers=200, per_scraper=5)
    print(f"\nLOAD {result}")
    assert result.scrapes == 1000
    assert result.errors == 0
    # Read the simulator first: sweeps go on, so its count can only be lower than the
    # exporter's counters read after it.
    api_side = simulator.stats()["list_requests"]
    text = exp.metrics()
    sweeps = value(text, "dashscope_finetune_sweeps_total", account="default")
    requests = value(text, "dashscope_finetune_api_requests_total", account="default")
    assert sweeps is not None and sweeps >= 1
    # Each sweep is 3 pages (20 entries at 7 a page); scrapes add nothing.
    assert requests is not None and 3 * sweeps <= requests <= 3 * sweeps + 2
    assert api_side <= requests


@pytest.mark.xdist_group("heavy")  # global load: never two at once
def test_soak_hundreds_of_sweeps_do_not_grow_memory_or_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pytest keeps every captured log record; the exporter's own logging still runs.
    logger = logging.getLogger("ft_exporter")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(logging.NullHandler())
    sim = simulator.serve(key="sk-soak", scenario="static")
    try:
        registry = CollectorRegistry()
        metrics = ExporterMetrics(registry, "default")
        client = FineTuneClient(
            sim.url,
            Secret("sk-soak"),
            page_size=7,
            tz=UTC8,
            observer=metrics,
            retry=RetryPolicy(max_attempts=2, base_delay=0.001),
        )
        poller = Poller(lambda: client.sweep(), 60)
        registry.register(FineTuneCollector(poller.state, CollectorSettings()))
        faults = ["throttle", "truncated", "html502", "total_high", "none"]

        def round_of(n: int) -> None:
            for i in range(n):
                mode = faults[i % len(faults)]
                with sim.account._lock:
                    sim.account.fault = simulator.Fault(mode, count=1 if mode != "none" else None)
                poller.run_once()
                generate_latest(registry)

        round_of(50)  # warm up caches, pools and interned strings
        gc.collect()
        threads_before = threading.active_count()
        tracemalloc.start()
        round_of(100)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        round_of(300)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"\nSOAK 300 sweeps: traced memory {before} -> {after} bytes, "
            f"threads {threads_before} -> {threading.active_count()}"
        )
        assert threading.active_count() == threads_before
        assert after - before < 64 * 1024
        sweeps = value(
            generate_latest(registry).decode(),
            "dashscope_finetune_api_requests_total",
            account="default",
        )
        assert sweeps is not None and sweeps > 300
    finally:
        sim.stop()
