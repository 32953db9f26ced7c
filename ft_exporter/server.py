"""The exporter's HTTP endpoints: metrics, a landing page and health checks."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ft_exporter import __version__
from ft_exporter.webconfig import HANDSHAKE_TIMEOUT, REALM, BasicAuth, WebConfig

log = logging.getLogger(__name__)


class ExporterHTTPServer(ThreadingHTTPServer):
    """Threaded server; one thread per connection, none left behind at shutdown.

    With TLS the accept loop only wraps the socket; the handshake runs in the
    connection's own thread, so a slow or plain-HTTP client cannot stall it.
    """

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many scrapers
    # (or a burst of health checks) connect at once; the kernel caps this anyway.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        telemetry_path: str = "/metrics",
        web: WebConfig | None = None,
        auth_exempt: Collection[str] = (),
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.telemetry_path = telemetry_path
        self.web = web or WebConfig()
        self.auth = BasicAuth(self.web.users) if self.web.users else None
        self.auth_exempt = frozenset(auth_exempt)
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, ExporterHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Listen on IPv4 too when bound to "::".
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        context = self.web.ssl_context
        if context is None:
            return conn, addr
        return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a client that hangs up mid-request
        # (common with TLS clients that skip close_notify) is no error of ours.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address[0], exc)
        else:
            log.error("error serving %s", client_address[0], exc_info=exc)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


LANDING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>DashScope fine-tune exporter</title></head>
<body>
<h1>DashScope fine-tune exporter</h1>
<p>Prometheus metrics for Alibaba Cloud Model Studio fine-tune jobs. Version {version}.</p>
<ul>
<li><a href="{metrics}">Metrics</a></li>
<li><a href="/-/healthy">Health</a> (the process is alive)</li>
<li><a href="/-/ready">Readiness</a> (a sweep has completed)</li>
</ul>
</body>
</html>
"""


class ExporterHandler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    server_version = f"ft-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY a keep-alive
    # client waits out the peer's delayed ACK (~40 ms) on every response.
    disable_nagle_algorithm = True
    # An idle keep-alive connection holds a thread; close it after this long
    # (longer than any sane scrape interval, so Prometheus keeps its connection).
    timeout = 300

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorised(path):
            return
        if path == self.server.telemetry_path:
            self._metrics()
        elif path == "/":
            page = LANDING.format(
                version=html.escape(__version__), metrics=html.escape(self.server.telemetry_path)
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", "text/plain; charset=utf-8")
        elif path == "/-/ready":
            if self.server.ready():
                self._send(200, b"Ready\n", "text/plain; charset=utf-8")
            else:
                self._send(503, b"Not ready: no sweep has completed yet\n", "text/plain")
        else:
            self._send(404, b"Not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _authorised(self, path: str) -> bool:
        """True, or a 401 has been sent. Credentials are never logged."""
        auth = self.server.auth
        if auth is None or path in self.server.auth_exempt:
            return True
        if auth.check(self.headers.get("Authorization")):
            return True
        log.debug("unauthorised request for %s from %s", path, self.address_string())
        self._send(
            401,
            b"Unauthorized\n",
            "text/plain; charset=utf-8",
            extra={"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )
        return False

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception:
            log.exception("rendering metrics failed")
            self._send(500, b"Error rendering metrics\n", "text/plain")
            return
        encoding = None
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=5)
            encoding = "gzip"
        self._send(200, body, content_type, encoding)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        encoding: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        for name, text in (extra or {}).items():
            self.send_header(name, text)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def end_headers(self) -> None:
        # The web config's http_server_config.headers go on every response, errors too.
        for name, text in self.server.web.headers:
            self.send_header(name, text)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)
