"""Scrape cost: the exporter beside a static keep-alive server serving the same bytes.

Rerun it any time (everything runs on loopback; nothing is asserted):

    .venv/bin/python benchmarks/scrape.py          # 1,000 jobs, then 100 static accounts
    .venv/bin/python benchmarks/scrape.py --code /path/to/other/checkout   # "before" figures

For each case an exporter process is started (``--serve``: the registry cli.main builds,
the HTTP server, fed synthetic snapshots in-process instead of polling an API; every
account publishes a new snapshot and counts one API request once a minute, spread
evenly, as pollers at the default interval do). Its ``/metrics`` answer to Prometheus'
request headers is fetched once, and a static server is started that answers every
request with exactly those bytes. Both are then scraped at concurrency 1 and 50 over
keep-alive connections, and the table gives, per scrape: the server process's CPU
(utime + stime from /proc, over the whole run) and the latency p50 and p99.

API, for benchmarks/sweep.py (which scrapes a real exporter polling the simulator):

``static_server(body, headers=()) -> ContextManager[Target]``
    A child process serving ``body`` with ``headers`` (name, value pairs; Content-Length
    is added) to every request, HTTP/1.1 keep-alive, one asyncio loop: the cheapest
    way Python can answer. ``Target.url`` is its URL, ``Target.pid`` its process.

``fetch(url, headers=PROMETHEUS_HEADERS, timeout=30.0) -> Fetched``
    One request: ``status``, ``headers`` (lower-case names) and ``body`` as sent.

``measure_scrapes(url, pid, concurrency, count, headers=PROMETHEUS_HEADERS, timeout=30.0)``
    ``count`` scrapes spread over ``concurrency`` keep-alive connections, all at once,
    after a warm-up of a tenth as many. Returns ``Scrapes``: ``cpu_ms``, the CPU the
    process ``pid`` spent per scrape (all its threads, nanosecond schedstat where the
    kernel has it); ``p50_ms`` and ``p99_ms``, the latency from sending a request to
    reading its last byte; ``count``, the scrapes answered; ``errors``, answers not 200
    and connections cut or silent past ``timeout`` (such a connection's scraper stops);
    ``bytes``, the body size. The scrapers are one asyncio loop in the calling process,
    so their own CPU is not counted, but they share the machine with the server.

``PROMETHEUS_HEADERS``: the Accept and Accept-Encoding Prometheus 2 and 3 send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The classic text format, gzipped (what a scraper asking for no OpenMetrics gets).
TEXT_HEADERS: tuple[tuple[str, str], ...] = (("Accept-Encoding", "gzip"),)
PROMETHEUS_HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Accept",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ),
    ("Accept-Encoding", "gzip"),
)


@dataclass(frozen=True)
class Target:
    url: str
    pid: int


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Scrapes:
    concurrency: int
    count: int
    errors: int
    bytes: int
    cpu_ms: float
    p50_ms: float
    p99_ms: float

    def __str__(self) -> str:
        return (
            f"c={self.concurrency:<3} {self.count} scrapes, {self.errors} errors, "
            f"{self.bytes} B: CPU {self.cpu_ms:.3f} ms/scrape, "
            f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"
        )


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``: its threads' run time in nanoseconds (/proc/PID/task/*/schedstat),
    where the kernel keeps it; else utime + stime in clock ticks (/proc/PID/stat), too
    coarse for a scrape of a tenth of a millisecond. A thread that ended is not counted,
    also one that ends between the listing of the threads and the read of its figure."""
    if Path(f"/proc/{pid}/task/{pid}/schedstat").exists():
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue  # the thread ended between the listing and the read
        return total / 1e9
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- the client: raw HTTP/1.1 over keep-alive connections ------------------------------


def _request(url: str, headers: Sequence[tuple[str, str]]) -> tuple[str, int, bytes]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    lines = [f"GET /{path} HTTP/1.1", f"Host: {hostport}", *(f"{k}: {v}" for k, v in headers)]
    return host, int(port or 80), ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> Fetched:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, sep, val = line.partition(":")
        if sep:
            headers[name.strip().lower()] = val.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Fetched(int(status_line.split()[1]), headers, body)


async def _fetch(url: str, headers: Sequence[tuple[str, str]]) -> Fetched:
    host, port, request = _request(url, headers)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return await _exchange(reader, writer, request)
    finally:
        writer.close()


def fetch(
    url: str, headers: Sequence[tuple[str, str]] = PROMETHEUS_HEADERS, timeout: float = 30.0
) -> Fetched:
    return asyncio.run(asyncio.wait_for(_fetch(url, headers), timeout))


