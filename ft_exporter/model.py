"""Fine-tune jobs as plain data, and the tolerant parser that builds them.

The API's documentation is loose (misspelt statuses, numbers as strings,
undocumented fields), so parsing accepts every shape seen in the wild and
rejects only a job it cannot identify.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ft_exporter.trainlog import planned_epochs

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
# The documented "2024-10-29 16:53:53" and its near relatives, ASCII digits only, nothing
# around them. strptime reads every such string as fromisoformat does, or rejects it and
# leaves it to fromisoformat (see parse_time): fromisoformat is the fast path for them.
_PLAIN_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
)
_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$")

#: Training type and status placeholders when the API omits them.
UNKNOWN = "unknown"

#: Longest text taken from the API into a label value, in characters (job ids included).
MAX_LABEL_CHARS = 256
#: Ends a value clipped to MAX_LABEL_CHARS, so a clipped value reads as one.
CLIPPED = "\u2026"
#: Stands in for what cannot or should not be shown: a lone surrogate, a control character.
REPLACEMENT = "\ufffd"
# Lone surrogates (valid JSON: "\udc80") cannot be encoded as UTF-8 and fail a whole scrape.
_SURROGATES = re.compile("[\ud800-\udfff]")
# What str.splitlines() breaks on, and tab: read as a space, so a label stays one line.
_LINE_BREAKS = re.compile("[\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029]")
# Every other C0 control, DEL and the C1 controls: NUL, escape sequences, bell.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
# Anything the three above would change.
_UNSAFE = re.compile("[\ud800-\udfff\x00-\x1f\x7f-\x9f\u2028\u2029]")


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
    #: ``n_epochs`` of its ``hyper_parameters``, when a usable number.
    n_epochs: float | None = None
    #: False when the API's job_id had to be cleaned: its log cannot be asked for by it.
    tailable: bool = True

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def parse_timezone(value: str) -> tzinfo:
    """Read ``UTC``, ``+08:00``, ``-0530``, ``UTC+8`` or an IANA name such as ``Asia/Shanghai``."""
    text = value.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return UTC
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


def clean_text(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Make text from the API safe as a label value: renderable, one line, bounded.

    Lone surrogates and control characters become U+FFFD, line breaks and tabs a
    space; the result is stripped and, past ``limit`` characters, clipped to end
    in an ellipsis. Idempotent, so applying it twice changes nothing.
    """
    # The common case, met for every job on every sweep: keep it cheap. ASCII text is
    # unsafe exactly where it is not printable (C0 controls and DEL).
    if (
        len(text) <= limit
        and text == text.strip()
        and (text.isprintable() if text.isascii() else not _UNSAFE.search(text))
    ):
        return text
    text = _SURROGATES.sub(REPLACEMENT, text)
    text = _CONTROLS.sub(REPLACEMENT, _LINE_BREAKS.sub(" ", text)).strip()
    if len(text) > limit:
        return text[: limit - 1] + CLIPPED
    return text


def normalise_status(raw: object) -> str:
    """Upper-case a status and map known misspellings; unknown statuses pass through."""
    # Cleaned after upper(), which can lengthen text ("\u00df" becomes "SS").
    status = clean_text(raw.upper()) if isinstance(raw, str) else ""
    if not status:
        return UNKNOWN.upper()
    return _STATUS_ALIASES.get(status, status)


def parse_time(raw: object, tz: tzinfo) -> float | None:
    """Turn ``"2024-10-29 16:53:53"`` (zone-less, in ``tz``) into a Unix timestamp.

    Twice per job on every sweep, so the documented shape skips strptime: for a string
    :data:`_PLAIN_TIME` matches, strptime either reads the same fields fromisoformat
    reads or fails, and then the slow path asks fromisoformat itself. The result is the
    float :func:`_parse_time_slow` gives for every input (tests/test_parse_time.py checks).
    """
    if type(raw) is str:
        text = raw.strip()
        if _PLAIN_TIME.fullmatch(text):
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return _parse_time_slow(raw, tz)  # no such date, or a Python that reads less
            if type(tz) is timezone:
                # A fixed offset: plain arithmetic, the same timedelta timestamp() takes.
                return (parsed - _local_epoch(tz)).total_seconds()
            return parsed.replace(tzinfo=tz).timestamp()
    return _parse_time_slow(raw, tz)


