"""The client against hostile servers: an API echoing the key, and servers that trickle.

Real sockets on 127.0.0.1 (a server of a few lines per case), the client in-process and
the real ``ft-exporter`` process; ``responses`` where a canned answer is enough.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC

import pytest
import responses
from certs import Pki
from conftest import Exporter, api_errors, value, wait_for
from leaks import leaked

from ft_exporter.client import ApiError, FineTuneClient, classify_response, decode_page
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import Secret

#: 32 characters, like a real key.
KEY = "sk-hardening-SECRET-0123456789ab"
#: A trickling server gives up after this long, so that no test can hang on it.
LIFETIME = 10.0
#: Every request of these tests must end within its timeout plus this (a loaded CI box).
MARGIN = 2.0
REQUEST_TIMEOUT = 2.0
PAGE = json.dumps({"request_id": "r", "output": {"total": 0, "jobs": []}}).encode()

Reply = Callable[["TinyServer", socket.socket, bytes], None]


class TinyServer:
    """A bare HTTP server on 127.0.0.1: each request gets ``reply`` on a thread of its own.

    Bounded: a reply gives up after LIFETIME seconds, and close() ends everything.
    """

    def __init__(self, reply: Reply, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.tls = tls
        self.closed = threading.Event()
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        conn.settimeout(LIFETIME)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while request := self.read_request(conn):
                self.requests.append(request)
                self.reply(self, conn, request)
        except OSError:
            pass  # the client hung up, as it should
        finally:
            conn.close()

    @staticmethod
    def read_request(conn: socket.socket) -> bytes:
        """The head of the next request (no request here has a body); b"" at the end."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return b""
            data += chunk
        return data

    def trickle(self, conn: socket.socket, data: bytes, every: float = 0.5) -> None:
        """Send ``data`` a byte at a time, until sent, LIFETIME is up or the test ends."""
        ends = time.monotonic() + LIFETIME
        for byte in data:
            if time.monotonic() > ends or self.closed.wait(every):
                return
            conn.sendall(bytes([byte]))

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


