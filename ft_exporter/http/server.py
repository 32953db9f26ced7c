"""HTTP/1.1 on one asyncio event loop: bounded connections, hard deadlines, no smuggling.

A thread per connection let one client starve the exporter: idle or trickling
sockets each held a thread and memory, and a per-read timeout restarted with
every byte. Here a connection is a small coroutine, and every stage has a limit
that the client cannot extend:

- at most ``max_connections`` at once; past that the oldest connection still
  waiting for a request head is closed to make room, so a flood of idle or
  trickling sockets cannot lock a scraper out;
- a request head (and the TLS handshake) must arrive whole within
  ``read_header_timeout`` of the connection or of its first byte, however slowly
  it trickles; a kept-alive connection may idle ``idle_timeout`` between requests;
- requests are parsed by h11, so a body (``Content-Length`` or chunked) is read
  and discarded, never taken for the next request, and a malformed head is
  answered with 400 and the connection closed;
- accept errors (``EMFILE``) pause accepting for a second instead of spinning.

Rendering and bcrypt run on worker threads, so the loop keeps accepting while
they work; a cached credential is checked on the loop itself, so a flood of bad
passwords queues behind bcrypt but never delays a scraper that already got in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import h11
from prometheus_client import CollectorRegistry, Counter, Gauge

from ft_exporter import __version__
from ft_exporter.http.routes import Request, Response, Routes
from ft_exporter.http.statuspage import StatusUnit
from ft_exporter.webconfig import REALM, BasicAuth, WebConfig

log = logging.getLogger(__name__)

SERVER_HEADER = f"ft-exporter/{__version__}"
#: File descriptors kept free for the API client, key and config files, logs.
RESERVED_FDS = 64
#: Why the server closed a connection before the client was done with it.
DROP_REASONS = (
    "evicted",
    "refused",
    "header_timeout",
    "body_timeout",
    "write_timeout",
    "bad_request",
)
#: How often a repeated accept error (EMFILE) is logged.
ACCEPT_ERROR_LOG_INTERVAL = 60.0
_READ_SIZE = 65536
#: Pending connections the kernel queues for us (it caps this at net.core.somaxconn).
#: A short queue drops a scraper's SYN behind a flood, and a dropped SYN costs a second.
BACKLOG = 4096
#: Connections accepted per turn of the loop. Each may evict one, whose socket closes
#: on the next turn, so at most this many sockets are open beyond the cap.
ACCEPTS_PER_TURN = 64
#: How often connections that never sent a byte are checked against their deadline.
REAP_INTERVAL = 0.5
#: How long accepting pauses after EMFILE and the like.
ACCEPT_RETRY_DELAY = 1.0


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server; see the module docstring."""

    max_connections: int = 512
    read_header_timeout: float = 10.0
    idle_timeout: float = 300.0
    write_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    workers: int = 4


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; return (before, after).

    The common soft limit of 1024 is far below what the connection cap needs,
    and raising it needs no privilege.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


def connection_cap(wanted: int, fd_limit: int) -> int:
    """The connection cap the open-file limit can actually carry."""
    if fd_limit == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, fd_limit - RESERVED_FDS - ACCEPTS_PER_TURN))


