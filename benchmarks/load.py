"""Scrape load on a running exporter: N concurrent scrapers, latency percentiles, errors.

Rerun it any time (it starts its own simulator and exporter on loopback):

    .venv/bin/python benchmarks/load.py --scrapers 200 --per-scraper 10

Figures are printed, never asserted on: a test only checks the counts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@dataclass(frozen=True)
class LoadResult:
    scrapes: int
    errors: int
    p50: float
    p99: float
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.scrapes} scrapes, {self.errors} errors, p50 {self.p50 * 1000:.1f} ms, "
            f"p99 {self.p99 * 1000:.1f} ms, {self.scrapes / self.seconds:.0f} scrapes/s"
        )


def scrape(url: str) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            ok = response.status == 200 and b"dashscope_finetune_up" in response.read()
    except OSError:
        ok = False
    return time.perf_counter() - started, ok


def run_load(url: str, scrapers: int = 200, per_scraper: int = 5) -> LoadResult:
    """``scrapers`` threads scrape ``url`` ``per_scraper`` times each, all at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=scrapers) as pool:
        results = list(pool.map(lambda _: scrape(url), range(scrapers * per_scraper)))
    seconds = time.perf_counter() - started
    latencies = sorted(duration for duration, _ in results)
    quantiles = statistics.quantiles(latencies, n=100)
    return LoadResult(
        scrapes=len(results),
        errors=sum(1 for _, ok in results if not ok),
        p50=quantiles[49],
        p99=quantiles[98],
        seconds=seconds,
    )


def main() -> int:
    from conftest import Exporter, Simulator  # the test harness starts real processes

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scrapers", type=int, default=200)
    parser.add_argument("--per-scraper", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulator(Path(tmp), scenario="demo")
        exp = Exporter(
            Path(tmp),
            [f"--dashscope.base-url={sim.url}", "--poll.interval=1s"],
            env={"DASHSCOPE_API_KEY": sim.key},
        )
        try:
            print(run_load(exp.url + "/metrics", args.scrapers, args.per_scraper))
            rss = subprocess.run(
                ["ps", "-o", "rss=", "-p", str(exp.proc.pid)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            print(f"exporter RSS after the load: {rss} KiB")
        finally:
            exp.stop()
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
