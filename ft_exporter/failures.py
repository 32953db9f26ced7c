"""The last failed requests of an account, for the status page.

The counters say how many requests failed; a person reading the status page also wants
to see the latest ones, with the API's message and request id to quote in a ticket, the
way blackbox_exporter lists its recent probes. The ring is fed by the client's observer
(see :mod:`ft_exporter.selfmetrics`), so it sees exactly the failures the counters count.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from ft_exporter.client import ApiError
from ft_exporter.model import clean_text

#: Failed requests kept per account.
RECENT = 10
#: Longest message kept, in characters (the client has already removed the key).
MAX_MESSAGE_CHARS = 160


@dataclass(frozen=True, slots=True)
class FailedRequest:
    """One failed request, its text cleaned (one line, bounded) and free of the key."""

    at: float
    endpoint: str
    code: str
    http_status: str
    message: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Failures:
    """What the page shows of an account's failures: the latest, newest first, and how
    many of each (code, HTTP status) since the account's counters began."""

    recent: tuple[FailedRequest, ...] = ()
    by_code: tuple[tuple[str, str, int], ...] = ()


class RecentFailures:
    """A thread-safe ring of the last :data:`RECENT` failed requests and a tally by code.

    Written by the sweeping thread, read by the HTTP server's render threads.
    """

    def __init__(self, clock: Callable[[], float] = time.time, size: int = RECENT) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[FailedRequest] = deque(maxlen=size)
        self._by_code: Counter[tuple[str, str]] = Counter()

    def add(self, endpoint: str, error: ApiError) -> None:
        failed = FailedRequest(
            at=self._clock(),
            endpoint=clean_text(endpoint, 32),
            code=clean_text(error.code, 64),
            http_status=clean_text(error.http_status, 8),
            message=clean_text(error.message, MAX_MESSAGE_CHARS),
            request_id=clean_text(error.request_id, 100),
        )
        with self._lock:
            self._recent.append(failed)
            self._by_code[(failed.code, failed.http_status)] += 1

    def snapshot(self) -> Failures:
        with self._lock:
            recent = tuple(reversed(self._recent))
            counts = sorted(self._by_code.items(), key=lambda item: (-item[1], item[0]))
        return Failures(recent, tuple((code, status, n) for (code, status), n in counts))
