"""A flood of idle and trickling connections against a running exporter, measured from outside.

Starts its own simulator and exporter on loopback (or attacks ``--url`` of one you
started, with ``--pid`` for its resource figures), opens ``--silent`` connections that
send nothing and ``--tricklers`` that send one byte of a request head a second, and
scrapes once a second meanwhile. Prints the slowest scrape, the exporter's peak RSS and
threads, and the CPU it used while the flood idled. Figures are printed, never asserted:

    .venv/bin/python benchmarks/connections.py --silent 4700 --tricklers 300
    .venv/bin/python benchmarks/connections.py --nofile 1024   # the exporter's soft limit
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def proc_figures(pid: int) -> tuple[int, int, float]:
    """(RSS bytes, threads, CPU seconds) of a process, from /proc."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, threads, (int(fields[11]) + int(fields[12])) / 100.0


def scrape(url: str, timeout: float) -> float:
    """Seconds one scrape took; ``timeout`` when it failed."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout) as response:
            response.read()
    except (OSError, urllib.error.URLError):
        return timeout
    return time.monotonic() - started


def attack(url: str, pid: int, silent: int, tricklers: int, seconds: float) -> str:
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, silent + tricklers + 1000), hard))
    base_rss, _, _ = proc_figures(pid)
    socks: list[socket.socket] = []
    for _ in range(silent + tricklers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, int(port)))
        socks.append(sock)
    head = f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    slowest, peak_rss, peak_threads, failed = 0.0, 0, 0, 0
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        for sock in socks[silent:]:
            with contextlib.suppress(OSError):
                sock.send(head[sent % len(head) : sent % len(head) + 1])
        sent += 1
        took = scrape(url, 5.0)
        failed += took >= 5.0
        slowest = max(slowest, took)
        rss, threads, _ = proc_figures(pid)
        peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
        time.sleep(1.0)
    _, _, cpu_before = proc_figures(pid)
    time.sleep(5.0)
    _, _, cpu_after = proc_figures(pid)
    for sock in socks:
        sock.close()
    time.sleep(1.0)
    after = scrape(url, 5.0)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return (
        f"{silent} silent + {tricklers} trickling connections for {seconds:.0f}s: "
        f"slowest scrape {slowest:.3f}s ({failed} failed), RSS {base_rss / 2**20:.0f} -> "
        f"{peak_rss / 2**20:.0f} MiB, {peak_threads} threads, "
        f"CPU while idle {(cpu_after - cpu_before) / 5:.0%} of a core, "
        f"scrape after they closed {after:.3f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silent", type=int, default=4700)
    parser.add_argument("--tricklers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--url", help="an exporter already running (needs --pid)")
    parser.add_argument("--pid", type=int)
    parser.add_argument("--nofile", type=int, help="soft open-file limit of the exporter")
    parser.add_argument("exporter_args", nargs="*", help="extra exporter flags (after --)")
    args = parser.parse_args()
    if args.url:
        print(attack(args.url, args.pid, args.silent, args.tricklers, args.seconds))
        return
    from conftest import Exporter, Simulator

    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulator(Path(tmp))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        exp = Exporter(
            Path(tmp),
            [f"--dashscope.base-url={sim.url}", *args.exporter_args],
            {"DASHSCOPE_API_KEY": sim.key},
            nofile=(args.nofile, hard) if args.nofile else None,
        )
        try:
            print(attack(exp.url, exp.proc.pid, args.silent, args.tricklers, args.seconds))
        finally:
            exp.stop()
            sim.stop()


if __name__ == "__main__":
    main()
