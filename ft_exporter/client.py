"""HTTP client for the Model Studio fine-tune API: the job list and each job's training log.

Knows HTTP and the API's shapes, nothing of Prometheus: every request is
reported to an optional observer, which the exporter wires to its counters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

from ft_exporter import __version__
from ft_exporter.listing import (
    Fallback,
    FullRead,
    IncrementalRead,
    Listing,
    ListingCache,
    Reader,
    Rejected,
    merge,
)
from ft_exporter.model import Snapshot
from ft_exporter.retry import RetryPolicy, TokenBucket, is_retryable, parse_retry_after
from ft_exporter.secret import KeySource, Secret

log = logging.getLogger(__name__)

USER_AGENT = f"ft-exporter/{__version__} (+Prometheus exporter; python-requests)"
API_PATH = "/api/v1/fine-tunes"
#: The ``endpoint`` label of the exporter's request counters.
LIST = "list"
LOGS = "logs"
ENDPOINTS = (LIST, LOGS)
#: Most lines one log request may ask for (the API's documented maximum of ``line``).
MAX_LOG_LINES_PER_REQUEST = 1000

#: Codes the vendor documents for this API, with the HTTP status that carries them.
DOCUMENTED_ERRORS: tuple[tuple[str, str], ...] = (
    ("InvalidParameter", "400"),
    ("UnsupportedOperation", "400"),
    ("InvalidApiKey", "401"),
    ("NotFound", "404"),
    ("Conflict", "409"),
    ("Throttling", "429"),
    ("InternalError", "500"),
)
#: Codes the client assigns itself when the answer carries none.
INVALID_RESPONSE = "InvalidResponse"
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
#: A sweep that reached, or cannot fit, its deadline (--poll.sweep-timeout): no request made.
SWEEP_TIMEOUT = "SweepTimeout"
#: Default of --dashscope.burst-requests: the 20-job limit's logs, or 2,000 jobs' pages, at once.
DEFAULT_BURST = 20

#: A page of 100 jobs is tens of kilobytes; anything near this is not a page.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_MAX_CODE_LENGTH = 64
_T = TypeVar("_T")


class ApiError(Exception):
    """A failed request, classified by the API's own ``code`` or one of ours."""

    def __init__(
        self, code: str, message: str, http_status: str = "", request_id: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after: float | None = None

    def __str__(self) -> str:
        status = f" HTTP {self.http_status}" if self.http_status else ""
        rid = f" request_id={self.request_id}" if self.request_id else ""
        return f"{self.code}{status}: {self.message}{rid}"


class Cancelled(Exception):
    """The sweep was interrupted by shutdown; nothing to report."""


class RequestObserver(Protocol):
    """Told about every HTTP request the client makes, successful or not."""

    def observe(self, endpoint: str, duration: float, error: ApiError | None) -> None:
        """One HTTP request to ``endpoint`` (LIST or LOGS) ended, with ``error`` when it failed."""

    def reject(self, error: ApiError) -> None:
        """Every request succeeded, but the listing they make up was rejected as a whole."""


@dataclass(frozen=True)
class Page:
    """One decoded page of ``output``."""

    jobs: list[Any]
    total: int | None
    request_id: str


@dataclass(frozen=True)
class LogPage:
    """One decoded answer of the log endpoint: some lines, and how many the log holds."""

    total: int
    lines: list[str]
    request_id: str


def log_path(job_id: str) -> str:
    """The path of a job's log, the id quoted whole (a ``/`` in it stays part of the id)."""
    if job_id in ("", ".", ".."):
        # Dot segments are removed from URLs before they are sent: another path entirely.
        raise ValueError(f"job id {job_id!r} cannot be put in a URL path")
    return f"{API_PATH}/{quote(job_id, safe='')}/logs"


def normalise_base_url(url: str) -> str:
    """Accept ``https://host`` or ``https://host[/prefix]/api/v1`` and return the origin form.

    Raises ValueError on anything else. A URL may carry a key put there by mistake (in
    its user info, query, path or fragment), so an error names the scheme and host only.
    """
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("not an http(s) base URL: it does not parse as a URL") from None
    if not parts.scheme:
        raise ValueError(
            "not an http(s) base URL: no scheme (use e.g. https://dashscope-intl.aliyuncs.com)"
        )
    host = parts.hostname or ""
    where = f"(scheme {parts.scheme!r}, host {host!r})"
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) base URL with a host {where}")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError(f"base URL holds whitespace or control characters {where}")
    if "@" in parts.netloc:
        raise ValueError(f"base URL must not carry credentials {where}")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"base URL has a malformed port {where}") from None
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"base URL must not have a query or fragment {where}")
    path = parts.path
    for suffix in ("/api/v1/fine-tunes", "/api/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    else:
        if path:
            # Anything else may be a key pasted into the URL, and would be sent to a proxy.
            raise ValueError(f"base URL path must be empty or end in /api/v1 {where}")
    return f"{parts.scheme}://{parts.netloc}{path}"


def _clip_code(code: str) -> str:
    """Keep the ``code`` label bounded whatever the server sends."""
    cleaned = "".join(ch for ch in code if ch.isalnum() or ch in "._-")
    return cleaned[:_MAX_CODE_LENGTH] or INVALID_RESPONSE


def _scrub(value: object, limit: int, key: Secret | None) -> str:
    """Text the API sent, bounded, and without the key the request carried.

    An API may echo the key (after padding, so that a plain clip would keep part of it):
    it is removed before clipping, never after.
    """
    text = value if isinstance(value, str) else str(value)
    return key.scrub(text, limit) if key is not None else text[:limit]


def classify_response(status: int, body: bytes, key: Secret | None = None) -> ApiError:
    """Turn a non-2xx answer into an ApiError carrying the API's own code when it has one.

    ``key`` is the key the request carried; no trace of it is copied into the error.
    """
    http_status = str(status)
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = None
    if isinstance(payload, Mapping):
        code = payload.get("code")
        message = payload.get("message") or payload.get("msg") or ""
        request_id = payload.get("request_id") or ""
        if isinstance(code, str) and code.strip():
            return ApiError(
                _clip_code(_scrub(code.strip(), _MAX_CODE_LENGTH, key)),
                _scrub(message, 200, key) or f"HTTP {status}",
                http_status,
                _scrub(request_id, 100, key),
            )
    snippet = "empty body" if not body.strip() else "body without an error code"
    return ApiError(INVALID_RESPONSE, f"HTTP {status} with {snippet}", http_status)


def _decode_output(
    body: bytes, http_status: int, key: Secret | None
) -> tuple[Mapping[str, Any], str]:
    """The ``output`` object of a 2xx body and its request id; InvalidResponse otherwise."""
    status = str(http_status)
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(INVALID_RESPONSE, "body is not valid UTF-8", status) from exc
    except ValueError as exc:
        raise ApiError(INVALID_RESPONSE, "body is not JSON", status) from exc
    if not isinstance(payload, Mapping):
        raise ApiError(INVALID_RESPONSE, "body is not a JSON object", status)
    request_id = payload.get("request_id")
    rid = _scrub(request_id, 100, key) if isinstance(request_id, str) else ""
    output = payload.get("output")
    if not isinstance(output, Mapping):
        raise ApiError(INVALID_RESPONSE, "body has no 'output' object", status, rid)
    return output, rid


def _count(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else None


def decode_page(body: bytes, http_status: int = 200, key: Secret | None = None) -> Page:
    """Decode a 2xx body into a Page; anything of the wrong shape is InvalidResponse.

    ``key`` is the key the request carried; no trace of it is kept in the request id.
    """
    status = str(http_status)
    output, rid = _decode_output(body, http_status, key)
    jobs = output.get("jobs")
    if not isinstance(jobs, list):
        raise ApiError(INVALID_RESPONSE, "'output.jobs' is not a list", status, rid)
    total_raw = output.get("total")
    total = _count(total_raw)
    if total is None and total_raw is not None:
        raise ApiError(INVALID_RESPONSE, "'output.total' is not a count", status, rid)
    return Page(jobs=jobs, total=total, request_id=rid)


def decode_log_page(body: bytes, http_status: int = 200, key: Secret | None = None) -> LogPage:
    """Decode a 2xx answer of the log endpoint; a missing total or lines is InvalidResponse.

    A line that is not a string (the format is undocumented) becomes an empty line, so
    it is still counted and the lines after it keep their offsets.
    """
    status = str(http_status)
    output, rid = _decode_output(body, http_status, key)
    total = _count(output.get("total"))
    if total is None:
        raise ApiError(INVALID_RESPONSE, "'output.total' is not a count", status, rid)
    lines = output.get("logs")
    if lines is None:
        lines = []  # no lines: what an offset past the end may look like
    if not isinstance(lines, list):
        raise ApiError(INVALID_RESPONSE, "'output.logs' is not a list", status, rid)
    return LogPage(total, [line if isinstance(line, str) else "" for line in lines], rid)


# Transport (the request deadline and the connections it watches) is tested against real
# sockets in tests/test_client_hardening.py, not by scripts/mutation.sh's unit tests.
# pragma: no mutate start
class _Deadline:
    """Ends a request at a fixed time after it starts, whatever the server trickles.

    Socket timeouts bound each ``recv``, not the request: a server that sends a byte of
    its headers or body now and then holds a request for as long as it likes. A timer
    shuts the request's sockets down at the deadline instead; the blocked read then
    fails at once, in the connect, TLS handshake, headers or body alike.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._connections: list[HTTPConnection] = []
        #: Also kept apart: a response that ends with the connection takes the socket
        #: away from its connection (``sock`` is None) while the body is read.
        self._sockets: list[socket.socket] = []
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True  # connections go back to the pool: hands off
        _active.deadline = None

    def watch(self, connection: HTTPConnection) -> None:
        """A connection this request uses; shut down at once if the deadline has passed."""
        with self._lock:
            if self._done:
                return
            if connection not in self._connections:
                self._connections.append(connection)
            self._remember(connection)
            if self.expired:
                self._shut()

    def _remember(self, connection: HTTPConnection) -> None:
        sock = connection.sock
        if sock is not None and sock not in self._sockets:
            self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for connection in self._connections:
                self._remember(connection)
            self._shut()

    def _shut(self) -> None:
        """Shut the sockets down for both directions: a read blocked in one returns at once.

        socket.socket's own method: SSLSocket.shutdown would also drop its TLS state under
        the feet of the thread reading from it. A closed socket (fd -1) raises OSError.
        """
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


#: The deadline of the request this thread is making, for the connections it uses.
_active = threading.local()


def _watch(connection: HTTPConnection) -> None:
    deadline: _Deadline | None = getattr(_active, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


class _WatchedHTTPConnection(HTTPConnection):
    """A connection that puts itself under the current request's deadline when used."""

    def connect(self) -> None:
        _watch(self)  # its socket exists from here on, before a TLS handshake
        super().connect()
        _watch(self)  # the deadline passed while connecting

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # a kept-alive connection, reused
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections (also through an HTTP proxy) that a _Deadline
    can shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, ProxyManager):  # a SOCKS manager keeps its own pools
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


# pragma: no mutate end
class FineTuneClient:
    """Lists fine-tune jobs over one keep-alive session, reading the pages that can have changed."""

    # Session set-up, requests, retries, pacing and body reading: transport again, which
    # the end-to-end tests cover. Listing and classifying answers (below) are mutated.
    # pragma: no mutate start
    def __init__(
        self,
        base_url: str,
        api_key: KeySource,
        *,
        workspace: str = "",
        page_size: int = 100,
        timeout: float = 10.0,
        tz: tzinfo,
        observer: RequestObserver | None = None,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = None,
        burst: int = 1,
        sweep_timeout: float = 120.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ca_file: str | None = None,
        stop: threading.Event | None = None,
        wait: Callable[[float], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        full_sweep_interval: float = 600.0,
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        # Asked before every request: a key file may have been rotated since the last one.
        self._keys = api_key
        self.workspace = workspace
        self.page_size = page_size
        self.timeout = timeout
        self.tz = tz
        self.observer = observer
        self.retry = retry or RetryPolicy()
        self.sweep_timeout = sweep_timeout
        self.max_response_bytes = max_response_bytes
        self._bucket = (
            TokenBucket(max_requests_per_second, burst, monotonic=monotonic)
            if max_requests_per_second
            else None
        )
        # Sleeps go through wait(), which returns True when the exporter shuts down.
        self._wait = wait or (stop or threading.Event()).wait
        self._monotonic = monotonic
        self._clock = clock
        self._deadline: float | None = None
        #: Retry-After, per endpoint: a throttled log read must not stop the next list sweep.
        self._not_before: dict[str, float] = {}
        self._malformed_logged: dict[str, int] = {}
        #: Each listing as the last sweep read it; a full sweep at least this often.
        self._listings = ListingCache(full_sweep_interval)
        self.session = session or requests.Session()
        adapter = _DeadlineAdapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        # Passed on every request: a session-level verify loses to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = ca_file or True

    def __repr__(self) -> str:
        return f"FineTuneClient(base_url={self.base_url!r}, api_key={self._keys!r})"

    def close(self) -> None:
        self.session.close()

    def _headers(self, key: Secret) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {key.reveal()}"}
        if self.workspace:
            headers["X-DashScope-WorkSpace"] = self.workspace
        return headers

    def fetch_page(self, page_no: int, model: str | None = None) -> Page:
        """GET one page, retrying what is worth retrying within the sweep's deadline.

        Every attempt is reported to the observer exactly once.
        """
        params: dict[str, str | int] = {"page_no": page_no, "page_size": self.page_size}
        if model:
            params["model"] = model
        return self._call(LIST, API_PATH, params, decode_page)

    def fetch_log(self, job_id: str, offset: int, lines: int) -> LogPage:
        """GET ``lines`` lines of a job's training log from ``offset``, like fetch_page.

        Shares the list's rate limit, retry policy and (inside :meth:`sweep_window`) its
        deadline. Raises ValueError for an id that cannot be put in a path.
        """
        params = {"offset": max(offset, 0), "line": min(max(lines, 1), MAX_LOG_LINES_PER_REQUEST)}
        return self._call(LOGS, log_path(job_id), params, decode_log_page)

    @contextlib.contextmanager
    def sweep_window(self) -> Iterator[None]:
        """One sweep's deadline, for the list and the log reads that follow it."""
        outer = self._deadline is None
        if outer:
            self._deadline = self._monotonic() + self.sweep_timeout
        try:
            yield
        finally:
            if outer:
                self._deadline = None

    def time_left(self) -> float:
        """Seconds left before the sweep's deadline (infinite outside a sweep)."""
        if self._deadline is None:
            return math.inf
        return self._deadline - self._monotonic()

    def throttled_for(self, endpoint: str) -> float:
        """Seconds a Retry-After the endpoint sent still forbids calling it (0 if none)."""
        return max(self._not_before.get(endpoint, 0.0) - self._monotonic(), 0.0)

    def check_sweep_fits(self, requests: int, total: int) -> None:
        """Fail now when the requests a full listing still needs cannot all be made before
        the sweep's deadline at the configured rate, rather than after minutes of work.

        The message names the numbers and the flags to change, and stays the same from one
        sweep to the next, so it is logged once while it holds.
        """
        bucket = self._bucket
        if bucket is None or requests <= 0 or bucket.time_for(requests) <= self.time_left():
            return
        raise ApiError(
            SWEEP_TIMEOUT,
            f"a full sweep of {total} jobs needs {requests + 1} requests at "
            f"--dashscope.page-size={self.page_size}, about {requests / bucket.rate:.0f}s at "
            f"--dashscope.max-requests-per-second={bucket.rate:g}: more than "
            f"--poll.sweep-timeout={self.sweep_timeout:g}s allows; raise the timeout or the rate "
            "(poll_sweep_timeout, max_requests_per_second in a config file)",
        )

    def _call(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str | int],
        decode: Callable[[bytes, int, Secret | None], _T],
    ) -> _T:
        attempt = 0
        while True:
            attempt += 1
            self._pace()
            started = self._monotonic()
            try:
                result = self._get(path, params, decode)
            except ApiError as err:
                self._observe(endpoint, started, err)
                self._wait_before_retry(endpoint, err, attempt)
                continue
            self._observe(endpoint, started, None)
            return result

    def _wait_before_retry(self, endpoint: str, err: ApiError, attempt: int) -> None:
        """Sleep before the next attempt, or re-raise when no retry is due."""
        if not is_retryable(err.code, err.http_status) or attempt >= self.retry.max_attempts:
            self._remember_retry_after(endpoint, err)
            raise err
        delay = err.retry_after if err.retry_after is not None else self.retry.backoff(attempt)
        if self._deadline is not None and self._monotonic() + delay > self._deadline:
            self._remember_retry_after(endpoint, err)
            raise err
        log.debug("attempt %d failed (%s); retrying in %.2fs", attempt, err, delay)
        self._sleep(delay)

    def _remember_retry_after(self, endpoint: str, err: ApiError) -> None:
        """A Retry-After outlives the sweep: the next sweep will not call before it."""
        if err.retry_after:
            self._not_before[endpoint] = self._monotonic() + err.retry_after

    def _pace(self) -> None:
        """Wait for the rate limit; never start a request, or a wait, past the deadline."""
        left = self.time_left()
        if left <= 0:
            raise self._deadline_reached()
        if self._bucket is not None:
            wait = self._bucket.reserve_within(left)
            if wait is None:
                raise self._deadline_reached()
            self._sleep(wait)

    def _deadline_reached(self) -> ApiError:
        return ApiError(
            SWEEP_TIMEOUT,
            f"the sweep's deadline (--poll.sweep-timeout={self.sweep_timeout:g}s) came "
            "before its next request",
        )

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._wait(seconds):
            raise Cancelled("shutting down")

    def _observe(self, endpoint: str, started: float, error: ApiError | None) -> None:
        if self.observer is not None:
            self.observer.observe(endpoint, self._monotonic() - started, error)

    def _get(
        self,
        path: str,
        params: Mapping[str, str | int],
        decode: Callable[[bytes, int, Secret | None], _T],
    ) -> _T:
        url = self.base_url + path
        key = self._keys.current()
        with _Deadline(self.timeout) as deadline:
            try:
                with self.session.get(
                    url,
                    params=params,
                    headers=self._headers(key),
                    timeout=self.timeout,
                    stream=True,
                    verify=self._verify,
                ) as response:
                    body = self._read_body(response)
            except ApiError:
                raise
            except Exception as exc:
                # Once the deadline has shut the socket, whatever broke is a timeout.
                if deadline.expired or isinstance(exc, requests.Timeout):
                    raise ApiError(TIMEOUT, f"no answer within {self.timeout:g}s") from exc
                if isinstance(exc, requests.RequestException):
                    # Connection refused or reset, also mid-body (ChunkedEncodingError).
                    raise ApiError(CONNECTION_ERROR, type(exc).__name__) from exc
                raise
            if deadline.expired:  # a body without a length ends "cleanly" when cut
                raise ApiError(TIMEOUT, f"no answer within {self.timeout:g}s")
        if not 200 <= response.status_code < 300:
            err = classify_response(response.status_code, body, key)
            err.retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            raise err
        return decode(body, response.status_code, key)

    def _read_body(self, response: requests.Response) -> bytes:
        """Read at most max_response_bytes (the request's deadline bounds the time)."""
        limit = self.max_response_bytes
        status = str(response.status_code)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(
                INVALID_RESPONSE, f"response of {declared} bytes exceeds {limit}", status
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > limit:
                raise ApiError(INVALID_RESPONSE, f"response exceeds {limit} bytes", status)
            chunks.append(chunk)
        return b"".join(chunks)

    # pragma: no mutate end
    def sweep(self, models: Iterable[str] = ()) -> Snapshot:
        """List every job (once per model filter, or once unfiltered), de-duplicated by job_id.

        Each listing is read in full or only as far as can have changed (see
        :mod:`ft_exporter.listing`); the snapshot is the same either way. Any failed
        request fails the whole sweep: a partial list would publish wrong counts,
        which is worse than stale ones.
        """
        wait = self.throttled_for(LIST)
        if wait > 0:
            raise ApiError(
                "Throttling", f"honouring Retry-After: no request for another {wait:.0f}s", "429"
            )
        filters: list[str | None] = [*models] or [None]
        self._listings.keep_only(filters)
        with self.sweep_window():
            listings = [self._sweep_one(model) for model in filters]
        return Snapshot(
            jobs=merge(listings),
            taken_at=self._clock(),
            malformed_jobs=sum(listing.malformed for listing in listings),
        )

    def _sweep_one(self, model: str | None) -> Listing:
        """One listing: only its changes when the cache allows, else (or then) every page."""
        where = f"model={model or '*'}"
        base = self._listings.base_for(model, self._monotonic())
        listing: Listing | None = None
        if base is not None:
            incremental = IncrementalRead(base, self.page_size, self.tz, where)
            listing = self._read(incremental, model)
            if listing is not None:
                self._listings.worked(model)
            elif incremental.fallback is not None:
                self._explain(model, where, incremental.fallback)
        elif self._listings.due(model, self._monotonic()):
            log.debug("full sweep of %s: --poll.full-sweep-interval has passed", where)
        if listing is None:
            full = FullRead(
                self.page_size, self.tz, where, self._monotonic(), self._listings.get(model)
            )
            listing = self._read(full, model)
            if listing.blocked is not None:
                self._explain(model, where, listing.blocked)
        self._listings.store(model, listing)
        if listing.malformed != self._malformed_logged.get(where, 0):
            # Logged when the count changes, not on every sweep.
            log.warning("%d malformed job(s) in the list skipped (%s)", listing.malformed, where)
            self._malformed_logged[where] = listing.malformed
        return listing

    def _read(self, reader: Reader[_T], model: str | None) -> _T:
        """Fetch the pages ``reader`` asks for; a listing it rejects is an InvalidResponse."""
        request_id = ""
        try:
            while (page_no := reader.next_page()) is not None:
                page = self.fetch_page(page_no, model)
                request_id = page.request_id
                reader.add(page.jobs, page.total)
                if page_no == 1 and isinstance(reader, FullRead) and reader.total is not None:
                    # What the rest of a full sweep costs is known now: fail at once if
                    # it cannot fit the deadline (an incremental read may need 1 page).
                    pages = math.ceil(reader.total / self.page_size)
                    self.check_sweep_fits(pages - 1, reader.total)
            return reader.finish()
        except Rejected as exc:
            raise self._rejected(str(exc), request_id) from None

    def _explain(self, model: str | None, where: str, why: Fallback) -> None:
        """Say once per reason, until incremental sweeps work again, why every page is read.

        INFO: the snapshot stays exact whatever the reason; only the request count grows.
        """
        if self._listings.first_time(model, why.kind):
            log.info(
                "reading every page of the job list (%s), not only what changed: %s",
                where,
                why.detail,
            )

    def _rejected(self, message: str, request_id: str) -> ApiError:
        """An InvalidResponse for the listing as a whole, counted like a failed request."""
        err = ApiError(INVALID_RESPONSE, message, "200", request_id)
        if self.observer is not None:
            self.observer.reject(err)
        return err
