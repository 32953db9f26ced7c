"""The set of accounts as units: readiness and what a change of the set does, in process."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from ft_exporter import config, configfile
from ft_exporter.account import Account, Accounts, spec_of
from ft_exporter.secret import Secret
from ft_exporter.selfmetrics import SelfMetrics


def test_an_empty_shard_is_ready_once_applied() -> None:
    accounts = Accounts(SelfMetrics(CollectorRegistry()))
    assert not accounts.ready  # nothing known yet
    assert accounts.apply([]) == ([], [], [])
    assert accounts.ready
    assert accounts.units() == ()


@pytest.mark.parametrize(
    ("flag", "seconds"), [([], 600.0), (["--poll.full-sweep-interval=0"], 0.0)]
)
def test_the_full_sweep_interval_reaches_the_accounts_client(
    flag: list[str], seconds: float
) -> None:
    cfg = config.load(flag, {"DASHSCOPE_API_KEY": "sk-account-test"})
    settings = configfile.base_from_config(cfg)
    spec = spec_of(settings, Secret("sk-account-test"))
    assert spec.full_sweep_interval == seconds
    account = Account(spec, SelfMetrics(CollectorRegistry()))
    try:
        assert account.client._listings.full_sweep_interval == seconds
    finally:
        account.stop()
    # A file account's own value wins over the flag's.
    file_spec = spec_of(replace(settings, full_sweep_interval=90.0), Secret("sk-account-test"))
    assert file_spec.full_sweep_interval == 90.0
