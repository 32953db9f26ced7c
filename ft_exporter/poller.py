"""Owns time: sweeps the API on a schedule and publishes the latest complete snapshot.

Scrapes read :meth:`Poller.state` and never trigger API calls, so any number of
Prometheus servers cost the account nothing extra.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ft_exporter.client import ApiError, Cancelled
from ft_exporter.logs import FailureLog, crash_key
from ft_exporter.model import ExporterState, Snapshot

log = logging.getLogger(__name__)


class Poller:
    """Runs sweeps one after another on a background thread; they never overlap."""

    def __init__(
        self,
        sweep: Callable[[], Snapshot],
        interval: float,
        *,
        on_sweep: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        name: str = "poller",
    ) -> None:
        self._sweep = sweep
        self.interval = interval
        self._on_sweep = on_sweep
        self._clock = clock
        self._monotonic = monotonic
        self._state = ExporterState()
        self._stop = stop or threading.Event()
        self._first_done = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = name
        self._failures = FailureLog(log, monotonic)

    def state(self) -> ExporterState:
        """The latest published state (an immutable object, replaced atomically)."""
        return self._state

    @property
    def ready(self) -> bool:
        """True once any sweep has completed."""
        return self._state.last_success is not None

    @property
    def swept(self) -> bool:
        """True once any sweep has ended, successfully or not."""
        return self._first_done.is_set()

    def run_once(self) -> bool:
        """One sweep; publishes a new state either way. Returns True on success."""
        started = self._monotonic()
        try:
            snapshot = self._sweep()
        except Cancelled:
            return False
        except ApiError as err:
            # Same code, status and text is the same failure, whatever the request id.
            self._publish_failure(started, (err.code, err.http_status, err.message), str(err))
            return False
        except Exception as err:  # a bug must not kill the poller thread
            # Counted in sweep_failures (no API error code fits a bug of ours); logged with
            # its traceback once, then rate-limited like any failure. The same exception
            # raised at the same place is the same bug, whatever its text.
            self._publish_failure(
                started, crash_key(err), f"unexpected {type(err).__name__}: {err}", err
            )
            return False
        duration = self._monotonic() - started
        self._state = ExporterState(
            snapshot=snapshot,
            up=True,
            last_success=self._clock(),
            last_sweep_duration=duration,
        )
        failures = self._failures.recovered()
        if failures:
            log.info("sweep recovered after %d failure(s)", failures)
        log.debug("sweep completed: %d jobs in %.3fs", len(snapshot.jobs), duration)
        self._notify(True)
        return True

    def _publish_failure(
        self,
        started: float,
        key: tuple[str, ...],
        message: str,
        exc: BaseException | None = None,
    ) -> None:
        previous = self._state
        self._state = ExporterState(
            snapshot=previous.snapshot,
            up=False,
            last_success=previous.last_success,
            last_sweep_duration=self._monotonic() - started,
        )
        self._failures.failed(
            key,
            "sweep failed, keeping the last complete snapshot: %s",
            "sweep still failing (%d times in a row): %s",
            message,
            exc,
        )
        self._notify(False)

    def _notify(self, ok: bool) -> None:
        if self._on_sweep is not None:
            self._on_sweep(ok)
        self._first_done.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = self._monotonic()
            self.run_once()
            # A long sweep delays the next one instead of stacking behind it.
            remaining = self.interval - (self._monotonic() - started)
            if remaining > 0:
                self._stop.wait(remaining)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def wait_first(self, timeout: float | None = None) -> bool:
        """Block until the first sweep has ended (either way)."""
        return self._first_done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
