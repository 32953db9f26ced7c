"""Walk every fine-tune job with the official ``dashscope`` SDK, as a user's script would.

Run by benchmarks/sweep.py in the SDK's own venv (``.venv-bench/``, never the exporter's):

    .venv-bench/bin/python benchmarks/sdk_walk.py http://127.0.0.1:PORT sk-KEY

``dashscope.FineTunes.list(page_no=..., page_size=100)`` page after page until ``total``
jobs are read (an empty page ends it early), keeping the jobs in a list as a script would.
Prints one JSON line: requests, jobs read, ``total``, wall seconds, CPU seconds of the walk
(the SDK's import left out), RSS after it and at its peak, and the SDK's version. Standard
library only besides the SDK, imported by name so the exporter's type checks never need it.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

PAGE_SIZE = 100


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def walk(base_url: str, key: str) -> dict[str, Any]:
    dashscope: Any = importlib.import_module("dashscope")
    dashscope.api_key = key
    dashscope.base_http_api_url = base_url.rstrip("/") + "/api/v1"
    jobs: list[Any] = []
    requests = 0
    total: int | None = None
    wall, cpu = time.perf_counter(), time.process_time()
    while total is None or len(jobs) < total:
        requests += 1
        answer = dashscope.FineTunes.list(page_no=requests, page_size=PAGE_SIZE)
        if answer.status_code != 200:
            raise SystemExit(f"page {requests}: HTTP {answer.status_code} {answer.message}")
        total = int(answer.output.total)
        if not answer.output.jobs:
            break
        jobs.extend(answer.output.jobs)
    return {
        "requests": requests,
        "jobs": len(jobs),
        "total": total,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "rss_mib": rss_mib(),
        # The kernel's high-water mark may lag the current RSS by a little.
        "peak_rss_mib": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mib()),
        "version": str(dashscope.__version__),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: sdk_walk.py BASE_URL API_KEY", file=sys.stderr)
        return 2
    print(json.dumps(walk(argv[0], argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
