"""The set of accounts as units: readiness and what a change of the set does, in process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ft_exporter.account import Accounts
from ft_exporter.selfmetrics import SelfMetrics


def test_an_empty_shard_is_ready_once_applied() -> None:
    accounts = Accounts(SelfMetrics(CollectorRegistry()))
    assert not accounts.ready  # nothing known yet
    assert accounts.apply([]) == ([], [], [])
    assert accounts.ready
    assert accounts.units() == ()
