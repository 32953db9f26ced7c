"""What a sweep costs the account and the machine: the exporter beside the official SDK.

Rerun it any time (it starts its own processes on loopback; the first run also makes the
SDK's venv, ``.venv-bench/`` at the repository root, and installs ``dashscope`` into it):

    .venv/bin/python benchmarks/sweep.py                  # 1,000, 10,000 and 50,000 jobs
    .venv/bin/python benchmarks/sweep.py --sizes 1000 --quick     # what CI runs

For each size, one simulator process (``python -m ft_exporter.simulator --scenario bulk
--jobs N --active 10 --latency 0.05``: the 10 newest jobs waiting to run, so no training
log is read, the rest ended; every API answer waits 50 ms) serves, in turn:

- the exporter (``python -m ft_exporter``) at its default flags, plus ``--poll.interval=5s``
  so later sweeps come soon, plus ``--poll.sweep-timeout`` where a full sweep at the
  default 2 requests/s cannot fit the default 60 s deadline (the table prints the flags).
  Requests are the simulator's own count (``/_sim/stats``): the first sweep's (full), then
  per later sweep (steady; the sweep boundaries are the exporter's
  ``dashscope_finetune_last_success_timestamp_seconds``, matched to the simulator's request
  arrival times). Sweep seconds: ``dashscope_finetune_sweep_duration_seconds``. CPU per
  job: the process's CPU (its threads' ``/proc/PID/task/*/schedstat``) from the first list
  request the simulator saw to ``/-/ready`` 200, over the jobs (start-up left out; the
  simulator, not ``/-/ready``, is polled until the last page, so polling costs nothing). RSS:
  ``process_resident_memory_bytes`` right after the first sweep; peak: ``VmHWM`` after the
  steady sweeps (before the scrapes). Ready: process start to
  ``/-/ready`` 200. Scrapes: ``/metrics`` with the headers Prometheus sends (OpenMetrics,
  gzip) from keep-alive connections, one at a time and 50 at a time; CPU is the
  exporter's per scrape (benchmarks/scrape.py measures both servers);
- the ``dashscope`` SDK in its own venv (benchmarks/sdk_walk.py):
  ``FineTunes.list(page_no=..., page_size=100)`` until ``total`` jobs are read. It keeps no
  state, so every walk is a full one: its steady column repeats the full one;
- a static keep-alive server (benchmarks/scrape.py: asyncio, one process) serving the
  exporter's ``/metrics`` bytes and headers as they were just before its scrapes: what
  serving those bytes costs at least.

Figures are printed, never asserted on (tests/test_sweep_benchmark.py checks only counts).
The machine is shared and has 2 cores: read ratios, not absolute times. A sample, on main
before issue 12 (columns abridged here; the script prints them all, flags and p50 too):

    | jobs   | client        | req full | req steady | sweep s | CPU us/job | RSS | peak | ready s |
    | 1,000  | exporter      |       11 |       11.0 |    5.05 |        101 |  37 |   39 |    5.26 |
    | 1,000  | SDK 2.0.2     |       10 |         10 |    0.57 |         40 |  73 |   73 |         |
    | 10,000 | exporter      |      101 |      101.0 |   50.06 |         66 |  44 |   54 |   50.47 |
    | 10,000 | SDK 2.0.2     |      100 |        100 |    6.42 |         38 |  89 |   89 |         |
    | 50,000 | exporter (1)  |      501 |      501.0 |  250.19 |         56 |  73 |  119 |  250.62 |
    | 50,000 | SDK 2.0.2     |      500 |        500 |   28.00 |         42 | 158 |  158 |         |

    (1) --poll.sweep-timeout=380s; RSS and peak in MiB.

    | jobs   | server        | scrape CPU ms | p99 c1 ms | p99 c50 ms |
    | 1,000  | exporter      |          4.97 |      41.0 |      328.7 |
    | 1,000  | static server |          0.07 |       4.1 |       13.4 |
    | 50,000 | exporter      |          4.88 |       9.9 |      341.2 |
    | 50,000 | static server |          0.05 |       0.4 |       28.6 |
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import scrape  # noqa: E402
from conftest import Process, http_get, http_json, listening_port, samples  # noqa: E402

SDK_VENV = ROOT / ".venv-bench"
#: The SDK as a user installs it; FineTunes.list(page_no, page_size) is in every 1.x and 2.x.
SDK_REQUIREMENT = "dashscope>=1.14"
SDK_WALK = ROOT / "benchmarks" / "sdk_walk.py"
KEY = "sk-bench-sweep-0123456789abcdef"
PAGE_SIZE = 100
ACTIVE = 10
DEFAULT_RATE = 2.0  # --dashscope.max-requests-per-second
DEFAULT_SWEEP_TIMEOUT = 60.0  # --poll.sweep-timeout
POLL_INTERVAL = "5s"
CONCURRENT_SCRAPERS = 50
#: Columns of the table, in order (tests/test_sweep_benchmark.py reads them back).
COLUMNS = (
    "jobs",
    "client",
    "flags",
    "req full",
    "req steady",
    "sweep s",
    "steady s",
    "CPU us/job",
    "RSS MiB",
    "peak MiB",
    "ready s",
    "scrape CPU ms",
    "p50 c1 ms",
    "p99 c1 ms",
    "p99 c50 ms",
)


class SdkUnavailable(RuntimeError):
    """The SDK's venv could not be made or ``dashscope`` not installed into it."""


