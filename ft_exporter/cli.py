"""Entry point: parse configuration, wire the pieces together, run until signalled."""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ft_exporter import __version__, config, logs, webconfig
from ft_exporter.account import Accounts, AccountSpec
from ft_exporter.collector import CollectorSettings, FineTuneCollector
from ft_exporter.http.server import ExporterHTTPServer, Limits, connection_cap, raise_fd_limit
from ft_exporter.keyfile import KeyFile
from ft_exporter.reload import Reloader, ReloadError
from ft_exporter.secret import KeySource, Secret
from ft_exporter.selfmetrics import SelfMetrics

log = logging.getLogger("ft_exporter")


def build_registry() -> CollectorRegistry:
    """A registry of our own, with the standard process and runtime collectors."""
    # *_created series double the counter output and no dashboard uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _ignore_hangup(_signum: int, _frame: FrameType | None) -> None:
    """SIGHUP's default action kills the process; operators send it expecting a reload."""
    log.info("received SIGHUP before the exporter was up; ignoring")


def single_account(cfg: config.Config, keys: KeySource) -> AccountSpec:
    """The one account the flags describe (when no config file is given)."""
    return AccountSpec(
        base_url=cfg.base_url,
        keys=keys,
        key_ref=f"file:{cfg.api_key_file}" if cfg.api_key_file else "env",
        tz=cfg.timezone,
        workspace=cfg.workspace,
        models=cfg.models,
        page_size=cfg.page_size,
        timeout=cfg.timeout,
        max_requests_per_second=cfg.max_requests_per_second,
        max_attempts=cfg.max_attempts,
        sweep_timeout=cfg.sweep_timeout,
        ca_file=cfg.ca_file,
        poll_interval=cfg.poll_interval,
        log_max_jobs=cfg.log_max_jobs,
        log_max_lines=cfg.log_max_lines,
        collector=CollectorSettings(
            account=cfg.account,
            quota_limit=cfg.quota_limit,
            quota=cfg.quota,
            max_job_series=cfg.max_job_series,
            max_aggregate_series=cfg.max_aggregate_series,
            max_staleness=cfg.max_staleness,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    # Until logging is set up a hangup is dropped silently; after that, logged (below).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        cfg = config.load(argv)
    except config.ConfigError as exc:
        print(f"ft-exporter: error: {exc}", file=sys.stderr)
        return 2

    simulator = None
    if cfg.demo:
        from ft_exporter import simulator as sim

        demo_key = "sk-demo-" + secrets.token_hex(8)
        simulator = sim.serve(key=demo_key, tz=cfg.timezone)
        cfg = replace(cfg, api_key=Secret(demo_key), base_url=simulator.url)
    redact = logs.setup(cfg.log_level, cfg.log_format, [cfg.api_key.reveal()])
    signal.signal(signal.SIGHUP, _ignore_hangup)
    keys: KeySource = cfg.api_key
    if cfg.api_key_file:
        # A rotated key is redacted from the log before it is first used.
        keys = KeyFile(cfg.api_key_file, cfg.api_key, on_change=redact.add)
    for warning in cfg.web.warnings:
        log.warning("--web.config.file %s: %s", cfg.web_config_file, warning)

    registry = build_registry()
    accounts = Accounts(SelfMetrics(registry))
    registry.register(FineTuneCollector(accounts.units))
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
        )
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", cfg.listen_host, cfg.listen_port, exc.strerror)
        return 1

    def load_web() -> webconfig.WebConfig:
        if not cfg.web_config_file:
            return webconfig.WebConfig()
        try:
            return webconfig.load(cfg.web_config_file)
        except webconfig.WebConfigError as exc:
            raise ReloadError(f"--web.config.file {cfg.web_config_file!r}: {exc}") from None

    def apply_web(web: webconfig.WebConfig) -> None:
        for warning in web.warnings:
            log.warning("--web.config.file %s: %s", cfg.web_config_file, warning)
        server.set_web(web)

    reloader = Reloader(registry, load_web, apply_web)

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
    accounts.apply([single_account(cfg, keys)])
    host = cfg.listen_host or "0.0.0.0"
    scheme = cfg.web.scheme
    log.info(
        "ft-exporter %s listening on %s://%s:%d%s, polling %s every %gs (account=%s, models=%s)",
        __version__,
        scheme,
        host,
        server.port,
        cfg.telemetry_path,
        cfg.base_url,
        cfg.poll_interval,
        cfg.account,
        ",".join(cfg.models) or "all",
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
            f"  landing:  {scheme}://{shown}:{server.port}/\n"
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
