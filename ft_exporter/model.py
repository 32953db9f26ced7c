"""Fine-tune jobs as plain data, and the tolerant parser that builds them.

The API's documentation is loose (misspelt statuses, numbers as strings,
undocumented fields), so parsing accepts every shape seen in the wild and
rejects only a job it cannot identify.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Every status the vendor documents, in lifecycle order. Zero-filled in metrics.
DOCUMENTED_STATUSES: tuple[str, ...] = (
    "PENDING",
    "QUEUING",
    "RUNNING",
    "CANCELING",
    "SUCCEEDED",
    "FAILED",
    "CANCELED",
)
TERMINAL_STATUSES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})

# Spellings seen in the vendor's docs and SDK, mapped to the canonical status.
_STATUS_ALIASES = {"SUCCEED": "SUCCEEDED", "SUCCESS": "SUCCEEDED", "CANCELLED": "CANCELED"}

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")
_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$")

#: Training type and status placeholders when the API omits them.
UNKNOWN = "unknown"


class JobParseError(ValueError):
    """A job object that cannot be identified (no usable ``job_id``)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One fine-tune job, reduced to what the exporter reports."""

    job_id: str
    job_name: str
    status: str
    model: str
    base_model: str
    training_type: str
    finetuned_output: str
    created: float | None
    ended: float | None
    usage_tokens: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def parse_timezone(value: str) -> tzinfo:
    """Read ``UTC``, ``+08:00``, ``-0530``, ``UTC+8`` or an IANA name such as ``Asia/Shanghai``."""
    text = value.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    match = _OFFSET_RE.match(text.upper())
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise ValueError(f"timezone offset out of range: {value!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone: {value!r}") from exc


def normalise_status(raw: object) -> str:
    """Upper-case a status and map known misspellings; unknown statuses pass through."""
    if not isinstance(raw, str) or not raw.strip():
        return UNKNOWN.upper()
    status = raw.strip().upper()
    return _STATUS_ALIASES.get(status, status)


def parse_time(raw: object, tz: tzinfo) -> float | None:
    """Turn ``"2024-10-29 16:53:53"`` (zone-less, in ``tz``) into a Unix timestamp."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int | float):
        # Epoch seconds or milliseconds: not documented, but cheap to accept.
        seconds = float(raw) / 1000.0 if raw > 1e11 else float(raw)
        return seconds if seconds > 0 else None
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=tz).timestamp()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.timestamp()


def parse_learning_rate(raw: object) -> float | None:
    """``learning_rate`` arrives as ``"1.6e-5"`` or ``0.000016``; accept both."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return None
    return None


def _text(raw: object, default: str = "") -> str:
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    return default


def _tokens(raw: object) -> int:
    """``usage`` may be missing, null, a number or a numeric string; never negative."""
    if isinstance(raw, bool) or raw is None:
        return 0
    if isinstance(raw, int):
        return max(raw, 0)
    if isinstance(raw, float):
        return max(int(raw), 0) if raw == raw and abs(raw) != float("inf") else 0
    if isinstance(raw, str):
        try:
            return max(int(float(raw.strip())), 0)
        except (ValueError, OverflowError):
            return 0
    return 0


def parse_job(raw: Any, tz: tzinfo) -> Job:
    """Build a :class:`Job` from one element of ``output.jobs``.

    Only a missing or empty ``job_id`` is fatal (the job could not be told apart
    from others); every other field falls back to a neutral value.
    """
    if not isinstance(raw, Mapping):
        raise JobParseError(f"job is a {type(raw).__name__}, not an object")
    job_id = _text(raw.get("job_id"))
    if not job_id:
        raise JobParseError("job has no job_id")
    model = _text(raw.get("model")) or _text(raw.get("base_model")) or UNKNOWN
    return Job(
        job_id=job_id,
        job_name=_text(raw.get("job_name")) or job_id,
        status=normalise_status(raw.get("status")),
        model=model,
        base_model=_text(raw.get("base_model")) or model,
        training_type=_text(raw.get("training_type")).lower() or "sft",
        finetuned_output=_text(raw.get("finetuned_output")),
        created=parse_time(raw.get("create_time"), tz),
        ended=parse_time(raw.get("end_time"), tz),
        usage_tokens=_tokens(raw.get("usage")),
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The result of one complete sweep: every job the account holds, de-duplicated."""

    jobs: tuple[Job, ...]
    taken_at: float
    malformed_jobs: int = 0


@dataclass(frozen=True, slots=True)
class ExporterState:
    """What the poller publishes after every sweep; replaced whole, never mutated."""

    snapshot: Snapshot | None = None
    up: bool = False
    last_success: float | None = None
    last_sweep_duration: float | None = None
