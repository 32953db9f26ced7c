"""Reloading the configuration on SIGHUP and ``POST /-/reload``, all or nothing.

The new configuration is read and validated whole before anything changes; an invalid
one changes nothing, is logged once with the reason, and is reported by the same two
gauges Prometheus itself exposes for its own reloads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger(__name__)

_C = TypeVar("_C")


class ReloadError(Exception):
    """The new configuration is invalid; its text says why (one line, no secret)."""


class Reloader(Generic[_C]):
    """Serialises reloads: ``load`` reads and validates, ``apply`` makes it current."""

    def __init__(
        self,
        registry: CollectorRegistry,
        load: Callable[[], _C],
        apply: Callable[[_C], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._apply = apply
        self._clock = clock
        self._lock = threading.Lock()
        self.successful = Gauge(
            "dashscope_finetune_config_last_reload_successful",
            "1 if the latest configuration reload (or the start) succeeded, 0 if it failed.",
            registry=registry,
        )
        self.success_timestamp = Gauge(
            "dashscope_finetune_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration reload (or of the start).",
            registry=registry,
        )
        self.successful.set(1)
        self.success_timestamp.set(clock())

    def reload(self) -> str | None:
        """Read, validate and apply the configuration; None, or why nothing changed."""
        with self._lock:
            try:
                config = self._load()
            except ReloadError as exc:
                self.successful.set(0)
                log.error("reload failed, configuration unchanged: %s", exc)
                return str(exc)
            self._apply(config)
            self.successful.set(1)
            self.success_timestamp.set(self._clock())
            log.info("configuration reloaded")
            return None

    def reload_in_background(self) -> None:
        """For a signal handler: the reload itself may wait for pollers to stop."""
        threading.Thread(target=self.reload, name="reload", daemon=True).start()
