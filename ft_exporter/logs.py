"""Structured logging (logfmt or JSON) that cannot leak the API key or be forged.

Messages carry text that clients and the API control (request lines, error
messages), so both formats escape every character that could start a new line,
drive the terminal of whoever reads the log, or reorder what it shows: each
record is one physical line of printable text, whatever went into it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TextIO

from ft_exporter.secret import MIN_SECRET_LENGTH, REDACTED

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class RedactFilter(logging.Filter):
    """Replace every occurrence of the secrets in a record's final message."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Redact this secret too, from now on (a rotated key; the old ones stay redacted)."""
        # Very short "secrets" (a test key like "k") would garble every message.
        if len(secret) >= MIN_SECRET_LENGTH and secret not in self.secrets:
            # Longest first, so a key that contains another is never half redacted. The
            # tuple is replaced, not changed, for threads that are logging meanwhile.
            self.secrets = tuple(sorted((*self.secrets, secret), key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            message = message.replace(secret, REDACTED)
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, REDACTED)
        record.msg, record.args = message, None
        return True


#: Never written raw, besides the C0 controls: DEL, C1 controls (U+0085 and U+009B
#: included), the bidirectional controls (U+061C, U+200E/F, U+202A-E, U+2066-9), the line
#: and paragraph separators U+2028/9 and lone surrogates (from bytes that were not UTF-8).
_UNSAFE_ABOVE_C0 = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = r"\x00-\x1f" + _UNSAFE_ABOVE_C0
#: What a logfmt value escapes: the unsafe characters, the quote and the backslash.
_LOGFMT_ESCAPED = re.compile(rf'[{_UNSAFE}"\\]')
#: What makes a logfmt value need quotes: the above, a space or an equals sign.
_LOGFMT_QUOTED = re.compile(rf'[{_UNSAFE}"\\ =]')
#: What json.dumps(ensure_ascii=False) leaves raw: it escapes the C0 controls itself.
_JSON_RAW = re.compile(rf"[{_UNSAFE_ABOVE_C0}]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    """JSON's escapes (``\\n``, ``\\u001b``), which logfmt readers such as go-logfmt decode."""
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _logfmt_value(value: str) -> str:
    if value and not _LOGFMT_QUOTED.search(value):
        return value
    return '"' + _LOGFMT_ESCAPED.sub(_escape, value) + '"'


def _timestamp(record: logging.LogRecord) -> str:
    millis = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"


#: The account the current thread works for (each account sweeps on a thread of its own).
_context = threading.local()


def set_account(name: str | None) -> None:
    """Say which account this thread's log lines are about (None: no account)."""
    _context.account = name


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, str]:
    """The fields every line carries, in order, whatever the format."""
    fields = {
        "ts": _timestamp(record),
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
    }
    account = getattr(_context, "account", None)
    if account is not None:
        fields["account"] = account
    fields["msg"] = record.getMessage()
    if record.exc_text:
        fields["err"] = record.exc_text
    elif record.exc_info:
        fields["err"] = formatter.formatException(record.exc_info)
    return fields


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record, self).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Non-ASCII stays readable; json.dumps already escapes C0 controls, the rest is ours.
        return _JSON_RAW.sub(_escape, json.dumps(_fields(record, self), ensure_ascii=False))


def setup(level: str, fmt: str, secrets: list[str], stream: TextIO = sys.stderr) -> RedactFilter:
    """Configure the root logger once, for the whole process; returns its redaction filter."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    redact = RedactFilter(secrets)
    handler.addFilter(redact)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # urllib3 logs full URLs at debug; they carry no key, but keep the noise down.
    # asyncio's debug lines (its selector, slow callbacks) say nothing to an operator.
    for noisy in ("urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.INFO))
    return redact


#: Identical failures are logged once, then again at most this often.
REPEAT_LOG_INTERVAL = 600.0


def crash_key(err: BaseException) -> tuple[str, ...]:
    """The exception's type and the place it was raised: stable across repeats of a bug."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (type(err).__name__, where)


class FailureLog:
    """Logs a failure once, then the same failure again at most every REPEAT_LOG_INTERVAL.

    A failure that repeats every few seconds would otherwise flood the log; one that
    changes is news and is logged at once.
    """

    def __init__(
        self,
        logger: logging.Logger,
        monotonic: Callable[[], float],
        level: int = logging.ERROR,
    ) -> None:
        self._log = logger
        self._monotonic = monotonic
        self._level = level
        self._last: tuple[str, ...] | None = None
        self._logged_at = 0.0
        self._repeats = 0

    def failed(
        self,
        key: tuple[str, ...],
        first: str,
        repeat: str,
        message: str,
        exc: BaseException | None = None,
    ) -> None:
        """Log ``first % message`` (with ``exc``'s traceback) for a new failure, else maybe
        ``repeat % (count, message)``; the traceback is not repeated."""
        now = self._monotonic()
        if key != self._last:
            self._last = key
            self._repeats = 1
            self._logged_at = now
            self._log.log(self._level, first, message, exc_info=exc)
            return
        self._repeats += 1
        if now - self._logged_at >= REPEAT_LOG_INTERVAL:
            self._logged_at = now
            self._log.log(self._level, repeat, self._repeats, message)

    def recovered(self) -> int:
        """Forget the failure; returns how many times in a row it happened (0: none)."""
        repeats = self._repeats  # 0 unless a failure is current
        self._last = None
        self._repeats = 0
        return repeats
