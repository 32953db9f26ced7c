"""One account as one unit: its client, rate limit, poller, log tailer and snapshot.

Each account sweeps on its own thread and schedule, with its own connection pool, token
bucket and retry budget, so an account that is throttled, failing or hung never delays
another's sweep or changes another's values. The collector renders many units through
:class:`Unit` without knowing their insides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from ft_exporter import keyfile, logs
from ft_exporter.client import FineTuneClient
from ft_exporter.collector import CollectorSettings
from ft_exporter.configfile import AccountSettings
from ft_exporter.failures import Failures
from ft_exporter.model import ExporterState, Snapshot
from ft_exporter.poller import Poller
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import KeySource, Secret
from ft_exporter.selfmetrics import SelfMetrics
from ft_exporter.tailer import DEFAULT_MAX_JOBS, DEFAULT_MAX_LINES, LogTailer


@dataclass(frozen=True)
class AccountSpec:
    """Everything one account needs, resolved (the key as a source, never as text)."""

    base_url: str
    #: Compared by ``key_ref``: a reloaded file makes a new source for the same key.
    keys: KeySource = field(repr=False, compare=False)
    tz: tzinfo
    collector: CollectorSettings
    workspace: str = ""
    models: tuple[str, ...] = ()
    page_size: int = 100
    timeout: float = 10.0
    max_requests_per_second: float = 2.0
    max_attempts: int = 4
    burst_requests: int = 20
    sweep_timeout: float = 60.0
    full_sweep_interval: float = 600.0
    ca_file: str = ""
    poll_interval: float = 60.0
    log_max_jobs: int = DEFAULT_MAX_JOBS
    log_max_lines: int = DEFAULT_MAX_LINES
    #: Where the key comes from (``file:PATH``, ``env:NAME``): what makes it the same key.
    key_ref: str = ""

    @property
    def name(self) -> str:
        return self.collector.account


def spec_of(settings: AccountSettings, keys: KeySource) -> AccountSpec:
    """The spec of an account whose key source is ready."""
    return AccountSpec(
        base_url=settings.base_url,
        keys=keys,
        key_ref=(
            f"file:{settings.api_key_file}"
            if settings.api_key_file
            else f"env:{settings.api_key_env}"
        ),
        tz=settings.timezone,
        workspace=settings.workspace,
        models=settings.models,
        page_size=settings.page_size,
        timeout=settings.timeout,
        max_requests_per_second=settings.max_requests_per_second,
        max_attempts=settings.max_attempts,
        burst_requests=settings.burst_requests,
        sweep_timeout=settings.sweep_timeout,
        full_sweep_interval=settings.full_sweep_interval,
        ca_file=settings.ca_file,
        poll_interval=settings.poll_interval,
        log_max_jobs=settings.log_max_jobs,
        log_max_lines=settings.log_max_lines,
        collector=CollectorSettings(
            account=settings.name,
            quota_limit=settings.quota_limit,
            quota=settings.quota,
            max_job_series=settings.max_job_series,
            max_aggregate_series=settings.max_aggregate_series,
            max_staleness=settings.max_staleness,
        ),
    )


def key_source(
    settings: AccountSettings,
    environ: Mapping[str, str],
    on_key: Callable[[str], None],
) -> KeySource:
    """The account's key, read now (raises keyfile.InvalidKey, naming the source only).

    A key file is followed like --dashscope.api-key-file; ``on_key`` is told every key
    read (the log redacts it) before it is used.
    """
    if settings.api_key_file:
        key, _ = keyfile.read_key_file(settings.api_key_file)
        on_key(key)
        return keyfile.KeyFile(settings.api_key_file, Secret(key), on_change=on_key)
    source = f"${settings.api_key_env}"
    key = keyfile.clean_key(environ.get(settings.api_key_env, ""), source)
    if not key:
        raise keyfile.InvalidKey(f"{source} is not set or empty")
    on_key(key)
    return Secret(key)


class Account:
    """A running account: start() sweeps it on its own thread until stop()."""

    def __init__(self, spec: AccountSpec, metrics: SelfMetrics) -> None:
        self.spec = spec
        self._stop = threading.Event()
        self._metrics = metrics.account(spec.name)
        self.client = FineTuneClient(
            spec.base_url,
            spec.keys,
            workspace=spec.workspace,
            page_size=spec.page_size,
            timeout=spec.timeout,
            tz=spec.tz,
            observer=self._metrics,
            retry=RetryPolicy(max_attempts=spec.max_attempts),
            max_requests_per_second=spec.max_requests_per_second,
            burst=spec.burst_requests,
            sweep_timeout=spec.sweep_timeout,
            full_sweep_interval=spec.full_sweep_interval,
            ca_file=spec.ca_file or None,
            stop=self._stop,
        )
        self.tailer = LogTailer(
            self.client, tz=spec.tz, max_jobs=spec.log_max_jobs, max_lines=spec.log_max_lines
        )
        self.poller = Poller(
            self._sweep,
            spec.poll_interval,
            on_sweep=self._metrics.sweep_ended,
            stop=self._stop,
            name=f"poller {spec.name}",
        )

    def __repr__(self) -> str:
        return f"Account({self.spec.name!r}, {self.client!r})"

    @property
    def settings(self) -> CollectorSettings:
        return self.spec.collector

    def state(self) -> ExporterState:
        return self.poller.state()

    @property
    def poll_interval(self) -> float:
        return self.spec.poll_interval

    def failures(self) -> Failures:
        """The last failed requests and failures by code (the status page's API health)."""
        return self._metrics.failures()

    @property
    def swept(self) -> bool:
        """True once a sweep has ended, successfully or not (readiness: see the README)."""
        return self.poller.swept

    def _sweep(self) -> Snapshot:
        logs.set_account(self.spec.name)  # this thread's log lines name the account
        # The logs are read inside the list's sweep window: one deadline bounds both.
        with self.client.sweep_window():
            return self.tailer.follow(self.client.sweep(self.spec.models))

    def sweep_once(self) -> Snapshot:
        """One sweep on the caller's thread, its ApiError raised (``ft-exporter check``)."""
        return self._sweep()

    def start(self) -> None:
        self.poller.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sweeping (a request in flight is cut short) and close the connections."""
        self._stop.set()
        self.poller.stop(timeout)
        self.client.close()


class Accounts:
    """The accounts being polled, by name; changed whole by :meth:`apply` (start, reload)."""

    def __init__(self, metrics: SelfMetrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._units: tuple[Account, ...] = ()
        self._applied = False

    def units(self) -> tuple[Account, ...]:
        """The current accounts (a tuple replaced whole: scrapes read it without a lock)."""
        return self._units

    @property
    def ready(self) -> bool:
        """Every account has ended a sweep, successfully or not (a replica whose shard
        holds no account is ready once it knows that)."""
        units = self._units
        return self._applied and all(unit.swept for unit in units)

    def apply(self, specs: Sequence[AccountSpec]) -> tuple[list[str], list[str], list[str]]:
        """Poll exactly ``specs``: unchanged accounts keep running untouched, changed ones
        restart, removed ones stop and lose their series. Returns (added, changed, removed)."""
        with self._lock:
            current = {unit.spec.name: unit for unit in self._units}
            wanted = {spec.name: spec for spec in specs}
            added = [name for name in wanted if name not in current]
            changed = [n for n in wanted if n in current and current[n].spec != wanted[n]]
            removed = [name for name in current if name not in wanted]
            for name in changed + removed:
                current[name].stop()
            for name in removed:
                self._metrics.remove(name)
            units = []
            for name, spec in wanted.items():
                if name in current and name not in changed:
                    units.append(current[name])
                else:
                    unit = Account(spec, self._metrics)
                    unit.start()
                    units.append(unit)
            self._units = tuple(units)
            self._applied = True
        return added, changed, removed

    def stop(self) -> None:
        with self._lock:
            units, self._units = self._units, ()
        for unit in units:
            unit.stop(timeout=3.0)
