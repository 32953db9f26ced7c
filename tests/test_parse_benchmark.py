"""benchmarks/parse.py measures what it says: real pages, every job parsed, one row a size.

Counts and shapes only: its figures are never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from parse import PAGE_SIZE, pages, sweep

from ft_exporter.client import decode_page


def test_pages_are_full_api_pages_of_every_job_newest_first() -> None:
    bodies = pages(250, "account")
    assert len(bodies) == 3
    decoded = [decode_page(body) for body in bodies]
    assert [len(page.jobs) for page in decoded] == [PAGE_SIZE, PAGE_SIZE, 50]
    assert {page.total for page in decoded} == {250}
    created = [job["create_time"] for page in decoded for job in page.jobs]
    assert created == sorted(created, reverse=True)
    assert json.loads(bodies[0])["output"]["jobs"][0]["job_name"] == "ft-202511260000-0000"


def test_a_sweep_parses_every_job_of_either_shape() -> None:
    account = sweep(pages(250, "account"))
    assert len({job.job_id for job in account.jobs}) == 250
    statuses = Counter(job.status for job in account.jobs)
    assert statuses["SUCCEEDED"] + statuses["FAILED"] + statuses["CANCELED"] == 240
    assert all(job.created is not None for job in account.jobs)
    sprawl = sweep(pages(250, "sprawl"))
    assert len({job.model for job in sprawl.jobs}) == 250  # every job its own model


@pytest.mark.e2e
def test_the_benchmark_prints_one_row_a_size_and_shape() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "parse.py"), "--jobs", "150", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"ft_exporter from {ROOT / 'ft_exporter'}")
    header = "jobs shape us/job kept B/job peak B/job RSS +MiB"
    assert lines[1].split() == header.split()
    rows = [line.split() for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [("150", "account"), ("150", "sprawl")]
    for row in rows:
        us, kept, peak = float(row[2]), float(row[3]), float(row[4])
        assert us > 0 and 0 < kept <= peak
