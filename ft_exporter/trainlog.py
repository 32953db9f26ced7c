"""One line of a job's training log (the API's ``output.logs``) read as data, never run.

The log's format is not documented. Lines that matter are Python dict reprs written by
the training loop, ``{'loss': 1.62, 'learning_rate': 1.6e-04, 'epoch': 0.9}``; a diverging
run writes ``nan`` or ``inf`` there, which ``ast.literal_eval`` refuses, so this module
has a small parser of its own. What it accepts:

- **Where.** The whole line (surrounding whitespace aside) is one record, or one record
  after the timestamped prefix the log uses, ``2024-10-29 17:11:25,130 - INFO - ``
  (date, time with optional ``,`` or ``.`` fraction, a level of letters). Nothing may
  follow the closing brace. Any other line is free text.
- **Keys** are quoted, ``'...'`` or ``"..."``. Only :data:`RECOGNISED` keys are kept; the
  values of other keys are checked, then dropped.
- **Values** are numbers (sign, ints, decimals, exponents; ASCII digits only) or
  ``nan``/``inf``/``infinity`` with an optional sign in any case, kept as float NaN,
  +Inf, -Inf (an overflowing literal such as ``1e999`` is +Inf, as Python reads it). A
  quoted string is accepted too: for a recognised key it must hold such a number
  (``'1.6e-5'``, ``'nan'``, surrounding spaces allowed), since the API writes numbers as
  strings elsewhere; for another key any string without a backslash or line break.
- **All or nothing.** A record is read whole or not at all: a truncated record, a list,
  dict or other token as a value, a backslash escape, a duplicate key, a recognised key
  holding a non-numeric string, or text after ``}`` makes the line free text. A record
  without any recognised key counts as free text too. Nothing raises.
- **Size.** A line of more than 64 KiB in UTF-8 is not read at all: :data:`LineKind.TOO_LONG`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import Enum
from types import MappingProxyType

#: The keys whose values are kept; the training loop writes others that nothing uses.
RECOGNISED = frozenset(
    {"loss", "eval_loss", "learning_rate", "epoch", "train_loss", "train_runtime", "grad_norm"}
)
#: A longer line is skipped unread: no training loop writes one, and it bounds the work.
MAX_LINE_BYTES = 64 * 1024

# ASCII: no digit of another script, no dotless i (U+0131) as "i", ever reaches float().
_FLAGS = re.ASCII | re.IGNORECASE
_PREFIX = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[,.][0-9]+)?"
    r"[ \t]+-[ \t]+[a-z]+[ \t]+-[ \t]+",
    _FLAGS,
)
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?|infinity|inf|nan)", _FLAGS
)
_TIME = re.compile(
    r"[ \t]*([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[,.]([0-9]{1,6}))?",
    re.ASCII,
)
_STRING = re.compile(r"'([^'\\\r\n]*)'|\"([^\"\\\r\n]*)\"")


class LineKind(Enum):
    """What a line was, for counting."""

    RECORD = "record"
    TEXT = "text"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class Record:
    """The recognised values of one record line (never empty, read-only)."""

    values: Mapping[str, float]


def classify(line: str) -> tuple[LineKind, Record | None]:
    """The line's kind, and its record when it holds one."""
    if len(line) > MAX_LINE_BYTES or len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        return LineKind.TOO_LONG, None
    record = _record(line.strip())
    if record is None:
        return LineKind.TEXT, None
    return LineKind.RECORD, record


def parse_line(line: str) -> Record | None:
    """The line's record; None for free text or a skipped line."""
    return classify(line)[1]


def line_time(line: str, tz: tzinfo) -> float | None:
    """The time a timestamped line starts with (``2024-10-29 17:11:25,130 - ...``), in ``tz``.

    None for a line without one, or with an impossible date. Read without strptime: a
    first sight of a job may go through a thousand lines.
    """
    match = _TIME.match(line)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction = match[7] or ""
    try:
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()
    except ValueError:
        return None
    return stamp + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def planned_epochs(hyper_parameters: object) -> float | None:
    """``n_epochs`` of a job's ``hyper_parameters``, if a positive finite number.

    The API gives numbers or numbers as strings; anything else (a bool, a missing key,
    zero, a negative number, NaN, infinity, an int past a billion) is None, so that no
    progress is made up from it.
    """
    if not isinstance(hyper_parameters, Mapping):
        return None
    raw = hyper_parameters.get("n_epochs")
    if isinstance(raw, bool) or (isinstance(raw, int) and abs(raw) > 10**9):
        return None  # a bool is no count; float() of a huge int would raise
    if isinstance(raw, int | float):
        value: float | None = float(raw)
    elif isinstance(raw, str):
        value = _numeric_string(raw)
    else:
        return None
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return value


def _numeric_string(text: str) -> float | None:
    match = _NUMBER.fullmatch(text.strip())
    return float(match[0]) if match else None


def _record(text: str) -> Record | None:
    prefix = _PREFIX.match(text)
    pos = prefix.end() if prefix else 0
    if not text.startswith("{", pos):
        return None
    values = _items(text, pos + 1)
    return Record(MappingProxyType(values)) if values else None


def _items(text: str, pos: int) -> dict[str, float] | None:
    """The recognised values of the record whose ``{`` ends before ``pos``; None if malformed."""
    values: dict[str, float] = {}
    seen: set[str] = set()
    pos = _skip(text, pos)
    while not text.startswith("}", pos):
        key_match = _STRING.match(text, pos)
        if key_match is None:
            return None
        key = _unquote(key_match)
        if key in seen:
            return None
        seen.add(key)
        pos = _skip(text, key_match.end())
        if not text.startswith(":", pos):
            return None
        pos = _skip(text, pos + 1)
        number = _NUMBER.match(text, pos)
        if number is not None:
            value: float | None = float(number[0])
            pos = number.end()
        else:
            string = _STRING.match(text, pos)
            if string is None:
                return None
            value = _numeric_string(_unquote(string))
            pos = string.end()
        if key in RECOGNISED:
            if value is None:
                return None
            values[key] = value
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
            if text.startswith("}", pos):
                return None
        elif not text.startswith("}", pos):
            return None
    return values if pos == len(text) - 1 else None


def _skip(text: str, pos: int) -> int:
    """The first position from ``pos`` on that is not a space or a tab."""
    while text[pos : pos + 1] in (" ", "\t"):
        pos += 1
    return pos


def _unquote(match: re.Match[str]) -> str:
    single, double = match.group(1, 2)
    return single if single is not None else double
