"""The landing page ``/``: each account's quota, jobs and API health at a glance.

Before anyone wires up Grafana, a person wants to know whether the key works and what
the exporter sees. This page answers from the same snapshots the metrics come from,
rendered on the server: plain HTML with inline CSS (no script, font or other asset, so
it works offline and under a strict Content-Security-Policy), dark and light, readable
at phone width. Every value is HTML-escaped: job names and error messages come from
the API and are hostile. Lists are bounded, so a large account keeps the page small.

:func:`render` is pure: the accounts' data and ``now`` in, bytes out.
"""

from __future__ import annotations

import html
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol
from urllib.parse import urlsplit

from ft_exporter.collector import CollectorSettings, is_stale
from ft_exporter.failures import Failures
from ft_exporter.model import (
    DOCUMENTED_STATUSES,
    ExporterState,
    Job,
    Training,
    clean_text,
    progress_ratio,
)

#: Headers of the page: nothing on it may run, load or be framed, and its links do not
#: tell other sites where the exporter lives.
HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
#: Active jobs listed per account (newest first); the rest are counted, not listed.
MAX_ACTIVE = 100
#: Longest job name, id, model or status shown, in characters (longer ones end in "…").
MAX_SHOWN = 80
#: Ended jobs listed per account, most recently ended first.
MAX_ENDED = 10
#: The quota thresholds of the alerts (prometheus/alerts.yml): nearly full, full.
QUOTA_WARN = 0.8
QUOTA_FULL = 1.0
#: Bounds of the page's refresh (it follows the shortest poll interval).
MIN_REFRESH, MAX_REFRESH, DEFAULT_REFRESH = 5, 3600, 60
DASH = "\u2014"
#: The README's section on the alerts, as its heading's anchor.
ALERTS_ANCHOR = "#the-alerts"


class StatusUnit(Protocol):
    """What the page needs of an account (:class:`ft_exporter.account.Account` has it)."""

    @property
    def settings(self) -> CollectorSettings: ...

    @property
    def poll_interval(self) -> float: ...

    def state(self) -> ExporterState: ...

    def failures(self) -> Failures: ...


@dataclass(frozen=True)
class Links:
    """Where the page links to; ``alerts`` is empty when no repository URL is known."""

    metrics: str = "/metrics"
    alerts: str = ""


