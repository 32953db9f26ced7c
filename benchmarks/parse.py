"""Parse cost of a sweep (issue 12, item 5): CPU and memory per job, without HTTP.

Rerun it any time; it needs no server:

    .venv/bin/python benchmarks/parse.py                    # 10,000 and 50,000 jobs
    .venv/bin/python benchmarks/parse.py --jobs 1000 --repeat 1

The jobs are what the simulator lists (``SimJob.to_api``), encoded as the real client
receives them: JSON bytes, pages of 100. ``account`` is a lived-in account (a few models
and training types, nearly every job ended, ``job_name`` equal to ``job_id``); ``sprawl``
gives every job its own model and status, the worst case for sharing strings.

Each figure comes from a fresh child process, so one measurement's garbage never
weighs on the next:

- **us/job**: CPU time (``time.process_time``) of decoding every page
  (``decode_page``), parsing every job (``parse_job``) and building the ``Snapshot``,
  as ``FineTuneClient.sweep`` does; the best of ``--repeat`` runs, divided by the jobs.
- **kept B/job**: bytes still allocated (``tracemalloc``) once the snapshot is built and
  the pages are gone: what the exporter holds for a snapshot, per job.
- **peak B/job**: the most bytes allocated at once during the sweep, per job.
- **RSS +MiB**: how much the child's resident memory grew (VmRSS, after a garbage
  collection) once it holds two snapshots, the first kept while the second is built, as
  the poller keeps the published one during a sweep. The growth is measured from the
  child's RSS before the first sweep (interpreter, modules and the JSON pages): the
  allocator's own overhead and fragmentation count, which tracemalloc does not see.

Nothing is asserted: the targets (issue 12) are 15 us per job at 10,000 jobs, and
64 MiB for the whole exporter at 50,000 jobs. To measure other code (main's, say), put
its checkout first on ``PYTHONPATH``; the figures name the ``ft_exporter`` they ran.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ft_exporter
from ft_exporter.client import decode_page
from ft_exporter.model import Job, Snapshot, parse_job
from ft_exporter.simulator import UTC8, SimJob, sprawl_jobs

PAGE_SIZE = 100
SHAPES = ("account", "sprawl")
MODELS = ("qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct", "qwen3-32b", "qwen2.5-72b-instruct")
TYPES = ("sft", "efficient_sft", "dpo_lora")
OUTCOMES = ("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", "CANCELED")
NOW = 1_790_000_000.0


def api_jobs(count: int, shape: str) -> list[dict[str, Any]]:
    """``count`` jobs as the API lists them, newest first."""
    if shape == "sprawl":
        return [job.to_api(NOW, UTC8) for job in sprawl_jobs(count)]
    jobs = []
    for i in range(count):
        # One job every 7 minutes going back; the 10 newest still pending or running.
        created = NOW - 250.0 - 420.0 * i if i >= 10 else NOW - 20.0 * i
        sim = SimJob(
            job_id=f"ft-{202511260000 - i:012d}-{i * 7919 % 65536:04x}",
            model=MODELS[i % len(MODELS)],
            training_type=TYPES[i % len(TYPES)],
            created=created,
            outcome=OUTCOMES[i % len(OUTCOMES)],
            usage=50_000 + i * 37 % 350_000,
        )
        jobs.append(sim.to_api(NOW, UTC8))
    return jobs


def pages(count: int, shape: str) -> list[bytes]:
    """The list's pages as the client reads them off the wire."""
    jobs = api_jobs(count, shape)
    return [
        json.dumps(
            {
                "request_id": f"req-{n}",
                "output": {
                    "page_no": n + 1,
                    "page_size": PAGE_SIZE,
                    "total": count,
                    "jobs": jobs[n * PAGE_SIZE : (n + 1) * PAGE_SIZE],
                },
            },
            ensure_ascii=False,
        ).encode()
        for n in range(-(-count // PAGE_SIZE))
    ]


def sweep(bodies: list[bytes]) -> Snapshot:
    """What ``FineTuneClient.sweep`` does with the bodies, HTTP aside."""
    jobs: dict[str, Job] = {}
    for body in bodies:
        for raw in decode_page(body).jobs:
            job = parse_job(raw, UTC8)
            jobs[job.job_id] = job
    return Snapshot(jobs=tuple(jobs.values()), taken_at=NOW)


def vm(field: str) -> int:
    """A /proc/self/status figure in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def child(source: Path, count: int, mode: str, repeat: int) -> dict[str, float]:
    """One measurement, on pages read from ``source`` (generating them leaves garbage)."""
    with source.open("rb") as lines:
        bodies = [line.rstrip(b"\n") for line in lines]
    gc.collect()
    if mode == "cpu":
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            snapshot = sweep(bodies)
            best = min(best, time.process_time() - started)
            assert len(snapshot.jobs) == count
            del snapshot
            gc.collect()
        return {"us_per_job": best / count * 1e6}
    if mode == "memory":
        tracemalloc.start()
        snapshot = sweep(bodies)
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(snapshot.jobs) == count
        return {"kept_per_job": kept / count, "peak_per_job": peak / count}
    base = vm("VmRSS")
    previous = sweep(bodies)
    current = sweep(bodies)  # built while the previous one is still held
    gc.collect()
    grown = vm("VmRSS") - base
    assert len(previous.jobs) == len(current.jobs) == count
    return {"rss_growth_mib": grown / 1024}


def measure(source: Path, count: int, mode: str, repeat: int) -> dict[str, float]:
    argv = [sys.executable, __file__, "--child", mode, "--pages", str(source), "--jobs", str(count)]
    done = subprocess.run(
        [*argv, "--repeat", str(repeat)], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--shape", choices=SHAPES, nargs="+", default=list(SHAPES))
    parser.add_argument("--repeat", type=int, default=5, help="CPU runs; the best counts")
    parser.add_argument("--child", choices=("cpu", "memory", "rss"), help=argparse.SUPPRESS)
    parser.add_argument("--pages", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.pages, args.jobs[0], args.child, args.repeat)))
        return 0
    print(f"ft_exporter from {Path(ft_exporter.__file__).parent}, Python {sys.version.split()[0]}")
    print(f"{'jobs':>7} {'shape':>8} {'us/job':>7} {'kept B/job':>10} {'peak B/job':>10} RSS +MiB")
    for shape in args.shape:
        for count in args.jobs:
            with tempfile.NamedTemporaryFile(suffix=".jsonl") as file:
                # One page a line: json.dumps escapes every line break inside strings.
                file.write(b"\n".join(pages(count, shape)) + b"\n")
                file.flush()
                source = Path(file.name)
                cpu = measure(source, count, "cpu", args.repeat)
                memory = measure(source, count, "memory", 1)
                rss = measure(source, count, "rss", 1)
            print(
                f"{count:>7} {shape:>8} {cpu['us_per_job']:>7.1f} "
                f"{memory['kept_per_job']:>10.0f} {memory['peak_per_job']:>10.0f} "
                f"{rss['rss_growth_mib']:>8.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
