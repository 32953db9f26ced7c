"""The exporter's HTTP endpoints: metrics, a landing page and health checks."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ft_exporter import __version__

log = logging.getLogger(__name__)


class ExporterHTTPServer(ThreadingHTTPServer):
    """Threaded server; one thread per connection, none left behind at shutdown."""

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
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.telemetry_path = telemetry_path
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, ExporterHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Listen on IPv4 too when bound to "::".
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

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

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
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
        self, status: int, body: bytes, content_type: str, encoding: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)
