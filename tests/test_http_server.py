"""The HTTP server against hostile clients: real sockets, the real exporter process.

Every connection test is bounded in count and time and talks to loopback only.
"""

from __future__ import annotations

import contextlib
import gzip
import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
from conftest import Exporter, Simulator, basic_credentials, value, wait_for

from ft_exporter.http.routes import accepts_gzip, negotiate

pytestmark = pytest.mark.e2e

#: What the flood tests hold open at once, as the issue measured it.
FLOOD = 5000
TRICKLERS = 300
RSS_LIMIT = 128 * 1024 * 1024


# -- helpers ------------------------------------------------------------------------


def connect(exp: Exporter, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", exp.port), timeout=timeout)


def exchange(exp: Exporter, data: bytes, wait: float = 3.0) -> bytes:
    """Send raw bytes, read until the server closes or ``wait`` passes quietly."""
    with connect(exp) as sock:
        sock.sendall(data)
        return read_all(sock, wait)


def read_all(sock: socket.socket, wait: float) -> bytes:
    sock.settimeout(wait)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each response in a raw keep-alive stream (Content-Length framed)."""
    out = []
    while raw.startswith(b"HTTP/1.1 "):
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        out.append((status, rest[:length]))
        raw = rest[length:]
    assert raw == b"", f"trailing bytes after the responses: {raw[:200]!r}"
    return out


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def dropped(exp: Exporter, reason: str) -> float:
    got = value(
        exp.metrics(), "dashscope_finetune_exporter_http_connections_dropped_total", reason=reason
    )
    assert got is not None, f"no dropped series for reason={reason}"
    return got


def open_connections(exp: Exporter) -> float:
    got = value(exp.metrics(), "dashscope_finetune_exporter_http_open_connections")
    assert got is not None
    return got


def proc_stat(pid: int) -> tuple[int, float]:
    """(RSS in bytes, CPU seconds used) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return rss, ticks / 100.0  # USER_HZ is 100 on Linux


def timed_scrape(exp: Exporter) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = exp.get("/metrics")
    return status, time.monotonic() - started


@contextmanager
def open_files(wanted: int) -> Iterator[None]:
    """Let the test process itself hold ``wanted`` sockets (raise its soft limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the hard open-file limit {hard} is below the {wanted} sockets this needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(exp: Exporter, count: int) -> list[socket.socket]:
    """Open ``count`` connections that send nothing."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", exp.port))
        socks.append(sock)
    return socks


def trickle(socks: list[socket.socket], seconds: float, probe: Callable[[], None]) -> None:
    """One byte of a request head per second on each socket, calling ``probe`` between."""
    head = get("/metrics")
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        for sock in socks:
            with contextlib.suppress(OSError):  # closed by the server: that is the point
                sock.send(head[sent % len(head) : sent % len(head) + 1])
        sent += 1
        probe()
        time.sleep(1.0)


@pytest.fixture
def exp(simulator: Simulator, exporter_factory: Callable[..., Exporter]) -> Exporter:
    return exporter_factory(
        [
            "--web.read-header-timeout=2s",
            "--web.idle-timeout=2s",
            f"--dashscope.base-url={simulator.url}",
            "--log.level=debug",
        ],
        {"DASHSCOPE_API_KEY": simulator.key},
    )


# -- negotiation (pure functions) -----------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", "text/plain; version=0.0.4; charset=utf-8"),
        ("text/plain; version=x", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text; version=abc", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text; version=9.9.9", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text; q=0", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text; q=abc", "text/plain; version=0.0.4; charset=utf-8"),
        (";;;,,,=;q=", "text/plain; version=0.0.4; charset=utf-8"),
        (
            "text/plain;q=0.9, application/openmetrics-text;version=1.0.0",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3,"
            "*/*;q=0.2",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (
            "text/plain;version=0.0.4, application/openmetrics-text;q=0.5",
            "text/plain; version=0.0.4; charset=utf-8",
        ),
    ],
)
def test_negotiate_never_raises_or_reflects(accept: str, content_type: str) -> None:
    assert negotiate(accept)[1] == content_type


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=x", False),
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("gzip;q=0, *", False),
        ("deflate", False),
    ],
)
def test_accepts_gzip_honours_q_values(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


# -- against the real process -----------------------------------------------------------


TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("text/plain; version=x", TEXT_0_0_4),
        ("application/openmetrics-text; version=abc", TEXT_0_0_4),
        ("application/openmetrics-text; version=99.0.0", TEXT_0_0_4),
        (
            "application/openmetrics-text; version=1.0.0; escaping=nonsense",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    ],
)
def test_crafted_accept_gets_a_format_we_serve_and_no_traceback(
    exp: Exporter, accept: str, content_type: str
) -> None:
    raw = exchange(exp, get("/metrics", f"Accept: {accept}", "Connection: close"))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]
    assert f"Content-Type: {content_type}\r\n".encode() in raw
    assert b"dashscope_finetune_up" in raw
    assert "Traceback" not in exp.output()
    assert "level=error" not in exp.output()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_is_never_read_as_a_request(exp: Exporter, framing: str) -> None:
    smuggled = get("/-/ready")
    if framing == "content-length":
        head = get("/-/healthy", f"Content-Length: {len(smuggled)}")
        body = smuggled
    else:
        head = get("/-/healthy", "Transfer-Encoding: chunked")
        body = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    follow_up = get("/", "Connection: close")
    got = responses(exchange(exp, head + body + follow_up))
    # Two requests, two answers: the health check, then the landing page; never "Ready".
    assert [status for status, _ in got] == [200, 200]
    assert got[0][1] == b"Healthy\n"
    assert b"DashScope fine-tune exporter" in got[1][1]


