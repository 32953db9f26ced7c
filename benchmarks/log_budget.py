"""API requests per sweep with training logs on: N running jobs, counted by the simulator.

Rerun it any time (it starts its own simulator and exporter on loopback):

    .venv/bin/python benchmarks/log_budget.py --running 20 --ended 80 --sweeps 10

Each running job's log grows by a few lines before every sweep, as a training loop's does.
Prints the requests of the first sweep and of the steady state after it, by endpoint, as
the simulator counted them; figures are printed, never asserted on (tests/test_training.py
checks the budget).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def jobs(running: int, ended: int, tz: Any) -> list[dict[str, Any]]:
    now = time.time()

    def stamp(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")

    out = []
    for n in range(running + ended):
        job: dict[str, Any] = {
            "job_id": f"ft-bench-{n:04d}",
            "status": "RUNNING" if n < running else "SUCCEEDED",
            "model": "qwen3-8b",
            "training_type": "sft",
            "create_time": stamp(now - 3600 - n),
            "hyper_parameters": {"n_epochs": 3},
        }
        if n >= running:
            job["end_time"] = stamp(now - 60 - n)
        out.append(job)
    return out


def main() -> int:
    from conftest import UTC8, Exporter, Simulator, http_json, value, wait_for

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--running", type=int, default=20)
    parser.add_argument("--ended", type=int, default=80)
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--initial-lines", type=int, default=2500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulator(Path(tmp), scenario="empty")
        listing = jobs(args.running, args.ended, UTC8)
        http_json(sim.url + "/_sim/jobs", "POST", {"jobs": listing})
        running = [j["job_id"] for j in listing if j["status"] == "RUNNING"]
        step = 0

        def grow(lines: int) -> None:
            nonlocal step
            for job_id in running:
                batch = [
                    f"{{'loss': {2.0 - (step + i) / 10_000:.4f}, 'epoch': {(step + i) / 1000}}}"
                    for i in range(lines)
                ]
                http_json(sim.url + "/_sim/logs", "POST", {"job_id": job_id, "lines": batch})
            step += lines

        grow(args.initial_lines)  # the exporter starts mid-run: long logs at first sight
        exp = Exporter(
            Path(tmp),
            [f"--dashscope.base-url={sim.url}", "--poll.interval=3s"],
            env={"DASHSCOPE_API_KEY": sim.key},
            wait_ready=False,  # the first sweep reads 2 x N logs at 2 requests a second
        )
        try:

            def sweeps() -> float:
                text = exp.metrics()
                return value(text, "dashscope_finetune_sweeps_total", account="default") or 0

            def after_sweep() -> dict[str, Any]:
                count = sweeps()
                wait_for(lambda: sweeps() > count, timeout=120, what="a sweep")
                stats: dict[str, Any] = http_json(sim.url + "/_sim/stats")
                return stats

            first = after_sweep()
            print(
                f"{args.running} running + {args.ended} ended jobs, logs of "
                f"{args.initial_lines} lines at start"
            )
            print(
                f"first sweep: {first['list_requests']} list + {first['log_requests']} log requests"
            )
            before = first
            per_sweep = []
            for _ in range(args.sweeps):
                grow(5)
                now = after_sweep()
                per_sweep.append(
                    (
                        now["list_requests"] - before["list_requests"],
                        now["log_requests"] - before["log_requests"],
                    )
                )
                before = now
            lists = sorted({n for n, _ in per_sweep})
            logs = sorted({n for _, n in per_sweep})
            print(
                f"steady state over {len(per_sweep)} sweeps: list requests per sweep {lists}, "
                f"log requests per sweep {logs}"
            )
        finally:
            exp.stop()
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