def alerts_url() -> str:
    """The README's section on alerts in the project's repository, from the package's
    metadata (``Project-URL``); empty when the package names no repository (or only a
    placeholder)."""
    try:
        urls = metadata.metadata("ft-exporter").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return ""
    found: dict[str, str] = {}
    for entry in urls:
        label, _, url = entry.partition(",")
        url = url.strip()
        host = urlsplit(url).hostname or ""
        # A .invalid host (RFC 2606) is a placeholder: a dead link helps no one.
        if url.startswith("https://") and host and not host.endswith(".invalid"):
            found[label.strip().lower()] = url.rstrip("/")
    for label in ("repository", "source", "source code", "homepage"):
        if label in found:
            return found[label] + ALERTS_ANCHOR
    return ""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _short(value: str) -> str:
    """Text from the API, clipped for the page (a wide cell helps no one) and escaped."""
    return _e(clean_text(value, MAX_SHOWN))


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def duration(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``3h 12m``, ``2d 4h``: two units at most."""
    s = max(int(seconds), 0)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    return f"{duration(now - ts)} ago"


def _number(value: float | None) -> str:
    if value is None:
        return DASH
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def quota_words(used: int, limit: int) -> tuple[str, str]:
    """The quota bar's level (``ok``, ``warn``, ``full``) and the room left in words."""
    ratio = used / limit if limit > 0 else math.inf
    level = "full" if ratio >= QUOTA_FULL else "warn" if ratio >= QUOTA_WARN else "ok"
    room = max(limit - used, 0)
    if room == 0:
        return level, "No more jobs can start: new jobs are refused until some are deleted."
    return level, f"{room} more job{'s' if room != 1 else ''} can start."


CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mute:#59636e;--line:#d1d9e0;
--card:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--full:#cf222e;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--mute:#9198a1;
--line:#3d444d;--card:#151b23;--ok:#3fb950;--warn:#d29922;--full:#f85149;--link:#4493f8}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:72rem;padding:1rem;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--link)}h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.2rem;margin:0}
h3{font-size:1rem;margin:1.1rem 0 .4rem}
.mute,caption{color:var(--mute)}caption{text-align:left;padding:.2rem 0}
nav a{margin-right:1rem;white-space:nowrap}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:1rem;margin:1rem 0}
.badge{display:inline-block;font-size:.8rem;font-weight:600;border-radius:1rem;
padding:.05rem .6rem;margin-left:.5rem;color:#fff;vertical-align:middle}
.b-ok{background:var(--ok)}.b-warn{background:var(--warn)}.b-full{background:var(--full)}
.bar{height:1rem;border-radius:.5rem;background:var(--line);overflow:hidden;margin:.4rem 0}
.bar span{display:block;height:100%}
.ok .bar span{background:var(--ok)}.warn .bar span{background:var(--warn)}
.full .bar span{background:var(--full)}
.warn .room{color:var(--warn);font-weight:600}.full .room{color:var(--full);font-weight:600}
.scroll{overflow-x:auto}table.errors{width:auto}table.errors td,table.errors th{padding-right:2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid var(--line);
vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.name{overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.4rem 0}
dt{color:var(--mute)}dd{margin:0}
.bad{color:var(--full);font-weight:600}
.st{display:inline-block;white-space:nowrap;margin-right:.6rem}
@media (max-width:600px){body{padding:.5rem;font-size:14px}section{padding:.6rem}
th,td{padding:.2rem .3rem}
table.rows thead{display:none}
table.rows tr{display:flex;flex-wrap:wrap;gap:0 .9rem;padding:.35rem 0;
border-bottom:1px solid var(--line)}
table.rows td{border:0;padding:0;text-align:left}
table.rows td.first{flex-basis:100%;font-weight:600}
table.rows td[data-l]::before{content:attr(data-l) ": ";color:var(--mute)}}
"""


def render(
    units: Sequence[StatusUnit],
    now: float,
    *,
    version: str = "",
    links: Links | None = None,
) -> bytes:
    """The whole page for ``units`` as of ``now``, UTF-8."""
    links = links or Links()
    intervals = [unit.poll_interval for unit in units]
    refresh = int(min(intervals)) if intervals else DEFAULT_REFRESH
    refresh = min(max(refresh, MIN_REFRESH), MAX_REFRESH)
    out: list[str] = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f'<meta http-equiv="refresh" content="{refresh}">',
        "<title>DashScope fine-tune exporter: status</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>DashScope fine-tune exporter</h1>",
        f'<p class="mute">Version {_e(version)} \u00b7 as of <span id="now">{when(now)}</span>'
        f" \u00b7 refreshes every {duration(refresh)}</p>",
        _nav(links),
        "</header>",
    ]
    if not units:
        out.append("<section><p>No account is polled yet.</p></section>")
    for index, unit in enumerate(units, 1):
        _account(out, index, unit, now)
    out.append("</body></html>\n")
    return "".join(out).encode("utf-8")


def _nav(links: Links) -> str:
    # Relative links: they still work behind a proxy that serves the exporter under a prefix.
    items = [
        f'<a href=".{_e(links.metrics)}">Metrics</a>',
        '<a href="./-/healthy">Health</a>',
        '<a href="./-/ready">Readiness</a>',
    ]
    if links.alerts:
        items.append(f'<a href="{_e(links.alerts)}">Alerts (README)</a>')
    else:
        items.append('<span class="mute">Alerts: README.md, section \u201cThe alerts\u201d</span>')
    return f"<nav>{''.join(items)}</nav>"


def _account(out: list[str], index: int, unit: StatusUnit, now: float) -> None:
    settings = unit.settings
    state = unit.state()
    snapshot = state.snapshot
    stale = is_stale(state, settings, now)
    if not stale:
        # Fresh data; "failing": the latest sweep failed, the one before is still served.
        badge = (
            '<span class="badge b-ok">up</span>'
            if state.up
            else ('<span class="badge b-warn">failing</span>')
        )
    elif state.last_sweep_duration is None:
        badge = '<span class="badge b-warn">starting</span>'
    else:
        badge = '<span class="badge b-full">down</span>'
    out.append(
        f'<section id="account-{index}"><h2>Account <span class="account name">'
        f"{_e(settings.account)}</span>{badge}</h2>"
    )
    if snapshot is None:
        out.append("<p>No complete sweep yet: nothing is known of this account's jobs.</p>")
    else:
        if stale:
            out.append(
                f'<p class="bad">The data is stale: the last complete sweep is '
                f"{_ago(state.last_success, now)}. The figures below are from then; "
                "/metrics withholds them.</p>"
            )
        _quota(out, snapshot.jobs, settings)
        _counts(out, snapshot.jobs)
        _active(out, snapshot.jobs, snapshot.training, now)
        _ended(out, snapshot.jobs, now)
    _health(out, state, settings, unit.failures(), now, stale)
    out.append("</section>")


def _quota(out: list[str], jobs: Iterable[Job], settings: CollectorSettings) -> None:
    used = sum(1 for job in jobs if settings.quota.counts(job.status))
    limit = settings.quota_limit
    level, room = quota_words(used, limit)
    width = min(used / limit, 1.0) * 100 if limit > 0 else 100.0
    percent = f"{used / limit:.0%}" if limit > 0 else DASH
    out.append(
        f'<div class="quota {level}"><h3>Quota</h3>'
        f'<div class="bar" role="img" aria-label="{used} of {limit} jobs">'
        f'<span style="width:{width:.1f}%"></span></div>'
        f'<p><strong class="quota-used">{used}</strong> of <strong class="quota-limit">'
        f"{limit}</strong> jobs count against the limit ({percent}). "
        f'<span class="room">{_e(room)}</span></p></div>'
    )


def _chips(counts: Mapping[str, int], statuses: Sequence[str]) -> str:
    return " ".join(
        f'<span class="st" data-status="{_short(s)}">{_short(s)}&nbsp;<b>{counts[s]}</b></span>'
        for s in statuses
        if counts.get(s)
    )


def _counts(out: list[str], jobs: Sequence[Job]) -> None:
    """Jobs by model, each with its count by status (documented statuses first, in
    lifecycle order); the footer has the totals by status."""
    by_model: dict[str, Counter[str]] = {}
    for job in jobs:
        by_model.setdefault(job.model, Counter())[job.status] += 1
    totals: Counter[str] = Counter(job.status for job in jobs)
    statuses = [s for s in DOCUMENTED_STATUSES if s in totals]
    statuses += sorted(set(totals) - set(DOCUMENTED_STATUSES))
    out.append(f'<h3>Jobs <span class="mute jobs-total">{len(jobs)}</span></h3>')
    if not jobs:
        out.append("<p>The account has no fine-tune jobs.</p>")
        return
    out.append(
        '<table class="counts"><thead><tr><th>model</th><th class="n">jobs</th>'
        "<th>by status</th></tr></thead><tbody>"
    )
    for model in sorted(by_model):
        counts = by_model[model]
        out.append(
            f'<tr><th class="name model">{_short(model)}</th><td class="n">{counts.total()}</td>'
            f"<td>{_chips(counts, statuses)}</td></tr>"
        )
    out.append(
        f'</tbody><tfoot><tr><th>all models</th><td class="n">{len(jobs)}</td>'
        f'<td class="totals">{_chips(totals, statuses)}</td></tr></tfoot></table>'
    )


def _active(out: list[str], jobs: Iterable[Job], logs: Mapping[str, Training], now: float) -> None:
    active = sorted(
        (job for job in jobs if not job.terminal),
        key=lambda j: (j.created or 0.0, j.job_id),
        reverse=True,
    )
    out.append(f'<h3>Active jobs <span class="mute">{len(active)}</span></h3>')
    if not active:
        out.append("<p>No job is pending, queued or running.</p>")
        return
    out.append(
        '<div class="scroll"><table class="active rows"><thead><tr><th>name</th>'
        '<th>model</th><th>status</th><th class="n">age</th>'
        '<th class="n">progress</th><th class="n">loss</th></tr></thead><tbody>'
    )
    for job in active[:MAX_ACTIVE]:
        log = logs.get(job.job_id)
        progress = progress_ratio(log.epoch, job.n_epochs) if log is not None else None
        shown = DASH if progress is None else f"{progress:.0%}"
        loss = DASH
        if log is not None and (log.train_loss is not None or log.eval_loss is not None):
            loss = _number(log.train_loss)
            if log.eval_loss is not None:
                loss += f" / {_number(log.eval_loss)}"
        age = duration(now - job.created) if job.created is not None else DASH
        out.append(
            f'<tr><td class="first name" title="{_short(job.job_id)}">{_short(job.job_name)}</td>'
            f'<td class="name">{_short(job.model)}</td><td class="status">{_short(job.status)}</td>'
            f'<td class="n" data-l="age">{age}</td>'
            f'<td class="n" data-l="progress">{shown}</td>'
            f'<td class="n" data-l="loss">{loss}</td></tr>'
        )
    out.append("</tbody></table></div>")
    if len(active) > MAX_ACTIVE:
        out.append(f'<p class="mute">and {len(active) - MAX_ACTIVE} more (see /metrics)</p>')
    out.append('<p class="mute">loss: latest train / eval loss in the job\'s log.</p>')


def _ended(out: list[str], jobs: Iterable[Job], now: float) -> None:
    ended = sorted(
        (job for job in jobs if job.terminal),
        key=lambda j: (j.ended or j.created or 0.0, j.job_id),
        reverse=True,
    )
    out.append(
        f'<h3>Recently ended <span class="mute">{min(len(ended), MAX_ENDED)} of '
        f"{len(ended)}</span></h3>"
    )
    if not ended:
        out.append("<p>No job has ended yet.</p>")
        return
    out.append(
        '<div class="scroll"><table class="ended rows"><thead><tr><th>name</th>'
        '<th>model</th><th>outcome</th><th class="n">ended</th>'
        '<th class="n">tokens</th></tr></thead><tbody>'
    )
    for job in ended[:MAX_ENDED]:
        outcome = _short(job.status)
        if job.status == "FAILED":
            outcome = f'<span class="bad">{outcome}</span>'
        out.append(
            f'<tr><td class="first name" title="{_short(job.job_id)}">{_short(job.job_name)}</td>'
            f'<td class="name">{_short(job.model)}</td><td class="status">{outcome}</td>'
            f'<td class="n" data-l="ended">{_ago(job.ended, now)}</td>'
            f'<td class="n" data-l="tokens">{job.usage_tokens:,}</td></tr>'
        )
    out.append("</tbody></table></div>")


def _latest(count: int) -> str:
    if count == 1:
        return "The last failed request"
    return f"The last {count} failed requests, newest first"


def _health(
    out: list[str],
    state: ExporterState,
    settings: CollectorSettings,
    failures: Failures,
    now: float,
    stale: bool,
) -> None:
    last = (
        f"{when(state.last_success)} ({_ago(state.last_success, now)})"
        if state.last_success is not None
        else "never"
    )
    took = f"{state.last_sweep_duration:.2f}s" if state.last_sweep_duration is not None else DASH
    stale_text = (
        f'<span class="bad">yes</span> (older than {duration(settings.max_staleness)})'
        if stale
        else "no"
    )
    latest = "succeeded" if state.up else '<span class="bad">failed</span>'
    out.append(
        "<h3>API health</h3><dl>"
        f'<dt>last complete sweep</dt><dd class="last-sweep">{last}</dd>'
        f"<dt>latest sweep</dt><dd>{latest if state.last_sweep_duration is not None else 'not yet'}"
        f", took {took}</dd>"
        f'<dt>data stale</dt><dd class="stale">{stale_text}</dd></dl>'
    )
    if not failures.by_code:
        out.append("<p>No failed request since the exporter started.</p>")
        return
    out.append(
        '<div class="scroll"><table class="errors"><caption>Failed requests since start, '
        'by code</caption><thead><tr><th>code</th><th>HTTP status</th><th class="n">requests'
        "</th></tr></thead><tbody>"
    )
    for code, status, count in failures.by_code:
        out.append(
            f'<tr><td>{_e(code)}</td><td>{_e(status or "none")}</td><td class="n">{count}</td></tr>'
        )
    out.append(
        '</tbody></table></div><div class="scroll"><table class="failures rows"><caption>'
        f"{_latest(len(failures.recent))}</caption><thead><tr>"
        "<th>time</th><th>endpoint</th><th>HTTP</th><th>code</th><th>message</th>"
        "<th>request id</th></tr></thead><tbody>"
    )
    for failed in failures.recent:
        out.append(
            f'<tr><td class="first">{when(failed.at)}</td>'
            f'<td class="endpoint" data-l="endpoint">{_e(failed.endpoint)}</td>'
            f'<td class="http" data-l="HTTP">{_e(failed.http_status or "none")}</td>'
            f'<td class="code" data-l="code">{_e(failed.code)}</td>'
            f'<td class="message name">{_e(failed.message)}</td>'
            f'<td class="rid name" data-l="request id">{_e(failed.request_id) or DASH}</td></tr>'
        )
    out.append("</tbody></table></div>")
