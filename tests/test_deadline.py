"""The sweep deadline and the rate limiter's burst, against the real exporter and simulator.

The exact arithmetic (which request is the last before the deadline, what a burst spends)
is in tests/test_retry.py on a fake clock; here the real processes show what a user sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Exporter, Simulator, value, wait_for


@pytest.fixture
def sprawl(tmp_path: Path) -> Iterator[Simulator]:
    """200 jobs: 10 pages of 20."""
    sim = Simulator(tmp_path, scenario="sprawl")
    yield sim
    sim.stop()


def first_sweep_span(sim: Simulator, exporter: Exporter) -> float:
    """Seconds between the first and the last list request of the exporter's first sweep."""
    times = sim.stats()["request_times"]
    assert len(times) >= 10
    return float(times[9] - times[0])


@pytest.mark.parametrize(("burst", "paced"), [("20", False), ("1", True)])
def test_a_first_sweep_goes_at_once_within_the_burst(
    sprawl: Simulator, exporter_factory: Callable[..., Exporter], burst: str, paced: bool
) -> None:
    exp = exporter_factory(
        [
            f"--dashscope.base-url={sprawl.url}",
            "--dashscope.page-size=20",
            f"--dashscope.burst-requests={burst}",
            "--poll.interval=1h",
        ],
        env={"DASHSCOPE_API_KEY": sprawl.key},
    )
    span = first_sweep_span(sprawl, exp)
    if paced:
        # One token at a time at the default 2 a second: 9 gaps of at least 0.5 s.
        assert span >= 4.4
    else:
        # All 10 pages inside the burst of 20: no gap waits on the limiter (paced, they
        # would take 4.5 s; on a loaded machine the simulator still answers in ms).
        assert span < 2.0
    assert value(exp.metrics(), "dashscope_finetune_up", account="default") == 1


def test_a_sweep_that_cannot_fit_its_deadline_fails_after_one_request_and_says_why(
    sprawl: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(
        [
            f"--dashscope.base-url={sprawl.url}",
            "--dashscope.page-size=1",
            "--dashscope.burst-requests=1",
            "--poll.sweep-timeout=5s",
            "--poll.interval=200ms",
        ],
        env={"DASHSCOPE_API_KEY": sprawl.key},
    )
    wait_for(
        lambda: (
            (
                value(exp.metrics(), "dashscope_finetune_sweep_failures_total", account="default")
                or 0
            )
            >= 3
        ),
        what="three failed sweeps",
    )
    text = exp.metrics()
    assert value(text, "dashscope_finetune_up", account="default") == 0
    sweeps = value(text, "dashscope_finetune_sweep_failures_total", account="default")
    requests = value(
        text, "dashscope_finetune_api_requests_total", account="default", endpoint="list"
    )
    assert sweeps is not None and requests is not None
    # One request (page 1, which tells the total) per sweep; the sweep in flight may have
    # made its one.
    assert sweeps <= requests <= sweeps + 1
    says = (
        "a full sweep of 200 jobs needs 200 requests at --dashscope.page-size=1, about 100s "
        "at --dashscope.max-requests-per-second=2: more than --poll.sweep-timeout=5s allows"
    )
    assert exp.output().count(says) == 1  # said once, not once a sweep
