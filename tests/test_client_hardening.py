"""The client against hostile servers: an API echoing the key.

Real sockets on 127.0.0.1 (a server of a few lines per case), the client in-process and
the real ``ft-exporter`` process; ``responses`` where a canned answer is enough.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import timezone

import pytest
import responses
from conftest import Exporter, api_errors, wait_for
from leaks import leaked

from ft_exporter.client import ApiError, FineTuneClient, classify_response, decode_page
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import Secret

#: 32 characters, like a real key.
KEY = "sk-hardening-SECRET-0123456789ab"
#: A reply gives up after this long, so that no test can hang on it.
LIFETIME = 10.0
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

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., TinyServer]]:
    servers: list[TinyServer] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> TinyServer:
        servers.append(TinyServer(reply, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


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
        tz=timezone.utc,
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