def _parse_time_slow(raw: object, tz: tzinfo) -> float | None:
    """What parse_time does with anything unusual: strptime's forms, then ISO 8601."""
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


_local_epochs: dict[timezone, datetime] = {}


def _local_epoch(tz: timezone) -> datetime:
    """The Unix epoch as a naive wall-clock time in ``tz``."""
    epoch = _local_epochs.get(tz)
    if epoch is None:
        epoch = datetime(1970, 1, 1) + tz.utcoffset(None)
        if len(_local_epochs) >= 64:  # zones come from the configuration: never this many
            _local_epochs.clear()
        _local_epochs[tz] = epoch
    return epoch


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


def _raw_text(raw: object) -> str:
    """A string or number from the API as text, uncleaned; anything else as empty."""
    if type(raw) is str or isinstance(raw, str):  # the first test is the cheap one
        return raw.strip()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)  # JSON integers can run to thousands of digits: cleaned after
    return ""


def _text(raw: object) -> str:
    return clean_text(_raw_text(raw))


def _job_id(raw: object) -> str:
    """The job's id as a label value; distinct ids from the API stay distinct.

    An id that cleaning would change (too long, control characters, lone
    surrogates) is cleaned, clipped and suffixed with a digest of the original,
    so two such ids never merge into one job and the id is the same every sweep.
    """
    text = _raw_text(raw)
    cleaned = clean_text(text)
    if cleaned == text:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{clean_text(text, MAX_LABEL_CHARS - len(digest) - 1)}~{digest}"


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


#: Most values one table of shared strings holds; a table that fills starts afresh, so
#: an API sending ever new values costs at most this many entries per table.
SHARED_VALUES = 1024
#: Longest text shared; longer text is cleaned for each job, as it comes.
SHARED_MAX_CHARS = 128
# Raw text to the value parse_job makes of it, one table per kind of value, for every
# account alike. Exact str keys only (a key then equals only the same text), at most
# SHARED_MAX_CHARS long: a table holds about 1 MiB at worst (4 bytes a character, key
# and value), a few dozen KiB for a real account.
_shared_names: dict[str, str] = {}  # model and base_model
_shared_statuses: dict[str, str] = {}
_shared_types: dict[str, str] = {}
# n_epochs (an int or a short string) to what planned_epochs makes of it.
_shared_epochs: dict[int | str, float | None] = {}
_MISSING = object()


def _shared(table: dict[str, str], raw: object, make: Callable[[object], str]) -> str:
    """``make(raw)``, the same object for every job that sends the same text.

    A 50,000-job account names a handful of models, statuses and types: one string
    each instead of one per job, and no cleaning when the text was seen before.
    """
    if type(raw) is not str or len(raw) > SHARED_MAX_CHARS:
        return make(raw)
    value = table.get(raw)
    if value is None:
        value = make(raw)
        if len(table) >= SHARED_VALUES:
            table.clear()
        table[raw] = value
    return value


def _type_text(raw: object) -> str:
    return clean_text(_raw_text(raw).lower())


def _epochs(hyper_parameters: object) -> float | None:
    """:func:`planned_epochs`, one float object for every job with the same ``n_epochs``."""
    if type(hyper_parameters) is not dict:
        return planned_epochs(hyper_parameters)
    raw = hyper_parameters.get("n_epochs")
    key: int | str
    if (type(raw) is int and abs(raw) <= 10**9) or (
        type(raw) is str and len(raw) <= SHARED_MAX_CHARS
    ):
        key = raw  # past a billion, planned_epochs gives None: huge ints stay out
    else:
        return planned_epochs(hyper_parameters)  # bool, float, None, huge: not shared
    value = _shared_epochs.get(key, _MISSING)
    if value is _MISSING:
        value = planned_epochs(hyper_parameters)  # reads n_epochs alone
        if len(_shared_epochs) >= SHARED_VALUES:
            _shared_epochs.clear()
        _shared_epochs[key] = value
    return value  # type: ignore[return-value]


