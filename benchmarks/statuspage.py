"""How long the status page ``/`` takes to render, and how large it is, with 100 jobs.

The targets (issue 13): under 20 ms and under 50 KB for an account of 100 jobs. The
account here is 60 active jobs (each with training figures from its log) and 40 ended,
names and models of ordinary length, and the 10 latest failed requests listed; a second
account of 100 jobs whose every text field is 256 characters of markup (the longest a
value may be, every character one that escaping lengthens) shows the worst case.
Rerun it any time:

    .venv/bin/python benchmarks/statuspage.py [--rounds 200]

Figures are printed, never asserted on here: tests/test_statuspage.py checks that the
page of 100 ordinary jobs stays under 50 KB.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from dataclasses import dataclass, field
from types import MappingProxyType

from ft_exporter.collector import CollectorSettings
from ft_exporter.failures import FailedRequest, Failures
from ft_exporter.http import statuspage
from ft_exporter.model import MAX_LABEL_CHARS, ExporterState, Job, Snapshot, Training

NOW = time.time()
MODELS = ("qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct", "qwen3-32b")


@dataclass
class Unit:
    jobs: tuple[Job, ...]
    training: dict[str, Training]
    failed: Failures
    settings: CollectorSettings = field(default_factory=CollectorSettings)
    poll_interval: float = 60.0

    def state(self) -> ExporterState:
        snapshot = Snapshot(self.jobs, NOW - 20, 0, MappingProxyType(self.training))
        return ExporterState(snapshot, True, NOW - 20, 0.8)

    def failures(self) -> Failures:
        return self.failed


def account(count: int = 100, active: int = 60, text: str = "") -> Unit:
    """``count`` jobs, ``active`` of them running with training figures; every text
    field ``text`` when given (else ordinary names)."""
    jobs = []
    training = {}
    for i in range(count):
        job_id = text or f"ft-202611{i % 28 + 1:02d}{i:04d}-{i * 7919 % 65536:04x}"
        running = i < active
        jobs.append(
            Job(
                job_id=f"{job_id}{i}" if text else job_id,
                job_name=text or f"support-bot-v{i}-{MODELS[i % 4]}-lora",
                status=text or ("RUNNING" if running else ("SUCCEEDED", "FAILED")[i % 5 == 0]),
                model=text or MODELS[i % 4],
                base_model=MODELS[i % 4],
                training_type="sft",
                finetuned_output="",
                created=NOW - 3600 * (i + 1),
                ended=None if running else NOW - 600 * i,
                usage_tokens=123_456 * i,
                n_epochs=3.0,
            )
        )
        if running:
            training[jobs[-1].job_id] = Training(
                train_loss=0.4 + i / 1000, eval_loss=0.5 + i / 1000, epoch=(i % 30) / 10
            )
    message = text or "Requests rate limit exceeded, please try again later."
    failed = Failures(
        tuple(
            FailedRequest(NOW - 60 * i, "list", text or "Throttling", "429", message, f"{i:032x}")
            for i in range(10)
        ),
        ((text or "Throttling", "429", 57), (text or "InternalError", "500", 3)),
    )
    return Unit(tuple(jobs), training, failed)


def measure(unit: Unit, rounds: int) -> tuple[list[float], bytes]:
    times = []
    page = b""
    for _ in range(rounds):
        started = time.perf_counter()
        page = statuspage.render([unit], NOW, version="0.1.0")
        times.append((time.perf_counter() - started) * 1000)
    return times, page


def report(name: str, unit: Unit, rounds: int) -> None:
    measure(unit, 5)  # warm up
    times, page = measure(unit, rounds)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"{name}: render p50 {statistics.median(times):.2f} ms, p99 {p99:.2f} ms, "
        f"max {times[-1]:.2f} ms; {len(page):,} bytes ({len(page) / 1024:.1f} KiB), "
        f"gzip {len(gzip.compress(page, 5)):,} bytes"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    report("100 jobs (60 active, 40 ended)", account(), args.rounds)
    report("100 jobs, all active", account(active=100), args.rounds)
    worst = ("<&>" * MAX_LABEL_CHARS)[:MAX_LABEL_CHARS]
    report("100 jobs, every text 256 chars of markup", account(text=worst), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