def test_content_length_and_chunked_together_is_refused_and_closed(exp: Exporter) -> None:
    smuggled = get("/-/ready")
    chunk = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    head = get("/-/healthy", "Transfer-Encoding: chunked", "Content-Length: 3")
    got = responses(exchange(exp, head + chunk))
    assert [status for status, _ in got] == [400]
    assert dropped(exp, "bad_request") == 1


def test_oversized_body_is_refused_and_closed(exp: Exporter) -> None:
    body = b"x" * (64 * 1024 + 1)
    got = responses(exchange(exp, get("/-/healthy", f"Content-Length: {len(body)}") + body))
    assert [status for status, _ in got] == [413]


def test_oversized_head_is_refused_in_one_piece_or_many(exp: Exporter) -> None:
    big = "X-Big: " + "a" * 20_000
    assert responses(exchange(exp, get("/-/healthy", big)))[0][0] == 431
    with connect(exp) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):
            sock.sendall(b"X-Pad: " + b"b" * 1000 + b"\r\n")
        raw = read_all(sock, 3.0)
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:100]


def test_malformed_request_line_is_400_without_traceback(exp: Exporter) -> None:
    assert responses(exchange(exp, b"GARBAGE\r\n\r\n"))[0][0] == 400
    assert responses(exchange(exp, b"GET /\x1b[31mred\rx HTTP/1.1\r\nHost: x\r\n\r\n"))[0][0] == 400
    assert "Traceback" not in exp.output()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "FOO"])
def test_other_methods_get_405_with_allow(exp: Exporter, method: str) -> None:
    request = f"{method} /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = exchange(exp, request.encode())
    assert raw.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), raw[:100]
    assert b"\r\nAllow: GET, HEAD\r\n" in raw


def test_gzip_only_when_acceptable_and_vary_always(exp: Exporter) -> None:
    for header, gzipped in [("gzip", True), ("gzip;q=0", False), ("identity", False)]:
        raw = exchange(exp, get("/metrics", f"Accept-Encoding: {header}", "Connection: close"))
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        assert b"\r\nVary: Accept, Accept-Encoding" in head
        assert (b"\r\nContent-Encoding: gzip" in head) is gzipped, header
        text = gzip.decompress(body) if gzipped else body
        assert text.startswith(b"# HELP"), text[:50]


def test_head_trickled_byte_by_byte_is_cut_at_the_deadline(exp: Exporter) -> None:
    """A trickle cannot extend the head deadline (2 s here): cut well before 12 bytes/s end."""
    head = get("/metrics")  # ~40 bytes: 20 s at 2 bytes a second
    with connect(exp) as sock:
        started = time.monotonic()
        closed_after = None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            sock.settimeout(0.5)
            try:
                if sock.recv(65536).startswith(b"HTTP/1.1 408"):
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
    assert closed_after is not None, "the server read the whole trickled head"
    assert closed_after < 6.0, closed_after
    assert dropped(exp, "header_timeout") >= 1


def test_idle_keepalive_connection_is_closed_after_idle_timeout(exp: Exporter) -> None:
    with connect(exp) as sock:
        sock.sendall(get("/-/healthy"))
        started = time.monotonic()
        raw = read_all(sock, 8.0)  # returns when the server closes
        elapsed = time.monotonic() - started
    assert responses(raw) == [(200, b"Healthy\n")]
    assert 1.5 < elapsed < 6.0, elapsed


def test_keepalive_serves_many_requests_on_one_connection(exp: Exporter) -> None:
    with connect(exp) as sock:
        for _ in range(5):
            sock.sendall(get("/-/healthy"))
            raw = b""
            while not raw.endswith(b"\r\n\r\nHealthy\n"):
                chunk = sock.recv(65536)
                assert chunk, f"closed after {raw!r}"
                raw += chunk
            assert responses(raw) == [(200, b"Healthy\n")]


# -- floods -----------------------------------------------------------------------------