class HttpMetrics:
    """The server's own gauges and counters (direct instrumentation)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        max_connections: int,
        open_connections: Callable[[], int],
    ) -> None:
        # Read at scrape time from the server's own table: nothing to keep in step.
        Gauge(
            "dashscope_finetune_exporter_http_open_connections",
            "HTTP connections open to the exporter.",
            registry=registry,
        ).set_function(open_connections)
        limit = Gauge(
            "dashscope_finetune_exporter_http_max_connections",
            "Most HTTP connections the exporter holds at once (--web.max-connections).",
            registry=registry,
        )
        limit.set(max_connections)
        self.dropped = Counter(
            "dashscope_finetune_exporter_http_connections_dropped",
            "HTTP connections the exporter closed before the client was done, by reason.",
            ["reason"],
            registry=registry,
        )
        # Children looked up once: a flood calls drop() thousands of times a second.
        self._dropped = {reason: self.dropped.labels(reason) for reason in DROP_REASONS}

    def drop(self, reason: str) -> None:
        self._dropped[reason].inc()


class _Conn:
    """One client connection as the server tracks it.

    Until its first byte arrives a connection is only a socket watched by the loop
    (``pending``): a silent flood costs an accept and a close each, nothing more.
    """

    __slots__ = ("accepted", "loop", "peer", "pending", "sock", "task", "waiting", "writer")

    def __init__(self, sock: socket.socket, peer: str, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.peer = peer
        self.loop = loop
        self.accepted = loop.time()
        self.pending = True
        self.task: asyncio.Task[None] | None = None
        #: Set once the transport exists.
        self.writer: asyncio.StreamWriter | None = None
        #: True while the server waits for a request head.
        self.waiting = True

    @property
    def evictable(self) -> bool:
        return self.pending or (self.waiting and self.writer is not None)

    def stream(self) -> asyncio.StreamWriter:
        if self.writer is None:
            raise _Close("connection not set up")
        return self.writer

    def abort(self) -> None:
        """Close now and end its task (a transport's socket closes on the next turn)."""
        if self.pending:
            self.pending = False
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            return
        if self.writer is not None:
            self.writer.transport.abort()
        else:
            self.sock.close()
        if self.task is not None:
            self.task.cancel()


class _Close(Exception):
    """End this connection (after any response already queued)."""


class _Refused(Exception):
    """A request answered with an error status, after which the connection closes."""

    def __init__(self, reason: str, status: int, text: str, detail: str = "") -> None:
        super().__init__(text)
        self.reason = reason
        self.status = status
        self.text = text
        self.detail = detail or text.strip()


class ExporterHTTPServer:
    """Serves :class:`Routes` behind TLS and basic auth from the web config.

    The listening socket is bound in the constructor, so a port in use fails at
    start; the event loop runs on a thread of its own (:meth:`serve_in_thread`).
    """

    def set_web(self, web: WebConfig) -> None:
        """A reloaded web config: new TLS certificates and users apply to new connections."""
        self.auth = BasicAuth(web.users) if web.users else None
        self.web = web

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        telemetry_path: str = "/metrics",
        web: WebConfig | None = None,
        auth_exempt: Collection[str] = (),
        limits: Limits | None = None,
        reload: Callable[[], str | None] | None = None,
        units: Callable[[], Sequence[StatusUnit]] = tuple,
    ) -> None:
        self.routes = Routes(registry, ready, telemetry_path, reload, units)
        self.web = web or WebConfig()
        self.auth = BasicAuth(self.web.users) if self.web.users else None
        self.auth_exempt = frozenset(auth_exempt)
        self.limits = limits or Limits()
        self._conns: dict[_Conn, None] = {}
        self.metrics = HttpMetrics(registry, self.limits.max_connections, lambda: len(self._conns))
        self._sock = _listen(address)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._stopping = False
        #: After EMFILE and the like: accepting waits out ACCEPT_RETRY_DELAY.
        self._backing_off = False
        self._thread: threading.Thread | None = None
        self._workers = concurrent.futures.ThreadPoolExecutor(
            self.limits.workers, thread_name_prefix="http-worker"
        )
        # One bcrypt at a time: a flood of guesses costs one core, not all of them.
        self._bcrypt = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="http-auth")
        self._accept_error_logged = -ACCEPT_ERROR_LOG_INTERVAL

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    # -- lifecycle -------------------------------------------------------------------

    def serve_in_thread(self) -> threading.Thread:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="http", daemon=True)
        self._thread.start()
        started.wait()
        return self._thread

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(self._loop_exception)
        loop.add_reader(self._sock.fileno(), self._accept)
        self._accepting = True
        loop.call_soon(self._reap)
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def shutdown(self) -> None:
        """Stop accepting, close every connection and stop the loop; waits for it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._stop(), loop)
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            future.result(timeout=5.0)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5.0)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._bcrypt.shutdown(wait=False, cancel_futures=True)

    async def _stop(self) -> None:
        self._pause_accepting()
        self._stopping = True
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()

    def server_close(self) -> None:
        self._sock.close()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            log.debug("connection error: %s", exc)
            return
        log.error("event loop error: %s", context.get("message", ""), exc_info=exc)

    # -- connections -----------------------------------------------------------------

    def _accept(self) -> None:
        """Accept what is queued, a bounded batch per turn, evicting to stay under the cap."""
        for _ in range(ACCEPTS_PER_TURN):
            victim = None
            if len(self._conns) >= self.limits.max_connections:
                victim = self._oldest_evictable()
                if victim is None:
                    # Every connection is busy with a request: accept again once one is
                    # done with it (waiting for its next request, or closed).
                    self._pause_accepting()
                    return
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nobody else is waiting: evict nobody
            except OSError as exc:
                self._accept_failed(exc)
                return
            if victim is not None:
                self._evict(victim)
            sock.setblocking(False)
            peer = str(address[0]) if isinstance(address, tuple) else "unknown"
            loop = asyncio.get_running_loop()
            conn = _Conn(sock, peer, loop)
            self._conns[conn] = None
            loop.add_reader(sock.fileno(), self._first_bytes, conn)

    def _first_bytes(self, conn: _Conn) -> None:
        """The client sent something (or hung up): now it gets a transport and a task."""
        if not conn.pending:
            return
        conn.pending = False
        loop = asyncio.get_running_loop()
        loop.remove_reader(conn.sock.fileno())
        conn.task = loop.create_task(self._connection(conn))

    def _reap(self) -> None:
        """Close connections that never sent a byte within the head deadline."""
        loop = asyncio.get_running_loop()
        expired = loop.time() - self.limits.read_header_timeout
        for conn in [c for c in self._conns if c.pending and c.accepted <= expired]:
            del self._conns[conn]
            self.metrics.drop("header_timeout")
            conn.abort()
        if not self._stopping:
            loop.call_later(REAP_INTERVAL, self._reap)

    def _accept_failed(self, exc: OSError) -> None:
        """Out of file descriptors (or memory): pause instead of spinning on a ready socket."""
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log.debug("accept failed: %s", exc)
            return
        self.metrics.drop("refused")
        now = time.monotonic()
        if now - self._accept_error_logged >= ACCEPT_ERROR_LOG_INTERVAL:
            self._accept_error_logged = now
            log.warning(
                "cannot accept connections: %s; pausing accepts for %.0fs "
                "(logged at most every %.0fs)",
                exc.strerror,
                ACCEPT_RETRY_DELAY,
                ACCEPT_ERROR_LOG_INTERVAL,
            )
        self._pause_accepting()
        self._backing_off = True
        asyncio.get_running_loop().call_later(ACCEPT_RETRY_DELAY, self._end_backoff)

    def _end_backoff(self) -> None:
        self._backing_off = False
        self._resume_accepting()

    def _pause_accepting(self) -> None:
        if self._accepting and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False

    def _resume_accepting(self) -> None:
        """Called whenever a connection frees up; a no-op unless accepting was paused."""
        if self._accepting or self._stopping or self._backing_off or self._loop is None:
            return
        self._loop.add_reader(self._sock.fileno(), self._accept)
        self._accepting = True

    def _oldest_evictable(self) -> _Conn | None:
        """The oldest connection that is only waiting for a request head, if any."""
        return next((conn for conn in self._conns if conn.evictable), None)

    def _evict(self, conn: _Conn) -> None:
        del self._conns[conn]
        self.metrics.drop("evicted")
        log.debug("connection limit reached; closing idle connection from %s", conn.peer)
        conn.abort()

    async def _connection(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_SIZE)

        def connected(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn.writer = writer  # a callback also marks the stream server-side for start_tls

        protocol = asyncio.StreamReaderProtocol(reader, connected)
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn.sock)
            await self._serve(conn, reader)
        except (ConnectionError, ssl.SSLError, OSError, _Close) as exc:
            log.debug("connection from %s ended: %s", conn.peer, exc)
            conn.abort()
        except asyncio.CancelledError:
            conn.abort()  # evicted, or the server is stopping
        finally:
            self._conns.pop(conn, None)
            if conn.writer is not None:
                conn.writer.close()
            else:
                conn.sock.close()
            self._resume_accepting()

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Requests one after another; every wait has an absolute deadline."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        writer = conn.stream()
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        # A new connection gets read_header_timeout for the TLS handshake and its first head.
        deadline = conn.accepted + limits.read_header_timeout
        context = self.web.ssl_context
        if context is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await writer.start_tls(context)
            except TimeoutError:
                self.metrics.drop("header_timeout")
                raise _Close("TLS handshake not done in time") from None
            except (ssl.SSLError, ConnectionError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", conn.peer, exc)
                raise _Close("TLS handshake failed") from None
        served = False
        while True:
            conn.waiting = True
            if not h.trailing_data[0]:
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(_READ_SIZE)
                except TimeoutError:
                    if not served:
                        self.metrics.drop("header_timeout")
                    return  # an idle keep-alive connection timing out is normal
                if not data:
                    return
                h.receive_data(data)
            if served:
                # Kept alive: the head must be whole this long after its first byte.
                deadline = loop.time() + limits.read_header_timeout
            read = await self._read_request(conn, h, reader, deadline)
            if read is None:
                return
            request, close = read
            conn.waiting = False
            response = await self._respond(conn, request)
            await self._send(conn, h, request, response, close)
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return  # MUST_CLOSE, or a body we chose not to read
            h.start_next_cycle()
            self._resume_accepting()  # this connection is evictable again
            served = True
            deadline = loop.time() + limits.idle_timeout

    async def _read_request(
        self, conn: _Conn, h: h11.Connection, reader: asyncio.StreamReader, deadline: float
    ) -> tuple[Request, bool] | None:
        """A head, then its body (read and discarded), each within a deadline; or None.

        Returns the request and whether the connection must close after the answer.
        A request refused here is answered with its error status and the connection ends.
        """
        try:
            return await self._read_whole_request(h, reader, deadline)
        except _Refused as refused:
            self.metrics.drop(refused.reason)
            log.debug("refused request from %s: %s", conn.peer, refused.detail)
            await self._error(conn, h, refused.status, refused.text)
            return None

    async def _read_whole_request(
        self, h: h11.Connection, reader: asyncio.StreamReader, deadline: float
    ) -> tuple[Request, bool] | None:
        event = await _next_event(h, reader, deadline, "header_timeout", "Request head")
        if not isinstance(event, h11.Request):
            return None  # the client closed
        request = _request(event)
        if _head_size(event) > self.limits.max_header_bytes:
            raise _Refused("bad_request", 431, "Request header fields too large\n")
        if "content-length" in request.headers and "transfer-encoding" in request.headers:
            # Framed two ways: what a proxy in front made of it is anyone's guess (RFC 9112 6.1).
            raise _Refused("bad_request", 400, "Bad request: both Content-Length and chunked\n")
        if h.they_are_waiting_for_100_continue:
            return request, True  # never ask for a body nobody needs: answer, then close
        size = 0
        body_deadline = asyncio.get_running_loop().time() + self.limits.read_header_timeout
        while True:
            event = await _next_event(h, reader, body_deadline, "body_timeout", "Request body")
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.limits.max_body_bytes:
                    raise _Refused("bad_request", 413, "Request body too large\n")
            elif isinstance(event, h11.EndOfMessage):
                return request, False
            else:
                return None

    async def _respond(self, conn: _Conn, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        if self.auth is not None and request.path not in self.auth_exempt:
            header = request.header("authorization") or None
            ok = self.auth.cached(header)
            if ok is None:
                ok = await loop.run_in_executor(self._bcrypt, self.auth.check, header)
            if not ok:
                log.debug("unauthorised request for %s from %s", request.path, conn.peer)
                return Response(
                    401,
                    b"Unauthorized\n",
                    headers=[("WWW-Authenticate", f'Basic realm="{REALM}"')],
                )
        return await loop.run_in_executor(self._workers, self.routes, request)

    async def _send(
        self, conn: _Conn, h: h11.Connection, request: Request, response: Response, close: bool
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Date", formatdate(usegmt=True)),
            ("Server", SERVER_HEADER),
            *response.headers,
            *self.web.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        data = h.send(
            h11.Response(
                status_code=response.status, headers=headers, reason=_reason(response.status)
            )
        )
        if request.method != "HEAD":
            data += h.send(h11.Data(data=response.body))
        data += h.send(h11.EndOfMessage())
        conn.stream().write(data)
        log.debug("http %s %s %s %d", conn.peer, request.method, request.path, response.status)
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await conn.stream().drain()
        except TimeoutError:
            self.metrics.drop("write_timeout")
            raise _Close("response not taken in time") from None

    async def _error(self, conn: _Conn, h: h11.Connection, status: int, text: str) -> None:
        """Answer a request that cannot be served, then close the connection."""
        if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = text.encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Date", formatdate(usegmt=True)),
            ("Server", SERVER_HEADER),
            *self.web.headers,
        ]
        try:
            data = h.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
            data += h.send(h11.Data(data=body)) + h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        conn.stream().write(data)
        try:
            async with asyncio.timeout(1.0):
                await conn.stream().drain()
        except (TimeoutError, ConnectionError, OSError):
            pass


async def _next_event(
    h: h11.Connection, reader: asyncio.StreamReader, deadline: float, reason: str, what: str
) -> Any:
    """The next h11 event, reading as needed; the deadline is absolute, bytes can't extend it."""
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await reader.read(_READ_SIZE))
                    continue
                if event is h11.PAUSED:
                    return h11.ConnectionClosed()
                return event
    except TimeoutError:
        raise _Refused(reason, 408, f"{what} not complete in time\n") from None
    except h11.RemoteProtocolError as exc:
        # The client's bytes go to the debug log (escaped there), never back into a response.
        raise _Refused("bad_request", exc.error_status_hint, "Bad request\n", str(exc)) from None


def _head_size(event: h11.Request) -> int:
    """Bytes of a request head: h11 caps only a head that arrives in pieces."""
    fields = sum(len(name) + len(value) + 4 for name, value in event.headers)
    return len(event.method) + len(event.target) + 12 + fields


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _request(event: h11.Request) -> Request:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = event.target.decode("latin-1")
    path = urlsplit(target).path if not target.startswith("/") else target.split("?", 1)[0]
    return Request(method=event.method.decode("latin-1"), path=path, headers=headers)


def _listen(address: tuple[str, int]) -> socket.socket:
    """Bind and listen now, so a port in use is an error at start, not in a thread."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Listen on IPv4 too when bound to "::".
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