async def _scrapes(
    url: str,
    concurrency: int,
    count: int,
    headers: Sequence[tuple[str, str]],
    timeout: float,
) -> tuple[list[float], int, int]:
    host, port, request = _request(url, headers)
    latencies: list[float] = []
    errors = 0
    size = 0
    left = count

    async def scraper() -> None:
        nonlocal errors, size, left
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while left > 0:
                left -= 1
                started = time.perf_counter()
                try:
                    answer = await asyncio.wait_for(_exchange(reader, writer, request), timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                    errors += 1  # the connection is in no state to go on: this scraper stops
                    return
                latencies.append(time.perf_counter() - started)
                size = len(answer.body)
                errors += answer.status != 200
        finally:
            writer.close()

    await asyncio.gather(*(scraper() for _ in range(concurrency)))
    return latencies, errors, size


def measure_scrapes(
    url: str,
    pid: int,
    concurrency: int,
    count: int,
    headers: Sequence[tuple[str, str]] = PROMETHEUS_HEADERS,
    timeout: float = 30.0,
) -> Scrapes:
    """See the module docstring."""
    warm_up = max(concurrency, count // 10)
    asyncio.run(_scrapes(url, concurrency, warm_up, headers, timeout))
    before = cpu_seconds(pid)
    latencies, errors, size = asyncio.run(_scrapes(url, concurrency, count, headers, timeout))
    if not latencies:
        raise RuntimeError(f"{url}: no scrape answered ({errors} errors)")
    cpu = cpu_seconds(pid) - before
    quantiles = statistics.quantiles(latencies, n=100)
    return Scrapes(
        concurrency,
        len(latencies),
        errors,
        size,
        cpu * 1000 / len(latencies),
        quantiles[49] * 1000,
        quantiles[98] * 1000,
    )


# -- the static server ------------------------------------------------------------------

STATIC_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    response = open(sys.argv[1], "rb").read()

    async def serve(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\\r\\n\\r\\n")
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)


@contextlib.contextmanager
def _child(args: list[str], env: dict[str, str] | None = None) -> Iterator[Target]:
    """A child process that prints its port on its first line."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield Target(f"http://127.0.0.1:{port}/metrics", proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def static_server(body: bytes, headers: Sequence[tuple[str, str]] = ()) -> Iterator[Target]:
    """See the module docstring."""
    head = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers)]
    head.append(f"Content-Length: {len(body)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "response"
        path.write_bytes(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        with _child([sys.executable, "-c", STATIC_SERVER, str(path)]) as target:
            yield target


# -- the exporter, fed synthetic snapshots ----------------------------------------------

MODELS = ("qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct")
TYPES = ("sft", "efficient_sft", "dpo_lora")
STATUSES = ("SUCCEEDED",) * 12 + ("FAILED", "CANCELED", "RUNNING", "QUEUING")


def synthetic_jobs(count: int, seed: int) -> tuple[object, ...]:
    """An account like a busy one: three models, three types, mostly ended jobs."""
    from ft_exporter.model import TERMINAL_STATUSES, Job

    rng = random.Random(seed)
    jobs = []
    for n in range(count):
        status = rng.choice(STATUSES)
        model = rng.choice(MODELS)
        created = 1.7e9 + n * 600.0
        jobs.append(
            Job(
                job_id=f"ft-202411{n:06d}-{rng.getrandbits(16):04x}",
                job_name=f"{model}-run-{n}",
                status=status,
                model=model,
                base_model=model,
                training_type=rng.choice(TYPES),
                finetuned_output=f"{model}-ft-202411{n:06d}" if status == "SUCCEEDED" else "",
                created=created,
                ended=created + 3600.0 if status in TERMINAL_STATUSES else None,
                usage_tokens=rng.randrange(10_000, 500_000),
            )
        )
    return tuple(jobs)


def static_scenario() -> tuple[object, ...]:
    """The simulator's ``static`` account (19 valid jobs), as benchmarks/accounts.py polls."""
    from datetime import timedelta, timezone

    from ft_exporter.model import JobParseError, parse_job
    from ft_exporter.simulator import static_jobs

    tz = timezone(timedelta(hours=8))
    jobs = []
    for sim in static_jobs():
        with contextlib.suppress(JobParseError):
            jobs.append(parse_job(sim.to_api(time.time(), tz), tz))
    return tuple(jobs)


def serve(accounts: int, jobs: int, interval: float) -> None:
    """The registry and server cli.main builds, fed synthetic snapshots (``--serve``)."""
    from ft_exporter import cli
    from ft_exporter.client import LIST
    from ft_exporter.collector import CollectorSettings, FineTuneCollector, StateUnit
    from ft_exporter.http.server import ExporterHTTPServer
    from ft_exporter.model import ExporterState, Snapshot
    from ft_exporter.reload import Reloader
    from ft_exporter.selfmetrics import SelfMetrics

    registry = cli.build_registry()
    metrics = SelfMetrics(registry)
    names = [f"acct-{n:03d}" if accounts > 1 else "default" for n in range(accounts)]
    if jobs:
        per_account = [synthetic_jobs(jobs, seed) for seed in range(accounts)]
    else:
        per_account = [static_scenario()] * accounts
    states: list[ExporterState] = []
    observers = [metrics.account(name) for name in names]

    def publish(n: int) -> None:
        now = time.time()
        snapshot = Snapshot(per_account[n], taken_at=now)  # type: ignore[arg-type]
        state = ExporterState(snapshot, up=True, last_success=now, last_sweep_duration=0.4)
        if n < len(states):
            states[n] = state
        else:
            states.append(state)
        observers[n].observe(LIST, 0.08, None)
        observers[n].sweep_ended(True)

    for n in range(accounts):
        publish(n)
    units = [
        StateUnit(CollectorSettings(account=name), lambda n=n: states[n])  # type: ignore[misc]
        for n, name in enumerate(names)
    ]
    registry.register(FineTuneCollector(lambda: units))
    server = ExporterHTTPServer(("127.0.0.1", 0), registry, lambda: True)
    Reloader(registry, lambda: None, lambda _: None)
    metrics.shard_accounts.set(accounts)
    server.serve_in_thread()
    print(server.port, flush=True)
    n = 0
    while True:  # one account a tick: each publishes once an interval
        time.sleep(interval / accounts)
        publish(n)
        n = (n + 1) % accounts


@contextlib.contextmanager
def exporter(
    accounts: int, jobs: int, code: Path = ROOT, interval: float = 60.0
) -> Iterator[Target]:
    """An exporter process (``--serve``) whose package comes from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    args = [sys.executable, __file__, "--serve", f"--accounts={accounts}", f"--jobs={jobs}"]
    with _child([*args, f"--interval={interval}"], env) as target:
        yield target


def compare(
    accounts: int,
    jobs: int,
    count: int,
    code: Path,
    headers: Sequence[tuple[str, str]] = PROMETHEUS_HEADERS,
) -> None:
    """One case: the exporter and the static server, at concurrency 1 and 50."""
    what = f"{jobs} jobs" if jobs else "the static scenario (19 jobs)"
    print(f"\n{accounts} account(s), each {what}; code from {code}")
    with exporter(accounts, jobs, code) as exp:
        answer = fetch(exp.url, headers)
        plain = fetch(exp.url, [h for h in headers if h[0] != "Accept-Encoding"])
        print(
            f"  body: {len(plain.body)} B ({plain.headers['content-type']}), "
            f"{len(answer.body)} B gzipped"
        )
        kept = [
            (k, v) for k, v in answer.headers.items() if k in ("content-type", "content-encoding")
        ]
        results = {c: measure_scrapes(exp.url, exp.pid, c, count, headers) for c in (1, 50)}
    with static_server(answer.body, kept) as static:
        statics = {c: measure_scrapes(static.url, static.pid, c, count, headers) for c in (1, 50)}
    for c in (1, 50):
        ratio = results[c].cpu_ms / statics[c].cpu_ms if statics[c].cpu_ms else float("inf")
        print(f"  exporter {results[c]}")
        print(f"  static   {statics[c]}")
        print(f"  CPU ratio at c={c}: {ratio:.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--accounts", type=int, default=0, help="one case only: accounts")
    parser.add_argument(
        "--jobs", type=int, default=0, help="one case only: jobs per account (0: static scenario)"
    )
    parser.add_argument("--interval", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=3000, help="scrapes per measurement")
    parser.add_argument(
        "--text", action="store_true", help="ask for the text format (default: as Prometheus)"
    )
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose exporter runs")
    args = parser.parse_args()
    if args.serve:
        serve(args.accounts, args.jobs, args.interval)
        return 0
    cases = [(args.accounts, args.jobs)] if args.accounts else [(1, 1000), (100, 0)]
    for accounts, jobs in cases:
        headers = TEXT_HEADERS if args.text else PROMETHEUS_HEADERS
        compare(accounts, jobs, args.count, args.code.resolve(), headers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
