"""Backoff, Retry-After and a token bucket: how the client stays polite to the API.

The exporter exists to watch for throttling, so it must never make throttling
worse: retries are few, spaced with jitter, bounded by a deadline for the whole
sweep, and requests never burst past ``--dashscope.max-requests-per-second``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: Statuses worth another try: throttling and server-side trouble.
RETRYABLE_STATUSES = frozenset({"429", "500", "502", "503", "504"})
#: Failures without an HTTP answer, also worth another try.
RETRYABLE_CODES = frozenset({"Timeout", "ConnectionError"})
#: The longest Retry-After the exporter will wait inside one sweep.
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (1-based): uniform in [0, base * 2**(n-1)]."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return float(ceiling * rng())


def is_retryable(code: str, http_status: str) -> bool:
    """429, 5xx, timeouts and connection errors; never 400, 401, 403, 404 or a bad 200."""
    return http_status in RETRYABLE_STATUSES or (not http_status and code in RETRYABLE_CODES)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER)


class TokenBucket:
    """Client-side rate limit: ``rate`` requests a second, bursts of at most ``burst``.

    The bucket starts full: a first sweep makes ``burst`` requests at once, so a small
    account is ready within its first second; over any longer run the rate holds.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._monotonic = monotonic
        self._tokens = self.burst
        self._updated = monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def reserve(self) -> float:
        """Take a token; return how long the caller must wait before using it."""
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            return max(-self._tokens / self.rate, 0.0)

    def reserve_within(self, limit: float) -> float | None:
        """Take a token if it can be used within ``limit`` seconds and return the wait;
        None (and no token taken) when it cannot: a request that would start past a
        deadline is not made, and does not slow down the next sweep."""
        with self._lock:
            self._refill()
            wait = max((1.0 - self._tokens) / self.rate, 0.0)
            if wait > limit:
                return None
            self._tokens -= 1.0
            return wait

    def time_for(self, requests: int) -> float:
        """Seconds before ``requests`` more requests can all have been made."""
        with self._lock:
            self._refill()
            return max((requests - self._tokens) / self.rate, 0.0)
