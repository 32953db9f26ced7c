"""Many accounts in one exporter (issue 11): start-up, sweep rate, CPU, memory, scrape time.

Rerun it any time (it starts its own simulators and exporter on loopback):

    .venv/bin/python benchmarks/accounts.py --accounts 100 --simulators 10

Each simulator process (``--latency``: every API answer waits 50 ms) serves
``accounts / simulators`` accounts under one key, each account its own name: an
exporter account is its own unit (poller, client, connection pool, rate limit) whatever
it talks to, so sharing spares the 2-core machine 100 Python servers competing with the
exporter, while 10 processes keep each one's load (20 requests/s at most) far from its
limits. The accounts keep the default
flags (2 requests/s, 60 s poll interval) on the ``static`` scenario (20 jobs a listing).

Two exporter runs: the first at the default 60 s interval measures the time until
``/-/ready`` is 200 and until every account's ``dashscope_finetune_up`` is 1, the CPU
share while idle between sweeps, RSS and ``/metrics`` scrape time; the second at
``--poll-interval`` measures sweep rounds per account per minute and the CPU averaged
over that window. Figures are printed, never asserted on: a test only checks the counts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from conftest import Exporter, Simulator, samples  # noqa: E402
from load import scrape  # noqa: E402
from scrape import cpu_seconds  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def write_config(path: Path, urls: list[str], accounts: int, poll_interval: str | None) -> Path:
    """``accounts`` accounts spread round-robin over the simulators, key KEY_<simulator>."""
    lines = ["defaults:", f"  poll_interval: {poll_interval}"] if poll_interval else []
    lines.append("accounts:")
    for n in range(accounts):
        sim = n % len(urls)
        lines += [
            f"  - name: acct-{n:03d}",
            f"    base_url: {urls[sim]}",
            f"    api_key_env: KEY_{sim}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def metric_by_account(text: str, name: str) -> dict[str, float]:
    return {
        dict(labels)["account"]: number
        for (metric, labels), number in samples(text).items()
        if metric == name
    }


@dataclass(frozen=True)
class Scrapes:
    count: int
    errors: int
    p50: float
    p99: float

    def __str__(self) -> str:
        return (
            f"{self.count} scrapes, {self.errors} errors, "
            f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms"
        )


def time_scrapes(url: str, count: int, concurrency: int) -> Scrapes:
    """``count`` scrapes of ``url``, ``concurrency`` at a time."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda _: scrape(url), range(count)))
    latencies = sorted(duration for duration, _ in results)
    quantiles = statistics.quantiles(latencies, n=100)
    errors = sum(1 for _, ok in results if not ok)
    return Scrapes(len(results), errors, quantiles[49], quantiles[98])


@dataclass
class Result:
    accounts: int
    simulators: int
    ready_seconds: float = 0.0
    all_up_seconds: float = 0.0
    accounts_up: int = 0
    idle_seconds: float = 0.0
    idle_sweeps: int = 0  # sweeps that ended inside the idle window (0: truly idle)
    idle_cpu: float = 0.0  # share of one core
    rss_mib: float = 0.0
    rss_after_scrapes_mib: float = 0.0
    sequential: Scrapes | None = None
    scrape_cpu: float = 0.0  # exporter CPU seconds per sequential scrape
    concurrent: Scrapes | None = None
    window_seconds: float = 0.0
    window_sweeps: int = 0
    window_poll_interval: float = 0.0
    window_cpu: float = 0.0
    window_rss_mib: float = 0.0
    series: int = 0

    @property
    def rounds_per_minute(self) -> float:
        if not self.window_seconds:
            return 0.0
        return self.window_sweeps / self.accounts / (self.window_seconds / 60)

    def __str__(self) -> str:
        return "\n".join(
            [
                f"{self.accounts} accounts on {self.simulators} simulator processes",
                f"ready (/-/ready 200) after {self.ready_seconds:.2f} s",
                f"every account up after {self.all_up_seconds:.2f} s "
                f"({self.accounts_up}/{self.accounts} up)",
                f"idle CPU {self.idle_cpu * 100:.2f} % of a core over {self.idle_seconds:.0f} s "
                f"({self.idle_sweeps} sweeps in it)",
                f"RSS {self.rss_mib:.1f} MiB after start, "
                f"{self.rss_after_scrapes_mib:.1f} MiB after the scrapes",
                f"/metrics ({self.series} series) sequential: {self.sequential}, "
                f"exporter CPU {self.scrape_cpu * 1000:.1f} ms a scrape",
                f"/metrics 10 concurrent scrapers: {self.concurrent}",
                f"sweep rounds at --poll.interval {self.window_poll_interval:g}s: "
                f"{self.rounds_per_minute:.2f} per account per minute "
                f"({self.window_sweeps} sweeps in {self.window_seconds:.0f} s), "
                f"CPU {self.window_cpu * 100:.2f} % of a core, RSS {self.window_rss_mib:.1f} MiB",
            ]
        )


