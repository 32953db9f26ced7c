"""The simulator's ``bulk`` scenario: the account benchmarks/sweep.py measures against.

Exact figures: N jobs newest first, the K newest waiting (PENDING, QUEUING in turn, for
ever), the rest ended (SUCCEEDED, SUCCEEDED, FAILED, SUCCEEDED, CANCELED in turn down the
list), four models in turn, ``create_time`` strictly falling. In-process (no process
started): the account, the real HTTP server on a thread, and ``main``'s flag checks.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from ft_exporter import simulator
from ft_exporter.simulator import (
    BULK_MODELS,
    MAX_BULK_JOBS,
    SimulatedAccount,
    SimulatorServer,
    serve,
)

KEY = "sk-bulk-0123456789abcdef"
T0 = 1_780_000_000.5  # a fixed "now" with a fraction: create_time is cut to the second
ENDED = {"SUCCEEDED", "FAILED", "CANCELED"}


def account(jobs: int, active: int, now: list[float] | None = None) -> SimulatedAccount:
    clock = now or [T0]
    return SimulatedAccount("bulk", clock=lambda: clock[0], jobs=jobs, active=active)


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    sim = serve(key=KEY, scenario="bulk", jobs=250, active=10)
    yield sim
    sim.stop()


def page(sim: SimulatorServer, page_no: int, size: int = 100, model: str = "") -> Any:
    query = f"page_no={page_no}&page_size={size}" + (f"&model={model}" if model else "")
    request = urllib.request.Request(
        f"{sim.url}/api/v1/fine-tunes?{query}", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["output"]


def test_totals_statuses_and_models_are_exact() -> None:
    jobs = list(account(250, 10).listing(T0, None))
    assert len(jobs) == 250
    assert [job["status"] for job in jobs[:10]] == ["PENDING", "QUEUING"] * 5
    # 240 ended jobs, positions 10..249: 48 of each position modulo 5.
    assert Counter(job["status"] for job in jobs[10:]) == {
        "SUCCEEDED": 144,
        "FAILED": 48,
        "CANCELED": 48,
    }
    assert Counter(job["model"] for job in jobs) == {
        "qwen3-14b": 63,
        "qwen3-8b": 63,
        "qwen2.5-7b-instruct": 62,
        "qwen3-32b": 62,
    }
    assert len({job["job_id"] for job in jobs}) == 250
    assert jobs[0]["job_id"] == "ft-bulk-000249" and jobs[-1]["job_id"] == "ft-bulk-000000"


def test_newest_first_strictly_to_the_second() -> None:
    jobs = list(account(1000, 10).listing(T0, None))
    created = [datetime.strptime(job["create_time"], "%Y-%m-%d %H:%M:%S") for job in jobs]
    assert all(a > b for a, b in itertools.pairwise(created))
    assert [job["job_id"] for job in jobs] == [f"ft-bulk-{n:06d}" for n in range(999, -1, -1)]


def test_ended_jobs_carry_their_end_and_usage_waiting_ones_neither() -> None:
    jobs = list(account(100, 4).listing(T0, None))
    for job in jobs[:4]:
        assert "end_time" not in job and "usage" not in job
    for job in jobs[4:]:
        assert job["end_time"] > job["create_time"]
        if job["status"] == "SUCCEEDED":
            assert isinstance(job["usage"], int) and job["usage"] >= 1000
        elif job["status"] == "CANCELED":
            assert job["usage"] == 0
        else:
            assert job["status"] == "FAILED" and "usage" not in job


def test_waiting_jobs_never_move_and_ended_ones_never_change() -> None:
    now = [T0]
    bulk = account(30, 6, now)
    before = list(bulk.listing(now[0], None))
    now[0] += 10 * 365 * 86400.0  # ten years on
    after = list(bulk.listing(now[0], None))
    assert after == before
    assert [job["status"] for job in after[:6]] == ["PENDING", "QUEUING"] * 3


def test_a_page_reuses_the_ended_jobs_built_once() -> None:
    """Serving a page copies no account: the ended jobs' dicts are the very same objects."""
    bulk = account(50_000, 10)
    first = bulk.listing(T0, None)[49_900:50_000]
    again = bulk.listing(T0 + 60, None)[49_900:50_000]
    assert len(first) == 100 and all(a is b for a, b in zip(first, again, strict=True))
    assert first[-1]["job_id"] == "ft-bulk-000000"


