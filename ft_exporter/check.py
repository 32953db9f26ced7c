"""``ft-exporter check [FLAGS]``: one sweep of every account, printed, then exit.

The first thing to run with a new key or config file: it builds the accounts exactly as the
exporter does (same flags, variables and config file, same client, retries and rate limit)
and sweeps each once, without an HTTP server or a poller thread, so that "is my key working,
and what does the exporter see?" has an answer in seconds.

Exit codes: 0 every account swept; 1 an account's sweep failed (the API's code, HTTP status
and request id are printed); 2 the configuration is bad (one line, as at the exporter's start).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from prometheus_client import CollectorRegistry

from ft_exporter import config, configfile, logs
from ft_exporter.account import Account, AccountSpec
from ft_exporter.client import ENDPOINTS, ApiError, Cancelled
from ft_exporter.model import DOCUMENTED_STATUSES, Snapshot, clean_text
from ft_exporter.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

OUTPUTS = ("table", "json")
#: The code of a sweep that failed without an API error: a bug in the exporter.
UNEXPECTED = "Unexpected"
USAGE = "usage: ft-exporter check [--output {table,json}] [FLAGS]"
#: Longest failure line printed (the API's message is already clipped to 200 characters).
MAX_NOTE_CHARS = 600
#: Accounts swept at once; each has its own rate limit, so this only bounds the threads.
MAX_PARALLEL = 8

#: What to do about the failures a newcomer meets first (README: Troubleshooting).
HINTS = {
    "InvalidApiKey": "the API refused the key: check it, and that --dashscope.base-url is "
    "the region the key belongs to (Singapore and Beijing keys differ)",
    "Throttling": "the API throttled the exporter's own requests: wait a minute, or lower "
    "--dashscope.max-requests-per-second",
    "Timeout": "no answer in time: check --dashscope.base-url, any proxy, and --dashscope.timeout",
    "ConnectionError": "no connection: check --dashscope.base-url, DNS, any proxy and firewall",
}


@dataclass(frozen=True)
class Result:
    """One account's sweep: what it saw, or why it failed, and what it cost."""

    spec: AccountSpec
    seconds: float
    snapshot: Snapshot | None = None
    error: ApiError | None = None
    #: Requests made, by endpoint (``list``, ``logs``), retries included.
    requests: dict[str, int] = field(default_factory=dict)
    #: Failed requests: (endpoint, code, HTTP status) -> count.
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.snapshot is not None

    @property
    def quota_used(self) -> int | None:
        if self.snapshot is None:
            return None
        rule = self.spec.collector.quota
        return sum(1 for job in self.snapshot.jobs if rule.counts(job.status))

    def counts(self) -> dict[str, dict[str, int]]:
        """Jobs by model, then by status (models and statuses sorted as printed)."""
        by_model: dict[str, dict[str, int]] = {}
        for job in self.snapshot.jobs if self.snapshot is not None else ():
            statuses = by_model.setdefault(job.model, {})
            statuses[job.status] = statuses.get(job.status, 0) + 1
        return {
            model: dict(sorted(by_model[model].items(), key=lambda kv: _status_order(kv[0])))
            for model in sorted(by_model)
        }


def _status_order(status: str) -> tuple[int, str]:
    """Documented statuses in lifecycle order, then any other in alphabetical order."""
    if status in DOCUMENTED_STATUSES:
        return DOCUMENTED_STATUSES.index(status), ""
    return len(DOCUMENTED_STATUSES), status


def sweep(account: Account, registry: CollectorRegistry) -> Result:
    """One sweep of one account, as the exporter's poller would make it."""
    spec = account.spec
    started = time.monotonic()
    snapshot: Snapshot | None = None
    error: ApiError | None = None
    try:
        snapshot = account.sweep_once()
    except ApiError as err:
        error = err
    except Cancelled:
        error = ApiError("Cancelled", "interrupted")
    except Exception as exc:  # a bug of ours: reported like the poller does, not a traceback
        log.error("sweep failed: unexpected %s", type(exc).__name__, exc_info=exc)
        error = ApiError(UNEXPECTED, f"unexpected {type(exc).__name__}: {exc}")
    finally:
        seconds = time.monotonic() - started
        account.stop()
    return Result(spec, seconds, snapshot, error, *_requests_and_errors(registry, spec.name))


