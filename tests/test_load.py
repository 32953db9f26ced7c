"""Load and soak: many scrapers cost no API calls; hundreds of sweeps leak nothing."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import pytest
from conftest import ROOT, Exporter, Simulator, value

sys.path.insert(0, str(ROOT / "benchmarks"))
from load import run_load
from soak import run_soak


@pytest.mark.serial  # machine-wide load and timing bounds: run alone
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
    assert result.scrapes == 1000
    assert result.errors == 0
    # Read the simulator first: sweeps go on, so its count can only be lower than the
    # exporter's counters read after it.
    api_side = simulator.stats()["list_requests"]
    text = exp.metrics()
    sweeps = value(text, "dashscope_finetune_sweeps_total", account="default")
    requests = value(
        text, "dashscope_finetune_api_requests_total", account="default", endpoint="list"
    )
    assert sweeps is not None and sweeps >= 1
    # Each sweep is 3 pages (20 entries at 7 a page; the static scenario lists jobs out of
    # create_time order and holds a malformed entry, so every sweep reads every page: never
    # incremental, see test_incremental.py for those); scrapes add nothing. A sweep counts
    # when it is published, its requests as they are made: the sweep in flight may have
    # made all 3 of its requests before it is counted.
    assert requests is not None and 3 * sweeps <= requests <= 3 * sweeps + 3
    assert api_side <= requests


@pytest.mark.isolated  # traces its whole process's memory and threads
def test_soak_hundreds_of_sweeps_do_not_grow_memory_or_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pytest keeps every captured log record; the exporter's own logging still runs.
    logger = logging.getLogger("ft_exporter")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(logging.NullHandler())
    result = run_soak(300)
    assert result.threads_after == result.threads_before
    assert result.memory_after - result.memory_before < 64 * 1024
    # Every request was made and counted: 90 rounds of the five faults (450 sweeps), 20
    # entries at 7 a page. throttle and html502 (one answer each): retried, 1 + 3
    # requests; truncated: 1 request, the sweep fails; total_high on page 1 only (later
    # pages say 20): 3 requests; none: 3 requests. 15 requests a round. Every sweep is
    # full: the static scenario is out of create_time order and holds a malformed entry.
    assert result.api_requests == 1350
    assert result.simulator_requests == 1350
    failed = {key: count for key, count in result.errors.items() if count}
    assert failed == {
        ("Throttling", "429"): 90,
        ("InvalidResponse", "502"): 90,
        ("InvalidResponse", "200"): 90,
    }