def test_the_listing_slices_as_a_list_would() -> None:
    listing = account(25, 3).listing(T0, None)
    plain = list(listing)
    assert len(listing) == len(plain) == 25
    for index in (0, 2, 3, 24, -1, -25):
        assert listing[index] == plain[index]
    for cut in (
        slice(0, 3),
        slice(0, 4),
        slice(2, 5),
        slice(3, 25),
        slice(20, 100),
        slice(30, 40),
        slice(-5, None),
        slice(None, None, 3),
        slice(10, 2),
    ):
        assert listing[cut] == plain[cut], cut
    for index in (25, -26):
        with pytest.raises(IndexError):
            listing[index]


def test_pages_over_http(server: SimulatorServer) -> None:
    pages = [page(server, n) for n in (1, 2, 3, 4)]
    assert [p["total"] for p in pages] == [250] * 4
    assert [len(p["jobs"]) for p in pages] == [100, 100, 50, 0]
    ids = [job["job_id"] for p in pages for job in p["jobs"]]
    assert ids == [f"ft-bulk-{n:06d}" for n in range(249, -1, -1)]
    # Page 1 starts with the waiting jobs, then the ended ones follow on.
    assert [job["status"] for job in pages[0]["jobs"][:11]] == ["PENDING", "QUEUING"] * 5 + [
        "SUCCEEDED"
    ]
    # Pages of 7 straddle the seam between the waiting and the ended jobs.
    assert [job["job_id"] for job in page(server, 2, 7)["jobs"]] == [
        f"ft-bulk-{n:06d}" for n in range(242, 235, -1)
    ]


def test_the_model_filter_keeps_the_order(server: SimulatorServer) -> None:
    model = BULK_MODELS[1]  # positions 1, 5, 9, ... of the list
    listed = page(server, 1, 100, model)
    assert listed["total"] == 63
    assert [job["job_id"] for job in listed["jobs"]] == [
        f"ft-bulk-{249 - i:06d}" for i in range(1, 250, 4)
    ]
    assert [job["status"] for job in listed["jobs"][:3]] == ["QUEUING", "QUEUING", "QUEUING"]
    assert {job["status"] for job in listed["jobs"][3:]} <= ENDED
    assert page(server, 1, 100, "no-such-model") == {
        "page_no": 1,
        "page_size": 100,
        "total": 0,
        "jobs": [],
    }


def test_zero_jobs_and_all_active() -> None:
    assert list(account(0, 0).listing(T0, None)) == []
    statuses = [job["status"] for job in account(5, 5).listing(T0, None)]
    assert statuses == ["PENDING", "QUEUING", "PENDING", "QUEUING", "PENDING"]


@pytest.mark.parametrize(
    ("jobs", "active", "message"),
    [
        # Only just over the cap: were the cap gone, this would still build in seconds.
        (MAX_BULK_JOBS + 1, 10, "jobs must be 0 to 200,000"),
        (-1, 0, "jobs must be 0 to 200,000"),
        (10, 11, "active must be 0 to jobs (10)"),
        (10, -1, "active must be 0 to jobs (10)"),
        (True, 0, "jobs must be a whole number"),
        (10.0, 0, "jobs must be a whole number"),
        (10, "3", "active must be a whole number"),
    ],
)
def test_bad_sizes_are_refused(jobs: Any, active: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SimulatedAccount("bulk", jobs=jobs, active=active)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "static", "--jobs", "10"], "--jobs and --active apply to --scenario bulk"),
        (["--scenario", "demo", "--active", "1"], "--jobs and --active apply to --scenario bulk"),
        (["--scenario", "bulk", "--jobs", "200001"], "jobs must be 0 to 200,000, not 200,001"),
        (["--scenario", "bulk", "--jobs", "-5"], "jobs must be 0 to 200,000, not -5"),
        (["--scenario", "bulk", "--jobs", "5"], "active must be 0 to jobs (5), not 10"),
        (["--scenario", "bulk", "--jobs", "5", "--active", "6"], "not 6"),
        (["--scenario", "bulk", "--jobs", "1e3"], "invalid int value: '1e3'"),
    ],
)
def test_bad_flags_stop_the_simulator_with_usage(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def serve_forever(self: SimulatorServer, poll_interval: float = 0.5) -> None:
        raise AssertionError("the simulator started serving")  # not hang, were a check gone

    monkeypatch.setattr(SimulatorServer, "serve_forever", serve_forever)
    with pytest.raises(SystemExit) as stopped:
        simulator.main(["--port", "0", *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