def _flood_and_check(exp: Exporter) -> None:
    """5,000 silent plus 300 trickling connections; scrapes still answer promptly."""
    pid = exp.proc.pid
    rss_before, _ = proc_stat(pid)
    silent = flood(exp, FLOOD - TRICKLERS)
    tricklers = flood(exp, TRICKLERS)
    slowest = 0.0
    peak_rss = 0

    def probe() -> None:
        nonlocal slowest, peak_rss
        status, elapsed = timed_scrape(exp)
        assert status == 200
        slowest = max(slowest, elapsed)
        peak_rss = max(peak_rss, proc_stat(pid)[0])

    try:
        trickle(tricklers, 4.0, probe)
        # Idle under siege: no busy loop (CPU over 2 s, scrapes excluded).
        _, cpu_before = proc_stat(pid)
        time.sleep(2.0)
        _, cpu_after = proc_stat(pid)
        probe()
        metrics = exp.metrics()
        open_now = value(metrics, "dashscope_finetune_exporter_http_open_connections")
        cap = value(metrics, "dashscope_finetune_exporter_http_max_connections")
    finally:
        for sock in silent + tricklers:
            sock.close()
    assert slowest < 1.0, f"a scrape took {slowest:.2f}s under the flood"
    assert peak_rss < RSS_LIMIT, f"RSS {peak_rss / 2**20:.0f} MiB (from {rss_before / 2**20:.0f})"
    assert cpu_after - cpu_before < 0.5, f"{cpu_after - cpu_before:.2f}s CPU in 2s idle"
    assert cap is not None and open_now is not None and open_now <= cap
    assert dropped(exp, "evicted") >= FLOOD - cap
    # Recovery: the flood gone, the server holds (almost) nothing and serves at once.
    wait_for(lambda: open_connections(exp) <= 1, timeout=15, what="connections to drain")
    assert timed_scrape(exp)[0] == 200
    assert "Traceback" not in exp.output()


def _flood_exporter(
    factory: Callable[..., Exporter], sim: Simulator, nofile: tuple[int, int] | None, *extra: str
) -> Exporter:
    return factory(
        [f"--dashscope.base-url={sim.url}", *extra],
        {"DASHSCOPE_API_KEY": sim.key},
        nofile=nofile,
    )


HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.mark.serial  # machine-wide load and timing bounds: run alone
@pytest.mark.parametrize(
    ("nofile", "extra", "start_line", "cap"),
    [
        pytest.param(None, (), "", 512, id="limits-as-they-are"),
        pytest.param(
            (1024, HARD_NOFILE),
            (),
            f"raised the open-file limit from 1024 to {HARD_NOFILE}" if HARD_NOFILE > 1024 else "",
            512,
            id="soft-limit-1024",
        ),
        pytest.param(
            (1024, 1024),
            ("--web.max-connections=5000",),
            "--web.max-connections lowered from 5000 to 896",  # 1024 - 64 reserved - 64 a turn
            896,
            id="hard-limit-1024",
        ),
    ],
)
def test_flood_of_idle_and_trickling_connections(
    simulator: Simulator,
    exporter_factory: Callable[..., Exporter],
    nofile: tuple[int, int] | None,
    extra: tuple[str, ...],
    start_line: str,
    cap: int,
) -> None:
    exp = _flood_exporter(exporter_factory, simulator, nofile, *extra)
    assert start_line in exp.output()
    assert value(exp.metrics(), "dashscope_finetune_exporter_http_max_connections") == cap
    with open_files(2 * FLOOD + 200):
        _flood_and_check(exp)


def test_a_full_house_of_busy_connections_resumes_accepting_when_one_is_done(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    """At the cap with every connection busy, accepting pauses; it must resume as soon as
    one of them is done with its request, not only when one closes (kept alive, that is
    --web.idle-timeout later)."""
    slow_hash = bcrypt.hashpw(b"right", bcrypt.gensalt(13)).decode()  # ~0.5 s a check
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{slow_hash}'\n")
    exp = exporter_factory(
        [
            f"--dashscope.base-url={simulator.url}",
            f"--web.config.file={web}",
            "--web.health-no-auth",
            "--web.max-connections=1",
            "--web.idle-timeout=60s",
        ],
        {"DASHSCOPE_API_KEY": simulator.key},
    )
    with connect(exp) as busy:
        # An unknown password: bcrypt runs for it, and the only connection is busy meanwhile.
        busy.sendall(get("/metrics", f"Authorization: {basic_credentials('prometheus', 'x')}"))
        time.sleep(0.05)
        started = time.monotonic()
        raw = exchange(exp, get("/-/healthy", "Connection: close"), wait=10.0)
        waited = time.monotonic() - started
        assert responses(read_all(busy, 2.0)) == [(401, b"Unauthorized\n")]
    assert responses(raw) == [(200, b"Healthy\n")]
    assert waited < 10.0, waited
