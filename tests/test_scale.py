"""The many-accounts benchmark counts what it claims to, and the simulator's --latency delays.

Counts only: the benchmark's timings are figures for the README, never asserted here.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, Simulator

sys.path.insert(0, str(ROOT / "benchmarks"))
from accounts import run, write_config

pytestmark = pytest.mark.e2e


def test_simulator_latency_delays_every_api_answer(tmp_path: Path) -> None:
    sim = Simulator(tmp_path, extra=["--latency", "0.4"])
    try:
        request = urllib.request.Request(
            sim.url + "/api/v1/fine-tunes", headers={"Authorization": f"Bearer {sim.key}"}
        )
        for _ in range(2):  # the second on a fresh connection too: every answer waits
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            assert time.monotonic() - started >= 0.4
        assert sim.stats()["list_requests"] == 2
    finally:
        sim.stop()


def test_config_spreads_accounts_over_simulators_with_their_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path / "a.yml", ["http://127.0.0.1:1", "http://127.0.0.1:2"], 5, "7s")
    text = path.read_text()
    assert text.count("  - name: acct-") == 5
    assert "acct-004" in text and "acct-005" not in text
    # Round-robin: accounts 0, 2, 4 on the first simulator with its key.
    assert text.count("base_url: http://127.0.0.1:1\n    api_key_env: KEY_0") == 3
    assert text.count("base_url: http://127.0.0.1:2\n    api_key_env: KEY_1") == 2
    assert "poll_interval: 7s" in text


@pytest.mark.serial  # starts 2 exporters and 2 simulators; keep the machine quiet
def test_small_run_reports_every_account_up_and_every_scrape(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        accounts=5,
        simulators=2,
        latency=0.05,
        idle_seconds=1.0,
        scrapes=30,
        concurrency=3,
        poll_interval=1.0,
        window_seconds=4.0,
    )
    assert result.accounts == 5
    assert result.accounts_up == 5
    assert result.idle_sweeps == 0  # 60 s interval: nothing runs in a 1 s idle window
    assert result.sequential is not None and result.concurrent is not None
    assert (result.sequential.count, result.sequential.errors) == (30, 0)
    assert (result.concurrent.count, result.concurrent.errors) == (30, 0)
    # 5 accounts at a 1 s interval over 4 s: each ends at least one sweep in the window.
    assert result.window_sweeps >= 5
    assert result.rounds_per_minute == pytest.approx(
        result.window_sweeps / 5 / (result.window_seconds / 60)
    )
    assert result.series > 5 * 10  # every account's series are on the page
    assert result.rss_mib > 0 and result.idle_cpu >= 0
    assert result.ready_seconds <= result.all_up_seconds
