"""Entry point: parse configuration, wire the pieces together, run until signalled."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from prometheus_client import disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ft_exporter import __version__, config, configfile, keyfile, logs, sharding, webconfig
from ft_exporter.account import Accounts, AccountSpec, key_source, spec_of
from ft_exporter.collector import FineTuneCollector
from ft_exporter.cost import Prices
from ft_exporter.http.exposition import ExporterRegistry
from ft_exporter.http.server import ExporterHTTPServer, Limits, connection_cap, raise_fd_limit
from ft_exporter.keyfile import KeyFile
from ft_exporter.reload import Reloader, ReloadError
from ft_exporter.secret import KeySource, Secret
from ft_exporter.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from ft_exporter.simulator import SimulatorServer

log = logging.getLogger("ft_exporter")


def build_registry() -> ExporterRegistry:
    """A registry of our own, with the standard process and runtime collectors.

    It lists its collectors, so that /metrics renders the job metrics from cache.
    """
    # *_created series double the counter output and no dashboard uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = ExporterRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _ignore_hangup(_signum: int, _frame: FrameType | None) -> None:
    """SIGHUP's default action kills the process; operators send it expecting a reload."""
    log.info("received SIGHUP before the exporter was up; ignoring")


def read_accounts(
    cfg: config.Config, keys: KeySource, on_key: Callable[[str], None]
) -> tuple[list[AccountSpec], Prices | None]:
    """The accounts this replica polls, and the prices; raises ConfigFileError.

    Without --config.file: the one account the flags describe. With it: the file's
    accounts of this shard, each key read now (so a missing key fails here, whole).
    """
    base = configfile.base_from_config(cfg)
    if not cfg.config_file:
        return [spec_of(base, keys)], None
    loaded = configfile.load(cfg.config_file, base, poll_floor=config.min_poll_interval(os.environ))
    owned = set(sharding.owned([a.name for a in loaded.accounts], cfg.shard, cfg.total_shards))
    specs: list[AccountSpec] = []
    problems: list[str] = []
    for index, settings in enumerate(loaded.accounts):
        if settings.name not in owned:
            continue
        try:
            specs.append(spec_of(settings, key_source(settings, os.environ, on_key)))
        except (keyfile.InvalidKey, OSError) as exc:
            field = "api_key_file" if settings.api_key_file else "api_key_env"
            problems.append(f"accounts[{index}].{field}: {exc}")
    if problems:
        raise configfile.ConfigFileError(problems)
    return specs, loaded.prices


def describe_accounts(cfg: config.Config, specs: Sequence[AccountSpec]) -> str:
    if not cfg.config_file:
        spec = specs[0]
        return (
            f"{spec.base_url} every {spec.poll_interval:g}s (account={spec.name}, "
            f"models={','.join(spec.models) or 'all'})"
        )
    shard = f", shard {cfg.shard} of {cfg.total_shards}" if cfg.total_shards > 1 else ""
    return f"{len(specs)} account(s) of {cfg.config_file}{shard}: " + ",".join(
        spec.name for spec in specs
    )


def start_demo(cfg: config.Config) -> tuple[config.Config, SimulatorServer | None]:
    """Under --demo: the simulator started, and the configuration pointed at it."""
    if not cfg.demo:
        return cfg, None
    from ft_exporter import simulator as sim

    demo_key = "sk-demo-" + secrets.token_hex(8)
    simulator = sim.serve(key=demo_key, tz=cfg.timezone)
    return replace(cfg, api_key=Secret(demo_key), base_url=simulator.url), simulator


def key_source_of(cfg: config.Config, redact: logs.RedactFilter) -> KeySource:
    """The key of the flags' account: a file followed for rotation, or the variable's."""
    if cfg.api_key_file:
        # A rotated key is redacted from the log before it is first used.
        return KeyFile(cfg.api_key_file, cfg.api_key, on_change=redact.add)
    return cfg.api_key


