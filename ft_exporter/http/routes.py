"""What each path answers: metrics with content negotiation, the landing page, health.

Knows nothing of sockets or connections: a :class:`Request` in, a :class:`Response`
out, so every answer is testable without a server. Every header a client sends is
hostile: negotiation never raises and never reflects a client's text into a header.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from ft_exporter import __version__
from ft_exporter.http import statuspage
from ft_exporter.http.exposition import OPENMETRICS as OPENMETRICS_FORMAT
from ft_exporter.http.exposition import TEXT as TEXT_FORMAT
from ft_exporter.http.exposition import Exposition, Format
from ft_exporter.http.statuspage import StatusUnit

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: Where ``POST`` reloads the configuration (only when the exporter has a file to reload).
RELOAD_PATH = "/-/reload"
#: Methods every path answers; anything else gets 405 with this list in ``Allow``.
ALLOWED_METHODS = ("GET", "HEAD")
#: A body this small gains nothing from gzip.
MIN_GZIP_BYTES = 1024


@dataclass(frozen=True)
class Request:
    """A parsed request head; header names lower-case, repeated headers joined by ``, ``."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)


def _media_ranges(header: str) -> list[tuple[float, str, dict[str, str]]]:
    """``Accept`` as (q, type, params), best first; malformed parts are skipped."""
    ranges: list[tuple[float, int, str, dict[str, str]]] = []
    for index, part in enumerate(header.split(",")):
        kind, *raw_params = (p.strip() for p in part.split(";"))
        params: dict[str, str] = {}
        for raw in raw_params:
            name, sep, val = raw.partition("=")
            if sep:
                params[name.strip().lower()] = val.strip().strip('"')
        q = _quality(params.pop("q", "1"))
        if kind and q > 0:
            ranges.append((q, index, kind.lower(), params))
    ranges.sort(key=lambda r: (-r[0], r[1]))
    return [(q, kind, params) for q, _, kind, params in ranges]


def _quality(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def negotiate(accept: str) -> tuple[Format, str]:
    """OpenMetrics 1.0.0 when asked for it, else the classic text format.

    Only versions this exporter produces are matched, so a crafted ``Accept``
    (``version=x``, ``version=9.9``, an unknown escaping) gets the text format.
    """
    for _, kind, params in _media_ranges(accept):
        version = params.get("version", "")
        if kind == "application/openmetrics-text" and version in ("", "1.0.0"):
            return OPENMETRICS_FORMAT, OPENMETRICS
        if kind in ("text/plain", "text/*", "*/*"):
            break
    return TEXT_FORMAT, CONTENT_TYPE_PLAIN_0_0_4


def accepts_gzip(accept_encoding: str) -> bool:
    """True when ``gzip`` (or ``*``) is listed with a non-zero quality."""
    best: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, *raw_params = (p.strip() for p in part.split(";"))
        q = 1.0
        for raw in raw_params:
            name, _, val = raw.partition("=")
            if name.strip().lower() == "q":
                q = _quality(val.strip())
        if coding:
            best[coding.lower()] = q
    if "gzip" in best:
        return best["gzip"] > 0
    return best.get("*", 0.0) > 0


class Routes:
    """Maps a request to its response; safe to call from several threads at once."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        telemetry_path: str = "/metrics",
        reload: Callable[[], str | None] | None = None,
        units: Callable[[], Sequence[StatusUnit]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        #: The accounts the status page shows (``/``), and the time it is rendered at.
        self.units = units
        self.clock = clock
        self._links = statuspage.Links(telemetry_path, statuspage.alerts_url())
        #: Renders /metrics, the job metrics from cache (see exposition.py).
        self.exposition = Exposition(registry)
        self.ready = ready
        #: Reads the configuration again; returns None, or why nothing changed.
        self.reload = reload
        self.telemetry_path = telemetry_path
        self._render_errors_logged: set[str] = set()

    def __call__(self, request: Request) -> Response:
        if request.path == RELOAD_PATH and self.reload is not None:
            return self._reload(request)
        if request.method not in ALLOWED_METHODS:
            return Response(
                405, b"Method not allowed\n", headers=[("Allow", ", ".join(ALLOWED_METHODS))]
            )
        path = request.path
        if path == self.telemetry_path:
            return self.metrics(request)
        if path == "/":
            return self.status(request)
        if path == "/-/healthy":
            return Response(200, b"Healthy\n")
        if path == "/-/ready":
            if self.ready():
                return Response(200, b"Ready\n")
            return Response(503, b"Not ready: no sweep has completed yet\n")
        return Response(404, b"Not found\n")

    def status(self, request: Request) -> Response:
        """The status page: every account's quota, jobs and API health (see statuspage)."""
        page = statuspage.render(self.units(), self.clock(), version=__version__, links=self._links)
        headers = [*statuspage.HEADERS, ("Vary", "Accept-Encoding")]
        if len(page) >= MIN_GZIP_BYTES and accepts_gzip(request.header("accept-encoding")):
            page = gzip.compress(page, compresslevel=5)
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, page, HTML, headers)

    def _reload(self, request: Request) -> Response:
        """POST only, as Prometheus' own /-/reload (a GET from a crawler must change nothing)."""
        if request.method != "POST":
            return Response(405, b"Method not allowed: use POST\n", headers=[("Allow", "POST")])
        assert self.reload is not None
        problem = self.reload()
        if problem is None:
            return Response(200, b"Reloaded\n")
        return Response(500, f"Reload failed, nothing changed: {problem}\n".encode())

    def metrics(self, request: Request) -> Response:
        fmt, content_type = negotiate(request.header("accept"))
        headers = [("Vary", "Accept, Accept-Encoding")]
        try:
            body = self.exposition.render(fmt)
            if len(body) >= MIN_GZIP_BYTES and accepts_gzip(request.header("accept-encoding")):
                data = body.gzip()
                headers.append(("Content-Encoding", "gzip"))
            else:
                data = body.joined()
        except Exception as exc:  # a bug; tests feed hostile data so that none remains
            self._log_render_error(exc)
            return Response(500, b"Error rendering metrics\n")
        return Response(200, data, content_type, headers)

    def _log_render_error(self, exc: Exception) -> None:
        """Once per kind of failure: a scraper retrying every 15 s must not flood the log."""
        key = f"{type(exc).__name__}: {exc}"[:200]
        if key in self._render_errors_logged:
            return
        if len(self._render_errors_logged) < 100:
            self._render_errors_logged.add(key)
        log.error("rendering metrics failed", exc_info=exc)