def _requests_and_errors(
    registry: CollectorRegistry, name: str
) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
    """The account's own request and error counters, as the exporter would export them."""
    requests = {
        endpoint: int(
            registry.get_sample_value(
                "dashscope_finetune_api_requests_total", {"account": name, "endpoint": endpoint}
            )
            or 0
        )
        for endpoint in ENDPOINTS
    }
    errors: dict[tuple[str, str, str], int] = {}
    for family in registry.collect():
        if family.name != "dashscope_finetune_api_errors":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["account"] == name and sample.value:
                key = (labels["endpoint"], labels["code"], labels["http_status"])
                errors[key] = int(sample.value)
    return requests, dict(sorted(errors.items()))


def run(specs: Sequence[AccountSpec]) -> list[Result]:
    """Sweep every account once, several at a time; results in the accounts' order."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = SelfMetrics(registry)
    accounts = [Account(spec, metrics) for spec in specs]
    if not accounts:
        return []
    pool = ThreadPoolExecutor(min(MAX_PARALLEL, len(accounts)), "check")
    try:
        return list(pool.map(lambda account: sweep(account, registry), accounts))
    except BaseException:
        # Ctrl+C: cut every sweep short (a wait or request in flight ends at once).
        for account in accounts:
            account.stop()
        raise
    finally:
        pool.shutdown(wait=True)


# ---- output ---------------------------------------------------------------------------


def _error_json(err: ApiError) -> dict[str, Any]:
    return {
        "code": err.code,
        "http_status": int(err.http_status) if err.http_status.isdigit() else None,
        "message": err.message,
        "request_id": err.request_id or None,
    }


def to_json(results: Sequence[Result]) -> dict[str, Any]:
    """The ``--output json`` document (its shape is in the README's Troubleshooting)."""
    accounts = []
    for r in results:
        snapshot = r.snapshot
        accounts.append(
            {
                "account": r.spec.name,
                "base_url": r.spec.base_url,
                "ok": r.ok,
                "error": None if r.error is None else _error_json(r.error),
                "sweep_seconds": round(r.seconds, 3),
                "requests": r.requests,
                "errors": [
                    {
                        "endpoint": endpoint,
                        "code": code,
                        "http_status": int(status) if status.isdigit() else None,
                        "count": count,
                    }
                    for (endpoint, code, status), count in r.errors.items()
                ],
                "quota": {
                    "used": r.quota_used,
                    "limit": r.spec.collector.quota_limit,
                    "statuses": r.spec.collector.quota.describe(),
                },
                "jobs": None
                if snapshot is None
                else {
                    "total": len(snapshot.jobs),
                    "malformed": snapshot.malformed_jobs,
                    "by_model": r.counts(),
                },
            }
        )
    return {"ok": all(r.ok for r in results), "accounts": accounts}


def _table(rows: list[list[str]], numeric_from: int) -> list[str]:
    """Columns two spaces apart; those from ``numeric_from`` on right-aligned."""
    rows = [[clean_text(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i >= numeric_from else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def to_table(results: Sequence[Result]) -> list[str]:
    """The human report: one row per account, one per account and model, then failures."""
    if not results:
        return ["no account to check: this shard (--shard, --total-shards) holds none"]
    summary = [["ACCOUNT", "RESULT", "QUOTA", "REQUESTS", "ERRORS", "SWEEP"]]
    for r in results:
        used = r.quota_used
        summary.append(
            [
                r.spec.name,
                "ok" if r.ok else "failed",
                "-" if used is None else f"{used}/{r.spec.collector.quota_limit}",
                str(sum(r.requests.values())),
                str(sum(r.errors.values())),
                f"{r.seconds:.2f}s",
            ]
        )
    lines = _table(summary, numeric_from=2)
    statuses = sorted(
        {s for r in results for counts in r.counts().values() for s in counts},
        key=_status_order,
    )
    jobs = [["ACCOUNT", "MODEL", *statuses, "TOTAL"]]
    for r in results:
        for model, counts in r.counts().items():
            jobs.append(
                [
                    r.spec.name,
                    model,
                    *(str(counts.get(s, 0)) for s in statuses),
                    str(sum(counts.values())),
                ]
            )
    if len(jobs) > 1:
        lines += ["", *_table(jobs, numeric_from=2)]
    notes = []
    for r in results:
        if r.ok and r.snapshot is not None and not r.snapshot.jobs:
            notes.append(f"{r.spec.name}: no jobs in this account")
        malformed = r.snapshot.malformed_jobs if r.snapshot is not None else 0
        if malformed:
            entries = "entry" if malformed == 1 else "entries"
            notes.append(f"{r.spec.name}: {malformed} malformed list {entries} skipped")
        if r.error is not None:
            err = r.error
            status = f" HTTP {err.http_status}" if err.http_status else ""
            rid = err.request_id or "none"
            # The API's text, shown on a terminal: one line, no escape sequences.
            text = f"{r.spec.name}: {err.code}{status}: {err.message} (request_id {rid})"
            notes.append(clean_text(text, MAX_NOTE_CHARS))
            if err.code in HINTS:
                notes.append(f"  {HINTS[err.code]}")
    if notes:
        lines += ["", *notes]
    return lines


# ---- command --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Errors in one line and exit code 2, as the exporter's own flags."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ft-exporter: error: {message}\n")


def _options(argv: Sequence[str]) -> tuple[str, list[str]] | int:
    """``--output`` (check's own flag) and the exporter's flags; an exit code on error."""
    parser = _Parser(prog="ft-exporter check", add_help=False, allow_abbrev=False)
    parser.add_argument("--output", default="table")
    parser.add_argument("-h", "--help", action="store_true")
    own, rest = parser.parse_known_args(list(argv))
    if own.help:
        about = (
            "Sweeps every account once with the exporter's own flags, variables and "
            "--config.file, prints what it saw and exits: 0 all swept, 1 an API error, 2 bad "
            "configuration. --output json prints a JSON document instead of the tables. "
            "FLAGS: see ft-exporter --help."
        )
        print(f"{USAGE}\n\n{textwrap.fill(about, 79)}")
        return 0
    if own.output not in OUTPUTS:
        print(
            f"ft-exporter: error: --output must be one of {', '.join(OUTPUTS)}, "
            f"got {own.output[:40]!r}",
            file=sys.stderr,
        )
        return 2
    return str(own.output), rest


def command(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """``ft-exporter check [--output {table,json}] [FLAGS]``; returns the exit code."""
    from ft_exporter import cli  # cli dispatches here: imported late to avoid a cycle

    options = _options(argv)
    if isinstance(options, int):
        return options
    output, rest = options
    try:
        cfg = config.load(rest)
    except config.ConfigError as exc:
        print(f"ft-exporter: error: {exc}", file=sys.stderr)
        return 2
    cfg, simulator = cli.start_demo(cfg)
    redact = logs.setup(cfg.log_level, cfg.log_format, [cfg.api_key.reveal()])
    try:
        specs, _ = cli.read_accounts(cfg, cli.key_source_of(cfg, redact), redact.add)
    except configfile.ConfigFileError as exc:
        for problem in exc.problems:
            print(f"ft-exporter: error: {problem}", file=sys.stderr)
        return 2
    try:
        results = run(specs)
    except KeyboardInterrupt:
        print("ft-exporter: interrupted", file=sys.stderr)
        return 130
    finally:
        if simulator is not None:
            simulator.stop()
    if output == "json":
        print(json.dumps(to_json(results), indent=2), file=out)
    else:
        print("\n".join(to_table(results)), file=out)
    return 0 if all(r.ok for r in results) else 1
