"""The poller: publishes complete sweeps only, keeps the last good data on failure."""

from __future__ import annotations

import logging

import pytest

from ft_exporter.client import ApiError
from ft_exporter.model import Snapshot
from ft_exporter.poller import Poller


class FakeSweeps:
    def __init__(self, *outcomes: Snapshot | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> Snapshot:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_failure_keeps_snapshot_and_drops_up(caplog: pytest.LogCaptureFixture) -> None:
    snap = Snapshot((), taken_at=1.0)
    throttled = ApiError("Throttling", "slow down", "429", "rid-1")
    sweeps = FakeSweeps(snap, throttled, throttled, throttled, snap)
    results: list[bool] = []
    poller = Poller(sweeps, 60, on_sweep=results.append, clock=lambda: 500.0)
    assert not poller.ready
    assert poller.run_once()
    assert poller.ready and poller.state().up and poller.state().snapshot is snap
    with caplog.at_level(logging.INFO, logger="ft_exporter.poller"):
        for _ in range(3):
            assert not poller.run_once()
            assert poller.state().snapshot is snap
            assert not poller.state().up
            assert poller.state().last_success == 500.0
        assert poller.run_once()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "identical failures are logged once"
    assert "Throttling HTTP 429" in errors[0].getMessage()
    assert "request_id=rid-1" in errors[0].getMessage()
    assert any("recovered after 3 failure(s)" in r.getMessage() for r in caplog.records)
    assert results == [True, False, False, False, True]


def test_unexpected_exception_does_not_kill_the_poller() -> None:
    poller = Poller(FakeSweeps(RuntimeError("bug")), 60)
    assert not poller.run_once()
    assert not poller.state().up


def test_background_thread_sweeps_at_start_and_stops() -> None:
    sweeps = FakeSweeps(*(Snapshot((), taken_at=0.0) for _ in range(100)))
    poller = Poller(sweeps, 3600)
    poller.start()
    assert poller.wait_first(5)
    poller.stop(timeout=5)
    assert sweeps.calls == 1
    assert poller.ready