def total(text: str, name: str) -> float:
    return sum(metric_by_account(text, name).values())


def measure(exp: Exporter, seconds: float) -> tuple[int, float, float]:
    """Over ``seconds`` of waiting: (sweeps ended by all accounts, CPU share, wall seconds)."""
    pid = exp.proc.pid
    sweeps_before = total(exp.metrics(), "dashscope_finetune_sweeps_total")
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu_after, wall_after = cpu_seconds(pid), time.monotonic()
    sweeps_after = total(exp.metrics(), "dashscope_finetune_sweeps_total")
    wall = wall_after - wall_before
    return int(sweeps_after - sweeps_before), (cpu_after - cpu_before) / wall, wall


def run(
    tmp: Path,
    accounts: int = 100,
    simulators: int = 10,
    latency: float = 0.05,
    idle_seconds: float = 20.0,
    scrapes: int = 200,
    concurrency: int = 10,
    poll_interval: float = 10.0,
    window_seconds: float = 60.0,
    up_timeout: float = 120.0,
) -> Result:
    result = Result(accounts, simulators)
    sims = [
        Simulator(
            tmp,
            key=f"sk-bench-{n}-0123456789abcdef",
            scenario="static",
            extra=["--latency", str(latency)],
        )
        for n in range(simulators)
    ]
    env = {f"KEY_{n}": sim.key for n, sim in enumerate(sims)}
    urls = [sim.url for sim in sims]
    try:
        config = write_config(tmp / "accounts.yml", urls, accounts, None)
        started = time.monotonic()
        exp = Exporter(tmp, [f"--config.file={config}"], env, wait_ready=False)
        try:
            _until_up(exp, result, started, up_timeout)
            pid = exp.proc.pid
            result.rss_mib = rss_mib(pid)
            # Idle: every account swept once and waits out its 60 s interval.
            result.idle_sweeps, result.idle_cpu, result.idle_seconds = measure(exp, idle_seconds)
            result.series = sum(
                1 for line in exp.metrics().splitlines() if line and not line.startswith("#")
            )
            url = exp.url + "/metrics"
            cpu_before = cpu_seconds(pid)
            result.sequential = time_scrapes(url, scrapes, 1)
            # The exporter's own CPU per scrape: what a scrape costs on a quiet core.
            result.scrape_cpu = (cpu_seconds(pid) - cpu_before) / scrapes
            result.concurrent = time_scrapes(url, scrapes, concurrency)
            result.rss_after_scrapes_mib = rss_mib(pid)
        finally:
            exp.stop()
        _sweep_window(tmp, urls, env, result, poll_interval, window_seconds, up_timeout)
    finally:
        for sim in sims:
            sim.stop()
    return result


def _until_up(exp: Exporter, result: Result, started: float, timeout: float) -> None:
    """Poll /-/ready, then /metrics, until every account's dashscope_finetune_up is 1."""
    deadline = started + timeout
    while exp.get("/-/ready")[0] != 200:
        if time.monotonic() > deadline or exp.proc.poll() is not None:
            raise RuntimeError(f"exporter not ready:\n{exp.output()[-2000:]}")
        time.sleep(0.02)
    result.ready_seconds = time.monotonic() - started
    while True:
        up = metric_by_account(exp.metrics(), "dashscope_finetune_up")
        result.accounts_up = sum(1 for v in up.values() if v == 1)
        if result.accounts_up == result.accounts:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{result.accounts_up}/{result.accounts} up after {timeout} s")
        time.sleep(0.05)
    result.all_up_seconds = time.monotonic() - started


def _sweep_window(
    tmp: Path,
    urls: list[str],
    env: dict[str, str],
    result: Result,
    poll_interval: float,
    window_seconds: float,
    up_timeout: float,
) -> None:
    """A second exporter at a shorter interval: sweeps and CPU over a measured window."""
    config = write_config(tmp / "window.yml", urls, result.accounts, f"{poll_interval:g}s")
    started = time.monotonic()
    exp = Exporter(tmp, [f"--config.file={config}"], env, wait_ready=False)
    try:
        _until_up(exp, Result(result.accounts, result.simulators), started, up_timeout)
        result.window_sweeps, result.window_cpu, result.window_seconds = measure(
            exp, window_seconds
        )
        result.window_poll_interval = poll_interval
        result.window_rss_mib = rss_mib(exp.proc.pid)
    finally:
        exp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--simulators", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API answer")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--window-seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp),
            accounts=args.accounts,
            simulators=args.simulators,
            latency=args.latency,
            idle_seconds=args.idle_seconds,
            scrapes=args.scrapes,
            concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            window_seconds=args.window_seconds,
        )
    print(result)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
