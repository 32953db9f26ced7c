"""parse_job and parse_time as they were before issue 12 made them cheap: the oracle.

Copied verbatim from ft_exporter/model.py at commit 7a94113 (only the Job they build and
the constants they share are imported). The fast paths must give exactly what these
give, for every input: tests/test_parse_time.py and tests/test_properties.py compare.
Never edit the functions to follow model.py; they are what "unchanged" means.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from ft_exporter.model import (
    _STATUS_ALIASES,
    CLIPPED,
    MAX_LABEL_CHARS,
    REPLACEMENT,
    UNKNOWN,
    Job,
    JobParseError,
)
from ft_exporter.trainlog import planned_epochs

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")
# Lone surrogates (valid JSON: "\udc80") cannot be encoded as UTF-8 and fail a whole scrape.
_SURROGATES = re.compile("[\ud800-\udfff]")
# What str.splitlines() breaks on, and tab: read as a space, so a label stays one line.
_LINE_BREAKS = re.compile("[\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029]")
# Every other C0 control, DEL and the C1 controls: NUL, escape sequences, bell.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
# Anything the three above would change.
_UNSAFE = re.compile("[\ud800-\udfff\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean_text(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Make text from the API safe as a label value: renderable, one line, bounded.

    Lone surrogates and control characters become U+FFFD, line breaks and tabs a
    space; the result is stripped and, past ``limit`` characters, clipped to end
    in an ellipsis. Idempotent, so applying it twice changes nothing.
    """
    if len(text) <= limit and text == text.strip() and not _UNSAFE.search(text):
        return text  # the common case, met for every job on every sweep: keep it cheap
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


def _raw_text(raw: object) -> str:
    """A string or number from the API as text, uncleaned; anything else as empty."""
    if isinstance(raw, str):
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


def parse_job(raw: Any, tz: tzinfo) -> Job:
    """Build a :class:`Job` from one element of ``output.jobs``.

    Only a missing or empty ``job_id`` is fatal (the job could not be told apart
    from others); every other field falls back to a neutral value. Every text
    field is cleaned here (:func:`clean_text`), so no value the API sends can
    fail a scrape.
    """
    if not isinstance(raw, Mapping):
        raise JobParseError(f"job is a {type(raw).__name__}, not an object")
    job_id = _job_id(raw.get("job_id"))
    tailable = job_id == _raw_text(raw.get("job_id")) and job_id not in (".", "..")
    if not job_id:
        raise JobParseError("job has no job_id")
    model = _text(raw.get("model")) or _text(raw.get("base_model")) or UNKNOWN
    return Job(
        job_id=job_id,
        job_name=_text(raw.get("job_name")) or job_id,
        status=normalise_status(raw.get("status")),
        model=model,
        base_model=_text(raw.get("base_model")) or model,
        training_type=clean_text(_raw_text(raw.get("training_type")).lower()) or "sft",
        finetuned_output=_text(raw.get("finetuned_output")),
        created=parse_time(raw.get("create_time"), tz),
        ended=parse_time(raw.get("end_time"), tz),
        usage_tokens=_tokens(raw.get("usage")),
        n_epochs=planned_epochs(raw.get("hyper_parameters")),
        tailable=tailable,
    )
