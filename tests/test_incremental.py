"""Incremental sweeps against the real simulator process: pages read, snapshots, freshness.

The simulator lists jobs newest first by when they were added (or placed with
``PATCH /_sim/jobs/<id>``); its control API changes the list between sweeps. Each sweep's
list requests are counted on the simulator's side, and its snapshot is compared with a
fresh client's full sweep of the same list.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import UTC8, Exporter, Simulator, http_json, value, wait_for
from test_listing import job

from ft_exporter.client import ApiError, FineTuneClient
from ft_exporter.model import Snapshot
from ft_exporter.secret import Secret

pytestmark = pytest.mark.e2e
KEY = "sk-incremental-test-key"
#: 45 jobs at 10 a page: a full sweep is 5 requests.
COUNT, PAGE = 45, 10


def add(sim: Simulator, *jobs: dict[str, Any]) -> None:
    """Adds jobs, the first listed last: each is newer (by arrival) than the one before."""
    http_json(sim.url + "/_sim/jobs", "POST", {"jobs": list(jobs)})


def patch(sim: Simulator, job_id: str, **body: Any) -> None:
    http_json(sim.url + "/_sim/jobs/" + quote(job_id, safe=""), "PATCH", body)


def delete(sim: Simulator, job_id: str) -> None:
    http_json(sim.url + "/_sim/jobs/" + quote(job_id, safe=""), "DELETE")


def listed_jobs(sim: Simulator) -> list[dict[str, Any]]:
    """The jobs in list order, as the simulator serves them (between sweeps)."""
    request = urllib.request.Request(
        sim.url + "/api/v1/fine-tunes?page_size=100", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        jobs: list[dict[str, Any]] = json.load(response)["output"]["jobs"]
        return jobs


def listed(sim: Simulator) -> list[str]:
    return [j["job_id"] for j in listed_jobs(sim)]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path, key=KEY, scenario="empty")
    # Oldest first: the last one added is listed first, so the list is newest first.
    add(
        simulator, *[job(n, "RUNNING" if n in (2, 29) else "SUCCEEDED") for n in range(COUNT)][::-1]
    )
    yield simulator
    simulator.stop()


def make_client(sim: Simulator, interval: float = 600.0) -> FineTuneClient:
    return FineTuneClient(
        sim.url,
        Secret(KEY),
        page_size=PAGE,
        tz=UTC8,
        clock=lambda: 7.0,
        full_sweep_interval=interval,
    )


class Sweeper:
    """One long-lived client; each sweep's list requests and its equality with a full one."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.client = make_client(sim)

    def sweep(self, requests: int) -> Snapshot | str:
        before = self.sim.stats()["list_requests"]
        result = self._run(self.client)
        assert self.sim.stats()["list_requests"] - before == requests
        fresh = make_client(self.sim)
        assert result == self._run(fresh)
        return result

    @staticmethod
    def _run(client: FineTuneClient) -> Snapshot | str:
        try:
            return client.sweep()
        except ApiError as err:  # without the request id, which differs between the two
            return f"{err.code} HTTP {err.http_status}: {err.message}"


def test_incremental_sweeps_of_the_real_simulator(sim: Simulator) -> None:
    ids = [f"ft-{n:05d}" for n in range(COUNT)]
    assert listed(sim) == ids  # newest first, as the fixture meant
    s = Sweeper(sim)
    s.sweep(5)  # the first sweep is full: ceil(45 / 10)
    s.sweep(3)  # ft-00029 is RUNNING, last on page 3: pages 1 to 3
    add(sim, job(-1, "PENDING"))
    snapshot = s.sweep(4)  # a new job pushes ft-00029 onto page 4
    assert isinstance(snapshot, Snapshot) and snapshot.jobs[0].job_id == "ft--0001"
    patch(sim, "ft-00029", fields={"status": "SUCCEEDED", "end_time": "2024-11-01 07:00:00"})
    s.sweep(4)  # read where it is, now ended
    s.sweep(1)  # steady state: page 1 holds every job not ended
    patch(sim, "ft--0001", fields={"status": "RUNNING"})
    s.sweep(1)  # a status change on page 1
    delete(sim, "ft-00004")
    s.sweep(1 + 5)  # a deletion on page 1: a full sweep follows, in the same sweep
    delete(sim, "ft-00040")
    s.sweep(1 + 5)  # a deletion beyond page 1: total is one short
    s.sweep(1)
    patch(sim, "ft-00001", fields={"usage": 5})
    s.sweep(1 + 5)  # an ended job changed
    # A new job placed below known ones (the simulator sorts by "created"): not newest first.
    add(sim, job(6, job_id="ft-late"))
    patch(sim, "ft-late", created=0.0)
    assert listed(sim)[-1] == "ft-late"
    s.sweep(1 + 5)  # total is off: it is read in full, and the order check finds ft-late
    s.sweep(5)  # create_time increases down the list: full sweeps until it is fixed
    delete(sim, "ft-late")
    s.sweep(5)
    s.sweep(1)
    sim.fault("total_high", count=1)  # page 1 lies once; the full sweep's pages agree
    s.sweep(1 + 5)
    # Every page lies, 5 short: page 1 of the incremental sweep, then the full sweep stops
    # on page 4, where 40 jobs reach the 39 announced; the fresh client's 4 pages lie too.
    sim.fault("total_low", count=1 + 4 + 4)
    result = s.sweep(1 + 4)
    assert result == (
        "InvalidResponse HTTP 200: the list announced total=39 but held 40 jobs (model=*)"
    )
    sim.clear_fault()
    s.sweep(1)  # the cache outlived the rejected sweeps