def parse_job(raw: Any, tz: tzinfo) -> Job:
    """Build a :class:`Job` from one element of ``output.jobs``.

    Only a missing or empty ``job_id`` is fatal (the job could not be told apart
    from others); every other field falls back to a neutral value. Every text
    field is cleaned here (:func:`clean_text`), so no value the API sends can
    fail a scrape. Values that repeat across jobs (model, status, type, epochs)
    are shared, and a ``job_name`` equal to the id is the id: a job costs little
    more than its id, output name and numbers.
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise JobParseError(f"job is a {type(raw).__name__}, not an object")
    get = raw.get
    raw_id = get("job_id")
    job_id = _job_id(raw_id)
    tailable = job_id == _raw_text(raw_id) and job_id not in (".", "..")
    if not job_id:
        raise JobParseError("job has no job_id")
    model = (
        _shared(_shared_names, get("model"), _text)
        or _shared(_shared_names, get("base_model"), _text)
        or UNKNOWN
    )
    job_name = _text(get("job_name"))
    if not job_name or job_name == job_id:
        job_name = job_id
    return _new_job(
        job_id,
        job_name,
        _shared(_shared_statuses, get("status"), normalise_status),
        model,
        _shared(_shared_names, get("base_model"), _text) or model,
        _shared(_shared_types, get("training_type"), _type_text) or "sft",
        _text(get("finetuned_output")),
        parse_time(get("create_time"), tz),
        parse_time(get("end_time"), tz),
        _tokens(get("usage")),
        _epochs(get("hyper_parameters")),
        tailable,
    )


# Job's own __init__ sets each field through object.__setattr__ (it is frozen), which
# costs more than all the rest of parse_job; the slots' descriptors set them directly.
# Job has no __post_init__ to skip (tests/test_model.py checks _new_job against Job).
(
    _set_job_id,
    _set_job_name,
    _set_status,
    _set_model,
    _set_base_model,
    _set_training_type,
    _set_finetuned_output,
    _set_created,
    _set_ended,
    _set_usage_tokens,
    _set_n_epochs,
    _set_tailable,
) = (vars(Job)[f.name].__set__ for f in fields(Job))
_allocate = object.__new__


def _new_job(
    job_id: str,
    job_name: str,
    status: str,
    model: str,
    base_model: str,
    training_type: str,
    finetuned_output: str,
    created: float | None,
    ended: float | None,
    usage_tokens: int,
    n_epochs: float | None,
    tailable: bool,
) -> Job:
    """``Job(...)`` with every field given, at a third of the cost."""
    job: Job = _allocate(Job)
    _set_job_id(job, job_id)
    _set_job_name(job, job_name)
    _set_status(job, status)
    _set_model(job, model)
    _set_base_model(job, base_model)
    _set_training_type(job, training_type)
    _set_finetuned_output(job, finetuned_output)
    _set_created(job, created)
    _set_ended(job, ended)
    _set_usage_tokens(job, usage_tokens)
    _set_n_epochs(job, n_epochs)
    _set_tailable(job, tailable)
    return job


@dataclass(frozen=True, slots=True)
class Training:
    """What a job's training log said, as far as the exporter has read it.

    Values are None until a line has given them; NaN and infinities are kept as sent.
    """

    train_loss: float | None = None
    eval_loss: float | None = None
    #: The lowest finite eval_loss seen.
    eval_loss_min: float | None = None
    learning_rate: float | None = None
    #: The highest finite epoch seen (fractional).
    epoch: float | None = None
    #: The log's ``total`` as last read.
    log_lines: int = 0
    #: When the log last grew (see the tailer for first sight).
    last_growth: float | None = None
    #: Lines read that held no record (free text and skipped lines included).
    unparsed_lines: int = 0
    #: When the exporter saw the job start running; None when it was running at first sight.
    running_since: float | None = None


def progress_ratio(epoch: float | None, epochs: float | None) -> float | None:
    """Epochs reached over epochs planned, clamped to 0..1; None when either is unknown."""
    if epoch is None or epochs is None or not math.isfinite(epoch) or epochs <= 0:
        return None
    return min(max(epoch / epochs, 0.0), 1.0)


def estimated_end(started: float | None, now: float, progress: float | None) -> float | None:
    """When a job ends if it keeps the pace it has had since ``started``; None before progress."""
    if started is None or progress is None or progress <= 0 or now <= started:
        return None
    return started + (now - started) / progress


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The result of one complete sweep: every job the account holds, de-duplicated."""

    jobs: tuple[Job, ...]
    taken_at: float
    malformed_jobs: int = 0
    #: What the training logs said, by job_id, for the jobs whose log was read.
    training: Mapping[str, Training] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ExporterState:
    """What the poller publishes after every sweep; replaced whole, never mutated."""

    snapshot: Snapshot | None = None
    up: bool = False
    last_success: float | None = None
    last_sweep_duration: float | None = None
