"""Soak: hundreds of sweeps through every fault, in process; memory and threads before and after.

Rerun it any time (an in-process simulator on loopback, nothing else):

    .venv/bin/python benchmarks/soak.py --sweeps 1000

Figures are printed, never asserted on here: tests/test_load.py checks the bounds.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import threading
import tracemalloc
from dataclasses import dataclass
from datetime import timedelta, timezone

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ft_exporter import simulator
from ft_exporter.client import FineTuneClient
from ft_exporter.collector import CollectorSettings, FineTuneCollector, single
from ft_exporter.poller import Poller
from ft_exporter.retry import RetryPolicy
from ft_exporter.secret import Secret
from ft_exporter.selfmetrics import SelfMetrics

FAULTS = ["throttle", "truncated", "html502", "total_high", "none"]


@dataclass(frozen=True)
class SoakResult:
    sweeps: int
    memory_before: int  # bytes traced after the warm-up
    memory_after: int
    threads_before: int
    threads_after: int
    api_requests: float
    #: Requests the simulator itself answered, counted on its side.
    simulator_requests: int
    #: dashscope_finetune_api_errors_total by (code, http_status), every series served.
    errors: dict[tuple[str, str], float]

    def __str__(self) -> str:
        return (
            f"{self.sweeps} sweeps: traced memory {self.memory_before} -> "
            f"{self.memory_after} bytes ({self.memory_after - self.memory_before:+d}), "
            f"threads {self.threads_before} -> {self.threads_after}, "
            f"{self.api_requests:.0f} API requests"
        )


def lasting_threads() -> int:
    """Threads alive once the request timers (one per request, cancelled at its end) are gone.

    A cancelled timer's thread takes a moment to end: counted raw, it makes the figure
    depend on when it is read.
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.join(1.0)
    return threading.active_count()


def run_soak(sweeps: int = 300) -> SoakResult:
    """Sweeps cycling through faults, each followed by a scrape; memory traced around
    ``sweeps`` of them after 150 of warm-up (caches, pools, interned strings)."""
    sim = simulator.serve(key="sk-soak", scenario="static")
    try:
        registry = CollectorRegistry()
        metrics = SelfMetrics(registry).account("default")
        client = FineTuneClient(
            sim.url,
            Secret("sk-soak"),
            page_size=7,
            tz=timezone(timedelta(hours=8)),  # DashScope's zone
            observer=metrics,
            retry=RetryPolicy(max_attempts=2, base_delay=0.001),
        )
        poller = Poller(lambda: client.sweep(), 60)
        registry.register(FineTuneCollector(single(poller.state, CollectorSettings())))

        def round_of(n: int) -> None:
            for i in range(n):
                mode = FAULTS[i % len(FAULTS)]
                with sim.account._lock:
                    sim.account.fault = simulator.Fault(mode, count=1 if mode != "none" else None)
                poller.run_once()
                generate_latest(registry)

        round_of(50)
        gc.collect()
        threads_before = lasting_threads()
        tracemalloc.start()
        try:
            round_of(100)
            gc.collect()
            before, _ = tracemalloc.get_traced_memory()
            round_of(sweeps)
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        requests = 0.0
        errors: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                if sample.labels.get("endpoint") != "list":
                    continue  # the soak's API has no running jobs: no log is read
                if sample.name == "dashscope_finetune_api_requests_total":
                    requests = sample.value
                elif sample.name == "dashscope_finetune_api_errors_total":
                    errors[(sample.labels["code"], sample.labels["http_status"])] = sample.value
        return SoakResult(
            sweeps,
            before,
            after,
            threads_before,
            lasting_threads(),
            requests,
            sim.account.list_requests,
            errors,
        )
    finally:
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweeps", type=int, default=300)
    args = parser.parse_args()
    logging.getLogger("ft_exporter").addHandler(logging.NullHandler())
    logging.getLogger("ft_exporter").propagate = False
    print(f"SOAK {run_soak(args.sweeps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