class TrickleProxy(TinyServer):
    """A TCP proxy to ``upstream``: what the client sends goes through at once, what the
    server answers comes back a byte at a time (with TLS: the handshake too)."""

    def __init__(self, upstream: TinyServer) -> None:
        self.upstream = upstream
        super().__init__(lambda *_: None, upstream.tls)

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        conn.settimeout(LIFETIME)
        try:
            with conn, socket.create_connection(("127.0.0.1", self.upstream.port)) as up:
                up.settimeout(LIFETIME)
                threading.Thread(target=self._forward, args=(conn, up), daemon=True).start()
                while data := up.recv(65536):
                    self.trickle(conn, data, every=0.2)
        except OSError:
            pass  # either side hung up

    @staticmethod
    def _forward(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


def head(length: int | None, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def trickled_body(server: TinyServer, conn: socket.socket, _request: bytes) -> None:
    conn.sendall(head(len(PAGE)))
    server.trickle(conn, PAGE)


def trickled_head(server: TinyServer, conn: socket.socket, _request: bytes) -> None:
    server.trickle(conn, head(len(PAGE)) + PAGE)


def trickled_gzip(server: TinyServer, conn: socket.socket, _request: bytes) -> None:
    body = gzip.compress(PAGE)
    conn.sendall(head(len(body), "Content-Encoding: gzip"))
    server.trickle(conn, body)


def trickled_until_close(server: TinyServer, conn: socket.socket, _request: bytes) -> None:
    # No length: the body ends when the connection does, so a cut body looks complete.
    conn.sendall(head(None, "Connection: close"))
    server.trickle(conn, PAGE)


TRICKLES: dict[str, Reply] = {
    "body": trickled_body,
    "head": trickled_head,
    "gzip-body": trickled_gzip,
    "body-until-close": trickled_until_close,
}


def answered(_server: TinyServer, conn: socket.socket, _request: bytes) -> None:
    conn.sendall(head(len(PAGE)) + PAGE)  # and the connection stays open for more


@pytest.fixture
def serve() -> Iterator[Callable[..., TinyServer]]:
    servers: list[TinyServer] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> TinyServer:
        servers.append(TinyServer(reply, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def server_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


def timed_sweep(url: str, ca_file: str | None = None) -> tuple[ApiError, float]:
    client = FineTuneClient(
        url,
        Secret(KEY),
        tz=UTC,
        timeout=REQUEST_TIMEOUT,
        retry=RetryPolicy(max_attempts=1),
        ca_file=ca_file,
    )
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        client.sweep()
    elapsed = time.monotonic() - started
    client.close()
    return info.value, elapsed


# --- item 12: the request timeout holds whatever the server trickles -------------------


@pytest.mark.parametrize("mode", TRICKLES)
def test_a_trickling_server_cannot_stretch_a_request(
    mode: str, serve: Callable[..., TinyServer]
) -> None:
    server = serve(TRICKLES[mode])
    err, elapsed = timed_sweep(server.url)
    assert (err.code, err.http_status) == ("Timeout", "")
    assert REQUEST_TIMEOUT - 0.1 <= elapsed < REQUEST_TIMEOUT + MARGIN, elapsed
    assert len(server.requests) == 1


def test_a_trickle_over_tls_is_cut_too(
    serve: Callable[..., TinyServer], server_tls: ssl.SSLContext, pki: Pki
) -> None:
    server = serve(trickled_head, tls=server_tls)
    err, elapsed = timed_sweep(server.url, ca_file=str(pki.ca))
    assert (err.code, err.http_status) == ("Timeout", "")
    assert REQUEST_TIMEOUT - 0.1 <= elapsed < REQUEST_TIMEOUT + MARGIN, elapsed


def test_a_trickled_tls_handshake_is_cut_too(
    serve: Callable[..., TinyServer], server_tls: ssl.SSLContext, pki: Pki
) -> None:
    proxy = TrickleProxy(serve(answered, tls=server_tls))
    try:
        err, elapsed = timed_sweep(proxy.url, ca_file=str(pki.ca))
    finally:
        proxy.close()
    assert (err.code, err.http_status) == ("Timeout", "")
    assert REQUEST_TIMEOUT - 0.1 <= elapsed < REQUEST_TIMEOUT + MARGIN, elapsed
    assert proxy.upstream.requests == []  # cut in the handshake


def test_a_trickling_https_proxy_is_cut_too(
    serve: Callable[..., TinyServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy's answer to CONNECT is read while connecting, before any request."""

    def established(server: TinyServer, conn: socket.socket, _request: bytes) -> None:
        server.trickle(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")

    proxy = serve(established)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "")
    err, elapsed = timed_sweep("https://dashscope.invalid")
    assert (err.code, err.http_status) == ("Timeout", "")
    assert REQUEST_TIMEOUT - 0.1 <= elapsed < REQUEST_TIMEOUT + MARGIN, elapsed
    assert proxy.requests[0].startswith(b"CONNECT dashscope.invalid:443 ")


def test_a_kept_alive_connection_that_starts_trickling_is_cut(
    serve: Callable[..., TinyServer],
) -> None:
    def answer_then_trickle(server: TinyServer, conn: socket.socket, request: bytes) -> None:
        if len(server.requests) == 1:
            answered(server, conn, request)
        else:
            trickled_head(server, conn, request)

    server = serve(answer_then_trickle)
    client = FineTuneClient(
        server.url, Secret(KEY), tz=UTC, timeout=1.0, retry=RetryPolicy(max_attempts=1)
    )
    assert client.sweep().jobs == ()
    started = time.monotonic()
    with pytest.raises(ApiError, match="Timeout"):
        client.sweep()
    assert time.monotonic() - started < 1.0 + MARGIN
    assert (len(server.requests), server.connections) == (2, 1)


def test_a_deadline_ends_with_its_request(serve: Callable[..., TinyServer]) -> None:
    """After a timeout the client works on; a kept-alive connection outlives the deadline
    of the request that opened it."""
    slow, fast = serve(trickled_body), serve(answered)
    client = FineTuneClient(
        slow.url, Secret(KEY), tz=UTC, timeout=0.5, retry=RetryPolicy(max_attempts=1)
    )
    with pytest.raises(ApiError, match="Timeout"):
        client.sweep()
    client.base_url = fast.url
    for _ in range(3):
        assert client.sweep().jobs == ()
        time.sleep(0.7)  # past the deadline the previous request had
    assert (len(fast.requests), fast.connections) == (3, 1)


@pytest.mark.parametrize("mode", ["head", "body"])
def test_the_exporter_counts_a_trickle_as_timeout_within_its_timeout(
    mode: str, serve: Callable[..., TinyServer], exporter_factory: Callable[..., Exporter]
) -> None:
    server = serve(TRICKLES[mode])
    exp = exporter_factory(
        [
            f"--dashscope.base-url={server.url}",
            f"--dashscope.timeout={REQUEST_TIMEOUT:g}s",
            "--dashscope.max-attempts=1",
            "--poll.interval=1h",
        ],
        env={"DASHSCOPE_API_KEY": KEY},
        wait_ready=False,
    )
    wait_for(lambda: api_errors(exp, "Timeout", "") == 1, what="Timeout counted")
    text = exp.metrics()
    duration = value(text, "dashscope_finetune_sweep_duration_seconds", account="default")
    assert duration is not None
    assert REQUEST_TIMEOUT - 0.1 <= duration < REQUEST_TIMEOUT + MARGIN
    assert (
        value(text, "dashscope_finetune_api_requests_total", account="default", endpoint="list")
        == 1
    )
    assert value(text, "dashscope_finetune_sweep_failures_total", account="default") == 1
    assert value(text, "dashscope_finetune_up", account="default") == 0


# --- item 10: nothing of the key reaches an error, whatever the API echoes ---------------


def echo_error(
    status: int, message: str, request_id: str = "r", code: str = "InvalidApiKey"
) -> bytes:
    return json.dumps({"code": code, "message": message, "request_id": request_id}).encode()


@pytest.mark.parametrize("padding", range(160, 205))
def test_a_key_echoed_at_the_clip_leaves_no_fragment(padding: int) -> None:
    """Before, the clip to 200 characters came first and cut the key into a fragment that
    whole-key redaction could not match (27 of 32 characters at padding 173)."""
    body = echo_error(401, "p" * padding + KEY + " is invalid", "q" * (padding - 100) + KEY)
    err = classify_response(401, body, Secret(KEY))
    shown = f"{err} {err.message} {err.request_id}"
    assert leaked(shown, KEY) == []
    assert len(err.message) <= 200 + len("<redacted>")
    assert err.message.startswith("p" * min(padding, 150))


def test_a_quoted_part_of_the_key_is_removed() -> None:
    message = f"Incorrect API key provided: {KEY[:12]}****{KEY[-9:]}"
    err = classify_response(401, echo_error(401, message), Secret(KEY))
    assert leaked(str(err), KEY) == []
    assert err.message.startswith("Incorrect API key provided: <redacted>****")


def test_the_key_as_an_error_code_is_no_metric_label() -> None:
    err = classify_response(400, echo_error(400, "m", code=KEY), Secret(KEY))
    assert leaked(err.code, KEY) == []
    assert err.code == "redacted"


def test_a_request_id_of_a_good_page_loses_the_key() -> None:
    body = json.dumps({"request_id": "r" * 90 + KEY, "output": {"jobs": []}}).encode()
    assert leaked(decode_page(body, 200, Secret(KEY)).request_id, KEY) == []


@responses.activate
def test_the_client_scrubs_with_the_key_it_sent() -> None:
    url = "https://dashscope-intl.aliyuncs.com/api/v1/fine-tunes"
    responses.add(responses.GET, url, status=401, body=echo_error(401, "p" * 173 + KEY, KEY))
    responses.add(responses.GET, url, json={"request_id": "r" * 90 + KEY, "output": None})
    client = FineTuneClient(
        "https://dashscope-intl.aliyuncs.com",
        Secret(KEY),
        tz=UTC,
        retry=RetryPolicy(max_attempts=1),
    )
    for _ in range(2):
        with pytest.raises(ApiError) as info:
            client.sweep()
        err = info.value
        assert leaked(f"{err} {err.message} {err.request_id} {err.code}", KEY) == []


def test_the_exporter_logs_no_fragment_of_an_echoed_key(
    serve: Callable[..., TinyServer], exporter_factory: Callable[..., Exporter]
) -> None:
    def echo(_server: TinyServer, conn: socket.socket, request: bytes) -> None:
        sent = next(
            line.split(b"Bearer ", 1)[1].decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"authorization:")
        )
        body = echo_error(401, "p" * 173 + sent, "q" * 73 + sent)
        conn.sendall(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    server = serve(echo)
    exp = exporter_factory(
        [
            f"--dashscope.base-url={server.url}",
            "--dashscope.max-attempts=1",
            "--poll.interval=1s",
            "--log.level=debug",
        ],
        env={"DASHSCOPE_API_KEY": KEY},
        wait_ready=False,
    )
    wait_for(lambda: api_errors(exp, "InvalidApiKey", "401") >= 2, what="InvalidApiKey counted")
    text = exp.metrics()
    exp.stop()
    log = exp.output()
    assert "InvalidApiKey HTTP 401: ppp" in log
    assert leaked(log, KEY) == []
    assert leaked(text, KEY) == []
