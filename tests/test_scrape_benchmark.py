"""benchmarks/scrape.py keeps working: its static server and scrape measurement (figures
are never asserted, only counts and bytes)."""

from __future__ import annotations

import gzip
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from scrape import PROMETHEUS_HEADERS, exporter, fetch, measure_scrapes, static_server

pytestmark = pytest.mark.e2e  # starts processes


def test_static_server_serves_the_same_bytes_over_keep_alive() -> None:
    body = gzip.compress(b"# HELP x X.\n# TYPE x gauge\nx 1.0\n")
    headers = [("Content-Type", "text/plain; version=0.0.4"), ("Content-Encoding", "gzip")]
    with static_server(body, headers) as target:
        answer = fetch(target.url)
        assert (answer.status, answer.body) == (200, body)
        assert answer.headers["content-encoding"] == "gzip"
        result = measure_scrapes(target.url, target.pid, concurrency=5, count=40, timeout=3)
    assert (result.count, result.errors, result.bytes) == (40, 0, len(body))
    assert result.cpu_ms >= 0 and result.p50_ms <= result.p99_ms


def test_the_synthetic_exporter_answers_as_prometheus_asks() -> None:
    with exporter(accounts=2, jobs=30) as target:
        answer = fetch(target.url, PROMETHEUS_HEADERS)
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        text = gzip.decompress(answer.body).decode()
        assert text.endswith("# EOF\n")
        assert 'dashscope_finetune_up{account="acct-001"} 1.0' in text
        result = measure_scrapes(target.url, target.pid, concurrency=3, count=12)
    assert (result.count, result.errors) == (12, 0)
