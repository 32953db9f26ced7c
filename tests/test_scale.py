"""The simulator's --latency delays every API answer (the many-accounts benchmark uses it)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from conftest import Simulator

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