def check_config_command(argv: Sequence[str]) -> int:
    """``ft-exporter check-config FILE [FLAGS]``: validate, print, start nothing."""
    if not argv or argv[0].startswith("-"):
        print("usage: ft-exporter check-config FILE [FLAGS]", file=sys.stderr)
        return 2
    try:
        cfg = config.load(["--config.file", argv[0], *argv[1:]])
    except config.ConfigError as exc:
        print(f"ft-exporter: error: {exc}", file=sys.stderr)
        return 2
    code, lines = configfile.check_config(
        cfg.config_file,
        configfile.base_from_config(cfg),
        poll_floor=config.min_poll_interval(os.environ),
    )
    for line in lines:
        print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["check-config"]:
        return check_config_command(args[1:])
    if args[:1] == ["check"]:
        from ft_exporter import check

        return check.command(args[1:])
    # Until logging is set up a hangup is dropped silently; after that, logged (below).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        cfg = config.load(args)
    except config.ConfigError as exc:
        print(f"ft-exporter: error: {exc}", file=sys.stderr)
        return 2

    cfg, simulator = start_demo(cfg)
    redact = logs.setup(cfg.log_level, cfg.log_format, [cfg.api_key.reveal()])
    signal.signal(signal.SIGHUP, _ignore_hangup)
    keys = key_source_of(cfg, redact)
    for warning in cfg.web.warnings:
        log.warning("--web.config.file %s: %s", cfg.web_config_file, warning)

    try:
        specs, prices = read_accounts(cfg, keys, redact.add)
    except configfile.ConfigFileError as exc:
        for problem in exc.problems:
            print(f"ft-exporter: error: {problem}", file=sys.stderr)
        return 2

    registry = build_registry()
    metrics = SelfMetrics(registry)
    accounts = Accounts(metrics)
    current_prices = [prices]
    registry.register(FineTuneCollector(accounts.units, prices=lambda: current_prices[0]))
    stop = threading.Event()

    before, fd_limit = raise_fd_limit()
    if fd_limit != before:
        log.info("raised the open-file limit from %d to %d", before, fd_limit)
    max_connections = connection_cap(cfg.max_connections, fd_limit)
    if max_connections < cfg.max_connections:
        log.warning(
            "--web.max-connections lowered from %d to %d to fit the open-file limit of %d",
            cfg.max_connections,
            max_connections,
            fd_limit,
        )
    limits = Limits(
        max_connections=max_connections,
        read_header_timeout=cfg.read_header_timeout,
        idle_timeout=cfg.idle_timeout,
    )
    try:
        server = ExporterHTTPServer(
            (cfg.listen_host, cfg.listen_port),
            registry,
            lambda: accounts.ready,
            cfg.telemetry_path,
            web=cfg.web,
            auth_exempt=config.HEALTH_PATHS if cfg.health_no_auth else (),
            limits=limits,
            reload=lambda: reloader.reload(),
            units=accounts.units,
        )
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", cfg.listen_host, cfg.listen_port, exc.strerror)
        return 1

    Loaded = tuple[list[AccountSpec], Prices | None, webconfig.WebConfig]

    def load() -> Loaded:
        """Everything a reload reads, validated whole before anything changes."""
        try:
            new_specs, new_prices = read_accounts(cfg, keys, redact.add)
        except configfile.ConfigFileError as exc:
            raise ReloadError("; ".join(exc.problems)) from None
        if not cfg.web_config_file:
            return new_specs, new_prices, webconfig.WebConfig()
        try:
            return new_specs, new_prices, webconfig.load(cfg.web_config_file)
        except webconfig.WebConfigError as exc:
            raise ReloadError(f"--web.config.file {cfg.web_config_file!r}: {exc}") from None

    def apply(loaded: Loaded) -> None:
        new_specs, new_prices, web = loaded
        for warning in web.warnings:
            log.warning("--web.config.file %s: %s", cfg.web_config_file, warning)
        server.set_web(web)
        current_prices[0] = new_prices
        added, changed, removed = accounts.apply(new_specs)
        metrics.shard_accounts.set(len(new_specs))
        if added or changed or removed:
            log.info(
                "accounts: %d polled; added %s, changed %s, removed %s",
                len(new_specs),
                ",".join(added) or "none",
                ",".join(changed) or "none",
                ",".join(removed) or "none",
            )

    reloader = Reloader(registry, load, apply)

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP, reloading the configuration")
        reloader.reload_in_background()

    signal.signal(signal.SIGHUP, on_hangup)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server.serve_in_thread()
    accounts.apply(specs)
    metrics.shard_accounts.set(len(specs))
    host = cfg.listen_host or "0.0.0.0"
    scheme = cfg.web.scheme
    log.info(
        "ft-exporter %s listening on %s://%s:%d%s, polling %s",
        __version__,
        scheme,
        host,
        server.port,
        cfg.telemetry_path,
        describe_accounts(cfg, specs),
    )
    if cfg.web.tls is not None:
        log.info(
            "TLS on (%s to %s, client certificates: %s)",
            cfg.web.tls.min_version.name,
            cfg.web.tls.max_version.name,
            cfg.web.tls.client_auth_type,
        )
    if cfg.web.users:
        log.info(
            "basic auth on for %d user(s)%s",
            len(cfg.web.users),
            "; /-/healthy and /-/ready exempt" if cfg.health_no_auth else "",
        )
    if simulator is not None:
        shown = "localhost" if cfg.listen_host in ("", "0.0.0.0", "::") else cfg.listen_host
        print(
            f"Demo mode: simulated API at {simulator.url}/api/v1/fine-tunes\n"
            f"  metrics:  {scheme}://{shown}:{server.port}{cfg.telemetry_path}\n"
            f"  status:   {scheme}://{shown}:{server.port}/\n"
            "Press Ctrl+C to stop.",
            flush=True,
        )
    stop.wait()
    server.shutdown()
    server.server_close()
    accounts.stop()
    if simulator is not None:
        simulator.stop()
    log.info("stopped")
    return 0