def test_a_status_change_on_page_one_reaches_metrics_after_the_next_sweep(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    """Freshness, and 1 list request a sweep in steady state, with the real exporter."""
    # Only ft-00002, on page 1, is running: after the first (full) sweep, page 1 is enough.
    patch(sim, "ft-00029", fields={"status": "SUCCEEDED", "end_time": "2024-11-01 07:00:00"})
    exp = exporter_factory(
        [
            f"--dashscope.base-url={sim.url}",
            f"--dashscope.page-size={PAGE}",
            "--poll.interval=0.3s",
            "--dashscope.max-requests-per-second=100",
            "--logs.max-jobs=0",
        ],
        env={"DASHSCOPE_API_KEY": KEY},
    )

    def counters() -> tuple[float, float, float]:
        """Sweeps, list requests and RUNNING jobs, from one scrape."""
        text = exp.metrics()
        sweeps = value(text, "dashscope_finetune_sweeps_total", account="default")
        requests = value(
            text, "dashscope_finetune_api_requests_total", account="default", endpoint="list"
        )
        running = value(
            text,
            "dashscope_finetune_jobs",
            account="default",
            model="qwen3-8b",
            training_type="sft",
            status="RUNNING",
        )
        return sweeps or 0, requests or 0, running if running is not None else -1

    wait_for(lambda: counters()[0] >= 4, what="four sweeps")
    sweeps, requests, running = counters()
    assert running == 1
    # 5 pages for the first sweep, then 1 a sweep; the sweep in flight may have made its
    # request before it is counted.
    assert requests - (5 + sweeps - 1) in (0, 1), (sweeps, requests)

    patch(sim, "ft-00002", fields={"status": "FAILED", "end_time": "2024-11-01 07:00:00"})
    started = counters()[0]
    # The sweep in flight may have read page 1 before the change: the next one has not.
    wait_for(lambda: counters()[0] >= started + 2, what="two more sweeps")
    sweeps, requests, running = counters()
    assert running == 0
    assert requests - (5 + sweeps - 1) in (0, 1), (sweeps, requests)


def test_an_interval_of_zero_reads_every_page_every_sweep(
    sim: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(
        [
            f"--dashscope.base-url={sim.url}",
            f"--dashscope.page-size={PAGE}",
            "--poll.interval=0.3s",
            "--poll.full-sweep-interval=0",
            "--dashscope.max-requests-per-second=100",
            "--logs.max-jobs=0",
        ],
        env={"DASHSCOPE_API_KEY": KEY},
    )

    def counters() -> tuple[float, float]:
        text = exp.metrics()
        sweeps = value(text, "dashscope_finetune_sweeps_total", account="default") or 0
        requests = value(
            text, "dashscope_finetune_api_requests_total", account="default", endpoint="list"
        )
        return sweeps, requests or 0

    wait_for(lambda: counters()[0] >= 3, what="three sweeps")
    sweeps, requests = counters()
    # 5 pages every sweep; the sweep in flight may have made some of its 5 already.
    assert 0 <= requests - 5 * sweeps <= 5, (sweeps, requests)


def control(sim: Simulator, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(sim.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_the_job_control_endpoints_refuse_what_they_cannot_do(sim: Simulator) -> None:
    add(sim, job(0, job_id="a/b"))
    assert control(sim, "PATCH", "/_sim/jobs/nope", b'{"fields": {"status": "X"}}') == (
        404,
        {"error": "no job 'nope'"},
    )
    assert control(sim, "DELETE", "/_sim/jobs/nope") == (404, {"error": "no job 'nope'"})
    refused = (400, {"error": "expected {fields: {...}, created: seconds}"})
    for body in (
        b"not json",
        b"[1]",
        b'{"fields": [1]}',
        b'{"created": true}',
        b'{"created": "1"}',
    ):
        assert control(sim, "PATCH", "/_sim/jobs/a%2Fb", body) == refused
    assert control(sim, "PATCH", "/_sim/fault", b"{}")[0] == 404
    # An id with a slash, percent-encoded whole; fields set, then the job deleted.
    assert control(sim, "PATCH", "/_sim/jobs/a%2Fb", b'{"fields": {"status": "FAILED"}}') == (
        200,
        {"patched": "a/b"},
    )
    assert [j["status"] for j in listed_jobs(sim) if j["job_id"] == "a/b"] == ["FAILED"]
    assert control(sim, "DELETE", "/_sim/jobs/a%2Fb") == (200, {"deleted": "a/b"})
    assert "a/b" not in listed(sim)
