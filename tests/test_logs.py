"""The log: one printable line per record, in logfmt or JSON, never holding the API key.

Records go through ``logs.setup`` exactly as the exporter configures them, into a
string stream, so what is asserted is the line an operator would read.
"""

from __future__ import annotations

import inspect
import io
import ipaddress
import json
import logging
import sys
from collections.abc import Callable, Iterator

import pytest
from leaks import leaked

from ft_exporter import logs
from ft_exporter.client import classify_response
from ft_exporter.logs import REPEAT_LOG_INTERVAL, FailureLog, crash_key
from ft_exporter.secret import MIN_SECRET_LENGTH, REDACTED, Secret

KEY = "sk-0123456789abcdef0123456789abcdef"
ROTATED = "sk-fedcba9876543210fedcba9876543210"
LOG = logging.getLogger("ft_exporter.test_logs")
FORMATS = ["logfmt", "json"]

#: Sets the root logger up like the exporter does; returns the redaction filter and the
#: lines written so far.
Setup = Callable[..., tuple[logs.RedactFilter, Callable[[], list[str]]]]


@pytest.fixture
def setup() -> Iterator[Setup]:
    """logs.setup on the root logger, put back as it was afterwards (pytest's own capture)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    noisy = {name: logging.getLogger(name).level for name in ("urllib3", "asyncio")}

    def configure(
        fmt: str = "logfmt", secrets: tuple[str, ...] = (KEY,), level: str = "info"
    ) -> tuple[logs.RedactFilter, Callable[[], list[str]]]:
        stream = io.StringIO()
        redact = logs.setup(level, fmt, list(secrets), stream)
        return redact, lambda: stream.getvalue().splitlines()

    yield configure
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


def fields(fmt: str, line: str) -> dict[str, str]:
    """The fields of one line; logfmt values here hold no escaped quote."""
    if fmt == "json":
        parsed: dict[str, str] = json.loads(line)
        return parsed
    out: dict[str, str] = {}
    rest = line
    while rest:
        name, _, rest = rest.partition("=")
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('" ')
            value = value.removesuffix('"')
        else:
            value, _, rest = rest.partition(" ")
        out[name] = value
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_key_in_the_message_is_redacted(setup: Setup, fmt: str) -> None:
    _, lines = setup(fmt)
    LOG.warning(f"calling with {KEY} now")
    [line] = lines()
    assert fields(fmt, line)["msg"] == f"calling with {REDACTED} now"
    assert leaked(line, KEY) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_key_in_the_arguments_is_redacted(setup: Setup, fmt: str) -> None:
    _, lines = setup(fmt)
    LOG.error("header %s, again %r", f"Bearer {KEY}", KEY)
    [line] = lines()
    assert fields(fmt, line)["msg"] == f"header Bearer {REDACTED}, again '{REDACTED}'"
    assert leaked(line, KEY) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_key_in_an_exception_and_its_traceback_is_redacted(setup: Setup, fmt: str) -> None:
    _, lines = setup(fmt)
    try:
        raise ValueError(f"the API refused {KEY}")
    except ValueError:
        LOG.exception("sweep failed")
    [line] = lines()
    parsed = fields(fmt, line)
    assert parsed["msg"] == "sweep failed"
    err = parsed["err"] if fmt == "json" else parsed["err"].replace("\\n", "\n")
    assert err.startswith("Traceback (most recent call last):\n")
    assert err.endswith(f"ValueError: the API refused {REDACTED}")
    assert leaked(line, KEY) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_keys_added_by_rotation_are_redacted_with_the_old_ones(setup: Setup, fmt: str) -> None:
    redact, lines = setup(fmt)
    LOG.info("new key %s", ROTATED)  # not known yet: this is what add() is for
    redact.add(ROTATED)
    LOG.info("old %s new %s", KEY, ROTATED)
    before, after = lines()
    assert fields(fmt, before)["msg"] == f"new key {ROTATED}"
    assert fields(fmt, after)["msg"] == f"old {REDACTED} new {REDACTED}"
    assert redact.secrets == (KEY, ROTATED)


def test_a_key_holding_another_is_redacted_whole(setup: Setup) -> None:
    redact, lines = setup("json", secrets=(KEY,))
    longer = KEY + "-extended"
    redact.add(longer)
    redact.add(longer)  # twice: still one entry
    LOG.info("%s", longer)
    assert redact.secrets == (longer, KEY)
    assert fields("json", lines()[0])["msg"] == REDACTED


def test_secrets_shorter_than_the_minimum_are_left_alone(setup: Setup) -> None:
    short, enough = "x" * (MIN_SECRET_LENGTH - 1), "y" * MIN_SECRET_LENGTH
    redact, lines = setup("logfmt", secrets=(short, enough))
    assert redact.secrets == (enough,)
    LOG.info("%s|%s", short, enough)
    assert fields("logfmt", lines()[0])["msg"] == f"{short}|{REDACTED}"


def test_without_secrets_records_pass_unchanged(setup: Setup) -> None:
    redact, lines = setup("logfmt", secrets=())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    assert redact.filter(record) is True
    assert (record.msg, record.args) == ("a %s", ("b",))
    LOG.info("plain %d", 3)
    assert fields("logfmt", lines()[0])["msg"] == "plain 3"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_key_echoed_at_any_offset_from_the_clip_leaves_no_fragment(
    setup: Setup, fmt: str
) -> None:
    """The client scrubs API text before the 200-character clip; the log filter only knows
    whole keys, so a clipped key would reach the line as a fragment if the client did not."""
    _, lines = setup(fmt)
    for padding in range(200 + 1):
        body = json.dumps({"code": "InvalidParameter", "message": "p" * padding + KEY})
        LOG.warning("request failed: %s", classify_response(400, body.encode(), Secret(KEY)))
    written = lines()
    assert len(written) == 201
    for line in written:
        assert leaked(line, KEY) == [], line


def record(msg: str, level: int = logging.INFO, name: str = "ft_exporter.x") -> logging.LogRecord:
    """A record made at a fixed time: 1970-01-01T00:00:00.005Z."""
    made = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    made.created, made.msecs = 0.005, 5.0
    return made


def test_logfmt_line_exactly() -> None:
    line = logs.LogfmtFormatter().format(record("poll done", logging.WARNING))
    assert line == 'ts=1970-01-01T00:00:00.005Z level=warn logger=ft_exporter.x msg="poll done"'
    assert logs.LogfmtFormatter().format(record("ok", logging.DEBUG)) == (
        "ts=1970-01-01T00:00:00.005Z level=debug logger=ft_exporter.x msg=ok"
    )


def test_json_line_exactly() -> None:
    line = logs.JsonFormatter().format(record("poll done", logging.ERROR))
    assert line == (
        '{"ts": "1970-01-01T00:00:00.005Z", "level": "error", "logger": "ft_exporter.x", '
        '"msg": "poll done"}'
    )


@pytest.mark.parametrize(
    ("msg", "value"),
    [
        ("", '""'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\nlines\r\tend", '"two\\nlines\\r\\tend"'),
        ("\x1b[31mred", '"\\u001b[31mred"'),
        ("bidi\u202eevil", '"bidi\\u202eevil"'),
        ("del\x7f", '"del\\u007f"'),
        ("caf\u00e9", "caf\u00e9"),
    ],
)
def test_logfmt_escapes_what_could_forge_a_line(msg: str, value: str) -> None:
    line = logs.LogfmtFormatter().format(record(msg))
    assert line.split(" logger=ft_exporter.x msg=", 1)[1] == value


@pytest.mark.parametrize(
    ("msg", "value"),
    [
        ("two\nlines", '"two\\nlines"'),
        ("\x1b[31m", '"\\u001b[31m"'),
        ("bidi\u202eevil\u2028", '"bidi\\u202eevil\\u2028"'),
        ("c1\x85\x9b", '"c1\\u0085\\u009b"'),
        ("caf\u00e9", '"caf\u00e9"'),
    ],
)
def test_json_escapes_what_could_forge_a_line(msg: str, value: str) -> None:
    line = logs.JsonFormatter().format(record(msg))
    assert line.split('"msg": ', 1)[1] == value + "}"
    assert json.loads(line)["msg"] == msg


def test_an_exception_is_one_escaped_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, sys.exc_info())
    made.created, made.msecs = 0.005, 5.0
    line = logs.LogfmtFormatter().format(made)
    as_json = json.loads(logs.JsonFormatter().format(made))
    assert as_json["err"].startswith("Traceback (most recent call last):\n")
    assert as_json["err"].endswith("RuntimeError: boom")
    assert "\n" not in line
    assert line.startswith('ts=1970-01-01T00:00:00.005Z level=error logger=x msg=m err="Traceback')
    assert line.endswith('RuntimeError: boom"')


@pytest.mark.parametrize(
    ("level", "root", "noisy"),
    [
        ("debug", logging.DEBUG, logging.INFO),
        ("info", logging.INFO, logging.INFO),
        ("warn", logging.WARNING, logging.WARNING),
        ("error", logging.ERROR, logging.ERROR),
        ("loud", logging.INFO, logging.INFO),
    ],
)
def test_setup_levels(setup: Setup, level: str, root: int, noisy: int) -> None:
    setup("logfmt", level=level)
    assert logging.getLogger().level == root
    assert logging.getLogger("urllib3").level == noisy
    assert logging.getLogger("asyncio").level == noisy


def test_setup_replaces_the_handlers_and_picks_the_format(setup: Setup) -> None:
    setup("json")
    redact, lines = setup("logfmt")
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.LogfmtFormatter)
    assert handler.filters == [redact]
    setup("json")
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.JsonFormatter)
    LOG.debug("hidden at info")
    assert lines() == []


# --- FailureLog: a failure once, its repeats rarely, its recovery counted ----------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_log_logs_a_failure_once_then_at_most_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.failures")
    clock = _Clock()
    failures = FailureLog(logging.getLogger("test.failures"), clock)
    first, repeat = "failed: %s", "still failing (%d times): %s"
    boom = ValueError("boom")
    failures.failed(("A",), first, repeat, "a", boom)
    failures.failed(("A",), first, repeat, "a")
    clock.now += REPEAT_LOG_INTERVAL - 0.5
    failures.failed(("A",), first, repeat, "a")
    clock.now += 0.5
    failures.failed(("A",), first, repeat, "a")
    clock.now += REPEAT_LOG_INTERVAL - 0.5  # the interval runs from the repeat just logged
    failures.failed(("A",), first, repeat, "a")
    clock.now += 0.5
    failures.failed(("A",), first, repeat, "a")
    failures.failed(("B",), first, repeat, "b")
    assert [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("ERROR", "failed: a", True),
        ("ERROR", "still failing (4 times): a", False),
        ("ERROR", "still failing (6 times): a", False),
        ("ERROR", "failed: b", False),
    ]
    assert caplog.records[0].exc_info is not None
    assert caplog.records[0].exc_info[1] is boom
    assert failures.recovered() == 1  # B, once
    assert failures.recovered() == 0  # nothing since
    failures.failed(("B",), first, repeat, "b")  # the same key after a recovery is news
    assert caplog.records[-1].getMessage() == "failed: b"
    assert len(caplog.records) == 5


def test_failure_log_starts_clean() -> None:
    failures = FailureLog(logging.getLogger("test.failures"), _Clock())
    assert failures.recovered() == 0


def test_failure_log_logs_at_the_level_it_was_given(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.failures")
    failures = FailureLog(logging.getLogger("test.failures"), _Clock(), logging.WARNING)
    failures.failed(("A",), "failed: %s", "still (%d): %s", "a")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.WARNING, "failed: a")]


def _through_here(address: str) -> None:
    ipaddress.ip_address(address)  # raises in another file, a frame below this one


def test_crash_key_is_the_type_and_the_line_that_raised() -> None:
    keys = []
    for address in ("x", "y"):  # the same bug with other values: one key
        try:
            _through_here(address)
        except ValueError as caught:
            keys.append(crash_key(caught))
    source, first = inspect.getsourcelines(ipaddress.ip_address)
    line = first + next(n for n, text in enumerate(source) if "raise ValueError" in text)
    assert keys == [("ValueError", f"{ipaddress.__file__}:{line}")] * 2


def test_crash_key_of_an_exception_never_raised_has_no_place() -> None:
    assert crash_key(ValueError("never raised")) == ("ValueError", "")


def test_a_thread_working_for_an_account_names_it_on_every_line() -> None:
    import threading

    record = logging.LogRecord("ft_exporter.client", logging.WARNING, __file__, 1, "boom", (), None)
    lines: list[str] = []

    def work(account: str | None) -> None:
        logs.set_account(account)
        lines.append(logs.LogfmtFormatter().format(record))
        lines.append(logs.JsonFormatter().format(record))

    for account in ("sg-research", None):
        thread = threading.Thread(target=work, args=(account,))
        thread.start()
        thread.join()
    assert " logger=ft_exporter.client account=sg-research msg=boom" in lines[0]
    assert list(json.loads(lines[1])) == ["ts", "level", "logger", "account", "msg"]
    assert json.loads(lines[1])["account"] == "sg-research"
    assert "account=" not in lines[2]
    assert "account" not in json.loads(lines[3])
    # Another thread's account never leaks into this one.
    assert "account=" not in logs.LogfmtFormatter().format(record)