def ensure_sdk(venv: Path = SDK_VENV) -> Path:
    """The SDK venv's python, made and filled on first use (pip from the package index)."""
    python = venv / "bin" / "python"

    def has_sdk() -> bool:
        check = [str(python), "-c", "import dashscope"]
        return python.exists() and subprocess.run(check, capture_output=True).returncode == 0

    if has_sdk():
        return python
    steps = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    steps.append([*pip, SDK_REQUIREMENT])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SdkUnavailable(f"{' '.join(step)} failed:\n{done.stdout}{done.stderr}")
    if not has_sdk():
        raise SdkUnavailable(f"dashscope still not importable in {venv}")
    return python


# --- scrapes: benchmarks/scrape.py's static server and measurement, Prometheus' headers


def scrape_both(
    url: str, pid: int, stop_exporter: Any, counts: tuple[int, int]
) -> tuple[int, list[scrape.Scrapes]]:
    """The exporter's /metrics, then a static server holding the bytes it just served,
    each scraped at concurrency 1 and 50 with the headers Prometheus sends (OpenMetrics,
    gzip): returns the body's size as served and the four measurements."""
    fetched = scrape.fetch(url)
    results = [
        scrape.measure_scrapes(url, pid, concurrency, count)
        for count, concurrency in zip(counts, (1, CONCURRENT_SCRAPERS), strict=True)
    ]
    stop_exporter()
    kept = [(k, v) for k, v in fetched.headers.items() if k in ("content-type", "content-encoding")]
    with scrape.static_server(fetched.body, kept) as target:
        results += [
            scrape.measure_scrapes(target.url, target.pid, concurrency, count)
            for count, concurrency in zip(counts, (1, CONCURRENT_SCRAPERS), strict=True)
        ]
    return len(fetched.body), results


# --- one size -------------------------------------------------------------------------


@dataclass
class ExporterFigures:
    flags: list[str]
    full_requests: int = 0
    steady_requests: float = 0.0
    steady_sweeps: int = 0
    full_sweep_seconds: float = 0.0
    steady_sweep_seconds: float = 0.0
    cpu_us_per_job: float = 0.0
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0  # VmHWM after the steady sweeps, before the scrapes
    ready_seconds: float = 0.0
    jobs_seen: int = 0
    own_list_requests: int = 0  # the exporter's dashscope_finetune_api_requests_total
    log_requests: int = 0  # the simulator's count: 0 when the list is measured alone
    body_bytes: int = 0
    scrapes: list[scrape.Scrapes] = field(default_factory=list)


@dataclass
class SdkFigures:
    version: str = ""
    requests: int = 0
    jobs_seen: int = 0
    seconds: float = 0.0
    cpu_us_per_job: float = 0.0
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0


@dataclass
class SizeResult:
    jobs: int
    exporter: ExporterFigures
    sdk: SdkFigures
    static: list[scrape.Scrapes] = field(default_factory=list)


def exporter_flags(jobs: int) -> list[str]:
    """Default flags but a short interval, and a deadline a full sweep can fit when needed."""
    flags = [f"--poll.interval={POLL_INTERVAL}"]
    if full_sweep_estimate(jobs) > 0.9 * DEFAULT_SWEEP_TIMEOUT:
        seconds = math.ceil(full_sweep_estimate(jobs) * 1.5 / 10) * 10
        flags.append(f"--poll.sweep-timeout={seconds}s")
    return flags


