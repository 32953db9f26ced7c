"""Structured logging (logfmt or JSON) that cannot leak the API key."""

from __future__ import annotations

import json
import logging
import sys
import time
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


def _logfmt_value(value: str) -> str:
    if value and not any(ch in value for ch in ' ="\\\n\t'):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _timestamp(record: logging.LogRecord) -> str:
    millis = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, str]:
    """The fields every line carries, in order, whatever the format."""
    fields = {
        "ts": _timestamp(record),
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
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
        return json.dumps(_fields(record, self), ensure_ascii=False)


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
    logging.getLogger("urllib3").setLevel(max(root.level, logging.INFO))
    return redact