def full_sweep_estimate(jobs: int) -> float:
    """Seconds a full sweep takes at the default rate: one page per 1/rate, and one more."""
    return (math.ceil(jobs / PAGE_SIZE) + 1) / DEFAULT_RATE


class Sweeps:
    """Reads the exporter's sweep figures and the simulator's request count at a boundary."""

    def __init__(self, simulator_url: str, exporter_url: str) -> None:
        self.simulator_url = simulator_url
        self.exporter_url = exporter_url
        # Wall clock to time.monotonic() (system-wide on Linux, as the simulator stamps).
        self.offset = time.time() - time.monotonic()

    def metrics(self) -> dict[str, float]:
        status, body = http_get(self.exporter_url + "/metrics", timeout=60)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        self.body = body
        figures: dict[str, float] = {"jobs": 0.0}
        for (name, labels), number in samples(body.decode()).items():
            if name == "dashscope_finetune_jobs":
                figures["jobs"] += number
            elif name == "dashscope_finetune_api_requests_total":
                figures[f"requests_{dict(labels)['endpoint']}"] = number
            elif name.endswith("_total"):  # a counter split by a label counts as one
                figures[name] = figures.get(name, 0.0) + number
            else:
                figures[name] = number
        return figures

    def list_requests_until(self, finished_at: float) -> tuple[int, int]:
        """(list requests that arrived by wall time ``finished_at``, log requests)."""
        stats = http_json(self.simulator_url + "/_sim/stats")
        boundary = finished_at - self.offset
        later = sum(1 for entry in stats["request_log"] if entry["at"] > boundary)
        return int(stats["list_requests"]) - later, int(stats["log_requests"])


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far: a sweep holds old and new jobs at once.

    ``VmHWM``, or ``VmRSS`` where the kernel has not caught its high-water mark up yet.
    """
    kib = [
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith(("VmHWM:", "VmRSS:"))
    ]
    if not kib:
        raise RuntimeError(f"no VmHWM for {pid}")
    return max(kib) / 1024


def wait(what: str, predicate: Any, timeout: float, interval: float, alive: Process) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive.proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited {alive.proc.returncode}\n{alive.output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_exporter(
    tmp: Path,
    sim_url: str,
    jobs: int,
    steady_sweeps: int,
    scrape_counts: tuple[int, int],
    started: list[Process],
) -> ExporterFigures:
    figures = ExporterFigures(flags=exporter_flags(jobs))
    began = time.monotonic()
    exporter = Process(
        [
            sys.executable,
            "-m",
            "ft_exporter",
            "--web.listen-address=127.0.0.1:0",
            f"--dashscope.base-url={sim_url}",
            *figures.flags,
        ],
        env={"DASHSCOPE_API_KEY": KEY},
        log_path=tmp / f"exporter-{jobs}.log",
    )
    started.append(exporter)
    pid = exporter.proc.pid
    progress(f"{jobs:,} jobs: exporter pid {pid} {' '.join(figures.flags)}")

    def list_requests() -> int:
        return int(http_json(sim_url + "/_sim/stats")["list_requests"])

    # CPU from the first list request on: the interpreter's start-up is no per-job cost.
    wait("the first list request", lambda: list_requests() >= 1, 60, 0.005, exporter)
    cpu_start = scrape.cpu_seconds(pid)
    port = listening_port(exporter, what="exporter")
    url = f"http://127.0.0.1:{port}"
    estimate = full_sweep_estimate(jobs)
    pages = math.ceil(jobs / PAGE_SIZE)
    checked = [time.monotonic()]

    def near_the_end() -> bool:
        # Polling /-/ready costs the exporter CPU: ask the simulator until the last page.
        if list_requests() >= pages:
            return True
        if time.monotonic() - checked[0] >= 1.0:
            checked[0] = time.monotonic()
            return http_get(url + "/-/ready")[0] == 200
        return False

    wait("the first sweep's last page", near_the_end, estimate * 3 + 60, 0.05, exporter)
    wait("/-/ready", lambda: http_get(url + "/-/ready")[0] == 200, 120, 0.005, exporter)
    figures.ready_seconds = time.monotonic() - began
    cpu_end = scrape.cpu_seconds(pid)
    figures.cpu_us_per_job = (cpu_end - cpu_start) / jobs * 1e6

    sweeps = Sweeps(sim_url, url)
    first = sweeps.metrics()
    if first.get("dashscope_finetune_up") != 1:
        raise RuntimeError(f"the first sweep failed:\n{exporter.output()[-3000:]}")
    figures.rss_mib = first["process_resident_memory_bytes"] / 2**20
    figures.full_sweep_seconds = first["dashscope_finetune_sweep_duration_seconds"]
    figures.jobs_seen = int(first["jobs"])
    figures.own_list_requests = int(first["requests_list"])
    finished = first["dashscope_finetune_last_success_timestamp_seconds"]
    figures.full_requests, _ = sweeps.list_requests_until(finished)
    progress(f"{jobs:,} jobs: exporter ready in {figures.ready_seconds:.2f} s")

    # Steady state: the list requests of the next sweeps, boundary to boundary.
    done = first["dashscope_finetune_sweeps_total"]
    failures = first["dashscope_finetune_sweep_failures_total"]
    latest = [first]

    def swept() -> bool:
        latest[0] = sweeps.metrics()
        return latest[0]["dashscope_finetune_sweeps_total"] >= done + steady_sweeps

    wait("the steady sweeps", swept, (estimate + 5) * (steady_sweeps + 1) * 3 + 60, 0.5, exporter)
    last = latest[0]
    if last["dashscope_finetune_sweep_failures_total"] != failures:
        raise RuntimeError(f"a steady sweep failed:\n{exporter.output()[-3000:]}")
    figures.steady_sweeps = int(last["dashscope_finetune_sweeps_total"] - done)
    requests, figures.log_requests = sweeps.list_requests_until(
        last["dashscope_finetune_last_success_timestamp_seconds"]
    )
    figures.steady_requests = (requests - figures.full_requests) / figures.steady_sweeps
    figures.steady_sweep_seconds = last["dashscope_finetune_sweep_duration_seconds"]
    figures.peak_rss_mib = peak_rss_mib(pid)

    figures.body_bytes, scrapes = scrape_both(
        url + "/metrics", pid, exporter.stop, (scrape_counts[0], scrape_counts[1])
    )
    figures.scrapes.extend(scrapes)
    return figures


def run_sdk(sdk_python: Path, sim_url: str, jobs: int) -> SdkFigures:
    before = int(http_json(sim_url + "/_sim/stats")["list_requests"])
    walked = subprocess.run(
        [str(sdk_python), str(SDK_WALK), sim_url, KEY],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "DASHSCOPE_API_KEY": KEY},
    )
    if walked.returncode != 0:
        raise RuntimeError(f"the SDK walk failed:\n{walked.stdout}{walked.stderr}")
    report = json.loads(walked.stdout.strip().splitlines()[-1])
    after = int(http_json(sim_url + "/_sim/stats")["list_requests"])
    return SdkFigures(
        version=report["version"],
        requests=after - before,
        jobs_seen=report["jobs"],
        seconds=report["seconds"],
        cpu_us_per_job=report["cpu_seconds"] / jobs * 1e6,
        rss_mib=report["rss_mib"],
        peak_rss_mib=report["peak_rss_mib"],
    )


def run_size(
    tmp: Path,
    jobs: int,
    sdk_python: Path,
    latency: float,
    steady_sweeps: int,
    scrape_counts: tuple[int, int],
    started: list[Process],
) -> SizeResult:
    sim = Process(
        [
            sys.executable,
            "-m",
            "ft_exporter.simulator",
            "--port=0",
            f"--key={KEY}",
            "--scenario=bulk",
            f"--jobs={jobs}",
            f"--active={ACTIVE}",
            f"--latency={latency}",
        ],
        log_path=tmp / f"simulator-{jobs}.log",
    )
    started.append(sim)
    port = listening_port(sim, what="simulator", timeout=120)
    if not port:
        raise RuntimeError(f"simulator exited:\n{sim.output()}")
    sim_url = f"http://127.0.0.1:{port}"
    exporter = run_exporter(tmp, sim_url, jobs, steady_sweeps, scrape_counts, started)
    progress(f"{jobs:,} jobs: the SDK walks the list")
    sdk = run_sdk(sdk_python, sim_url, jobs)
    sim.stop()
    static = exporter.scrapes[2:]
    exporter.scrapes = exporter.scrapes[:2]
    return SizeResult(jobs, exporter, sdk, static)


# --- the table --------------------------------------------------------------------------


def _n(number: float, digits: int = 0) -> str:
    return f"{number:,.{digits}f}"


def rows(result: SizeResult) -> list[list[str]]:
    e, s = result.exporter, result.sdk
    jobs = _n(result.jobs)
    c1, c50 = e.scrapes
    s1, s50 = result.static
    blank = [""] * 3
    return [
        [
            jobs,
            "exporter",
            " ".join(e.flags),
            str(e.full_requests),
            _n(e.steady_requests, 1),
            _n(e.full_sweep_seconds, 2),
            _n(e.steady_sweep_seconds, 2),
            _n(e.cpu_us_per_job),
            _n(e.rss_mib, 1),
            _n(e.peak_rss_mib, 1),
            _n(e.ready_seconds, 2),
            _n(c1.cpu_ms, 2),
            _n(c1.p50_ms, 1),
            _n(c1.p99_ms, 1),
            _n(c50.p99_ms, 1),
        ],
        [
            jobs,
            f"dashscope SDK {s.version}",
            f"page_size={PAGE_SIZE}",
            str(s.requests),
            str(s.requests),
            _n(s.seconds, 2),
            _n(s.seconds, 2),
            _n(s.cpu_us_per_job),
            _n(s.rss_mib, 1),
            _n(s.peak_rss_mib, 1),
            "",
            *blank,
            "",
        ],
        [
            jobs,
            "static server",
            f"{_n(e.body_bytes)} B",
            *[""] * 8,
            _n(s1.cpu_ms, 2),
            _n(s1.p50_ms, 1),
            _n(s1.p99_ms, 1),
            _n(s50.p99_ms, 1),
        ],
    ]


def table(results: list[SizeResult]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c in ("client", "flags") else "---:" for c in COLUMNS) + "|",
    ]
    for result in results:
        lines += ["| " + " | ".join(row) + " |" for row in rows(result)]
    return "\n".join(lines)


def notes(results: list[SizeResult], latency: float) -> str:
    out = [
        f"Simulator latency {latency * 1000:.0f} ms a request, {ACTIVE} newest jobs waiting; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end.",
    ]
    for r in results:
        e = r.exporter
        c1, c50 = e.scrapes
        target = math.ceil(r.jobs / PAGE_SIZE)
        out.append(
            f"{r.jobs:,} jobs: exporter saw {e.jobs_seen:,} jobs, counted {e.own_list_requests} "
            f"list requests itself (full sweep target {target}), "
            f"{e.log_requests} log requests; steady over {e.steady_sweeps} sweeps; "
            f"SDK read {r.sdk.jobs_seen:,} jobs; scrapes {c1.count} at c1 and {c50.count} "
            f"at c{c50.concurrency}, errors {c1.errors + c50.errors} exporter, "
            f"{sum(s.errors for s in r.static)} static."
        )
    return "\n".join(out)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def teardown() -> Iterator[list[Process]]:
    """Every process started, stopped on the way out: an error, Ctrl-C or SIGTERM alike."""
    started: list[Process] = []

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()
        signal.signal(signal.SIGTERM, previous)


def sizes(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not numbers or any(not 1 <= n <= 200_000 for n in numbers):
        raise argparse.ArgumentTypeError("sizes are 1 to 200,000 jobs")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=sizes, default=[1000, 10_000, 50_000], help="jobs")
    parser.add_argument("--quick", action="store_true", help="1 steady sweep, few scrapes (CI)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API answer")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    steady_sweeps = 1 if args.quick else 2
    scrape_counts = (20, 2 * CONCURRENT_SCRAPERS) if args.quick else (200, 10 * CONCURRENT_SCRAPERS)
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory() as tmp, teardown() as started:
        progress("making sure the SDK's venv has dashscope")
        sdk_python = ensure_sdk()
        for jobs in args.sizes:
            results.append(
                run_size(
                    Path(tmp),
                    jobs,
                    sdk_python,
                    args.latency,
                    steady_sweeps,
                    scrape_counts,
                    started,
                )
            )
    print(table(results))
    print()
    print(notes(results, args.latency))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
