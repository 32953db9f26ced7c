"""What an operator runs into: the log, signals, on/off variables, the port and basic auth.

Log lines must stay one record each and free of control characters whatever a client or
the API sends (issue 8, item 7); SIGHUP must not kill the exporter (13); every boolean
variable follows one rule (14); the default port must not be a registered one (15); and
basic-auth users with different bcrypt costs must at least be warned about (16).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from conftest import IN_CI, ROOT, Exporter, Simulator, basic_auth, http_get, run_cli, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from ft_exporter import config, logs, webconfig
from ft_exporter.webconfig import BasicAuth

# --- 7. Log injection ------------------------------------------------------------------

#: Strings that must not reach a log line raw, by what they would do there.
HOSTILE = {
    "ESC colour": "\x1b[31mRED\x1b[0m",
    "bare CR": "ok\rts=0 level=error msg=forged",
    "newline": "ok\nts=0 level=error msg=forged",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "C1 NEL 0x85": "a\x85b",
    "C1 CSI 0x9b": "\x9b31mRED",
    "U+2028": "a\u2028b",
    "U+2029": "a\u2029b",
    "RLO U+202E": "invoice\u202egpj.exe",
    "isolate U+2066": "\u2066x\u2069",
    "lone surrogate": "x \udc80 y",
    "quote and backslash": 'a "b" \\ c=d',
    "tab and VT": "a\tb\x0bc\x0cd",
}
_BIDI_CONTROLS = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}


def unsafe_characters(text: str) -> list[str]:
    """Characters no log line may hold raw: controls, separators, surrogates, bidi controls.

    Defined from Unicode's own tables, independently of ft_exporter.logs.
    """
    return [
        ch
        for ch in text
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")
        or unicodedata.bidirectional(ch) in _BIDI_CONTROLS
        or ch in "\u200e\u200f\u061c"
    ]


def record(message: str, *, with_traceback: bool) -> logging.LogRecord:
    """A record whose message and (optionally) traceback both carry ``message``."""
    exc_info = None
    if with_traceback:
        try:
            raise ValueError(message)
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "ft_exporter.test", logging.ERROR, __file__, 1, "said %s", (message,), exc_info
    )


_LOGFMT_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[^\s="\\]+)'
_LOGFMT_LINE = re.compile(rf"[a-z]+={_LOGFMT_VALUE}(?: [a-z]+={_LOGFMT_VALUE})*")


def logfmt_fields(line: str) -> dict[str, str]:
    """Decode one logfmt line the way go-logfmt does (its quoted strings are JSON's)."""
    assert _LOGFMT_LINE.fullmatch(line), line
    fields = {}
    for key, raw in re.findall(rf"([a-z]+)=({_LOGFMT_VALUE})", line):
        fields[key] = json.loads(raw) if raw.startswith('"') else raw
    return fields


def decoded(fmt: str, line: str) -> dict[str, str]:
    if fmt == "json":
        fields: dict[str, str] = json.loads(line)
        return fields
    return logfmt_fields(line)


FORMATTERS: dict[str, Callable[[], logging.Formatter]] = {
    "logfmt": logs.LogfmtFormatter,
    "json": logs.JsonFormatter,
}


def assert_safe_line(line: str) -> None:
    assert line.splitlines() == [line], f"more than one line: {line!r}"
    assert unsafe_characters(line) == [], line
    line.encode("utf-8")  # strict: no lone surrogate left to crash the handler


@pytest.mark.parametrize("fmt", FORMATTERS)
@pytest.mark.parametrize("name", HOSTILE)
def test_formatters_escape_hostile_text_in_message_and_traceback(fmt: str, name: str) -> None:
    hostile = HOSTILE[name]
    line = FORMATTERS[fmt]().format(record(hostile, with_traceback=True))
    assert_safe_line(line)
    fields = decoded(fmt, line)
    # Escaped, not dropped: a reader decodes exactly what was logged.
    assert fields["msg"] == f"said {hostile}"
    assert fields["err"].startswith("Traceback (most recent call last):\n")
    assert fields["err"].endswith(f"ValueError: {hostile}")
    assert (fields["level"], fields["logger"]) == ("error", "ft_exporter.test")


def test_escapes_are_json_escapes_in_both_formats() -> None:
    text = "\x1b[31m\r\x00\x7f\x85\x9b\u2028\u202e\udc80"
    expected = r"\u001b[31m\r\u0000\u007f\u0085\u009b\u2028\u202e\udc80"
    for fmt, formatter in FORMATTERS.items():
        line = formatter().format(record(text, with_traceback=False))
        assert expected in line, (fmt, line)


def test_readable_text_stays_readable() -> None:
    text = "job 微调-1 of qwen3-8b: épreuve"
    for formatter in FORMATTERS.values():
        line = formatter().format(record(text, with_traceback=False))
        assert text in line, line


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(st.characters(codec=None, exclude_categories=())),
    fmt=st.sampled_from(sorted(FORMATTERS)),
)
def test_any_text_makes_one_safe_decodable_line(text: str, fmt: str) -> None:
    line = FORMATTERS[fmt]().format(record(text, with_traceback=False))
    assert_safe_line(line)
    assert decoded(fmt, line)["msg"] == f"said {text}"


#: The API's error message: a colour, a forged record after a bare CR and a newline, C1.
API_MESSAGE = (
    "boom \x1b[31mRED\x1b[0m\rts=0 level=info msg=forged\nmore\x00\x7f\x85\x9b\u2028\u202e"
)
#: A request line from a client, with an escape sequence, a C1 CSI byte and a bare CR.
REQUEST_LINE = b"GET /probe-\x1b[2J\x9b31m\rX HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_real_log_has_no_raw_control_characters(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], fmt: str
) -> None:
    exp = exporter_factory(
        [
            f"--dashscope.base-url={simulator.url}",
            "--log.level=debug",
            f"--log.format={fmt}",
            "--poll.interval=1s",
            "--dashscope.max-attempts=1",
        ],
        env={"DASHSCOPE_API_KEY": simulator.key},
    )
    send_raw(exp.port, REQUEST_LINE)
    assert http_get(exp.url + "/-/ready")[0] == 200
    simulator.fault("error500", message=API_MESSAGE)
    # The API's message is logged, escaped, once the next sweep fails.
    wait_for(lambda: "\\u001b[31mRED" in exp.output(), what="the API error in the log")
    assert exp.stop() == 0
    raw = exp.log_path.read_bytes()
    for byte in (b"\x1b", b"\r", b"\x00", b"\x7f"):
        assert byte not in raw, (byte, raw)
    text = raw.decode("utf-8")  # strict
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert text.splitlines() == lines, "a record spans more than one line"
    messages = []
    for line in lines:
        assert_safe_line(line)
        messages.append(decoded(fmt, line)["msg"])
    # Decoded, the failing sweep's line holds the message exactly as the API sent it.
    assert any(API_MESSAGE in message for message in messages), messages


# --- 13. SIGHUP ---------------------------------------------------------------------------

HUP_LINE = "received SIGHUP, reloading the configuration"


@pytest.mark.e2e
def test_sighup_reloads_and_never_stops_the_exporter(
    simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}"], env={"DASHSCOPE_API_KEY": simulator.key}
    )

    def logged(times: int) -> Callable[[], bool]:
        def check() -> bool:
            if exp.proc.poll() is not None:
                raise AssertionError(f"exited {exp.proc.returncode} on SIGHUP:\n{exp.output()}")
            output = exp.output()
            return (
                output.count(HUP_LINE) == times and output.count("configuration reloaded") == times
            )

        return check

    for sent in (1, 2, 3):
        exp.proc.send_signal(signal.SIGHUP)
        wait_for(logged(sent), what=f"SIGHUP {sent} logged")
        assert exp.proc.poll() is None, exp.output()
        assert exp.get("/-/ready")[0] == 200
    hup_lines = [line for line in exp.output().splitlines() if HUP_LINE in line]
    assert all(" level=info " in line for line in hup_lines), hup_lines
    assert exp.stop() == 0
    assert "received SIGTERM, shutting down" in exp.output()


# --- 14. Boolean variables ----------------------------------------------------------------

BOOLEAN_VARIABLES = ("FT_EXPORTER_DEMO", "FT_EXPORTER_WEB_HEALTH_NO_AUTH")
ACCEPTED = "must be one of 1, true, yes, on or 0, false, no, off (any case)"
TRUE_SPELLINGS = ["1", "true", "TRUE", "True", "yes", "YES", "on", "On", " true ", "\tON\n"]
FALSE_SPELLINGS = ["0", "false", "FALSE", "no", "No", "off", "OFF", " 0 ", "", "   "]
BAD_SPELLINGS = ["maybe", "2", "-1", "y", "n", "tru", "enabled", "1 1", "true\x1b[31m"]


def _loaded(name: str, value: str) -> bool:
    cfg = config.load([], {"DASHSCOPE_API_KEY": "sk-bool-test-key", name: value})
    return cfg.demo if name == "FT_EXPORTER_DEMO" else cfg.health_no_auth


def test_every_switch_has_its_variable_in_the_rule() -> None:
    """A new on/off flag must be listed here, so that it gets these tests too."""
    assert {flag.env for flag in config._SWITCHES} == set(BOOLEAN_VARIABLES)


@pytest.mark.parametrize("name", BOOLEAN_VARIABLES)
@pytest.mark.parametrize("value", TRUE_SPELLINGS)
def test_boolean_variables_accept_every_true_spelling(name: str, value: str) -> None:
    assert _loaded(name, value) is True


@pytest.mark.parametrize("name", BOOLEAN_VARIABLES)
@pytest.mark.parametrize("value", FALSE_SPELLINGS)
def test_boolean_variables_accept_every_false_spelling(name: str, value: str) -> None:
    assert _loaded(name, value) is False


@pytest.mark.parametrize("name", BOOLEAN_VARIABLES)
@pytest.mark.parametrize("value", BAD_SPELLINGS)
def test_boolean_variables_refuse_anything_else(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        _loaded(name, value)
    assert str(err.value) == f"{name} {ACCEPTED}, got {value!r}"


def test_the_flag_wins_over_a_false_variable() -> None:
    env = {"DASHSCOPE_API_KEY": "sk-bool-test-key", "FT_EXPORTER_WEB_HEALTH_NO_AUTH": "off"}
    assert config.load(["--web.health-no-auth"], env).health_no_auth is True


@pytest.mark.e2e
@pytest.mark.parametrize("value", ["TRUE", " yes ", "On"])
def test_demo_variable_starts_demo_mode(
    exporter_factory: Callable[..., Exporter], value: str
) -> None:
    exp = exporter_factory([], env={"FT_EXPORTER_DEMO": value, "DASHSCOPE_API_KEY": ""})
    assert "Demo mode: simulated API at http://127.0.0.1:" in exp.output()
    assert "dashscope_finetune_job_info{" in exp.metrics()


@pytest.mark.parametrize("name", BOOLEAN_VARIABLES)
@pytest.mark.parametrize("value", ["maybe", "yes please", "1\x1b[2J"])
@pytest.mark.e2e
def test_bad_boolean_variable_exits_2_with_one_line(name: str, value: str) -> None:
    result = run_cli(env={name: value, "DASHSCOPE_API_KEY": "sk-bool-test-key"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"ft-exporter: error: {name} {ACCEPTED}, got {value!r}"]
    assert "\x1b" not in result.stderr


@pytest.mark.e2e
def test_empty_demo_variable_is_unset() -> None:
    result = run_cli(env={"FT_EXPORTER_DEMO": "  "})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ft-exporter: error: no API key: set $DASHSCOPE_API_KEY or --dashscope.api-key-file "
        "(or try --demo)"
    ]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("value", "ready_without_password"),
    [("ON", 200), (" True ", 200), ("yes", 200), ("off", 401), ("FALSE", 401), ("", 401)],
)
def test_health_no_auth_variable_against_the_real_process(
    tmp_path: Path,
    simulator: Simulator,
    exporter_factory: Callable[..., Exporter],
    value: str,
    ready_without_password: int,
) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw-1234", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users:\n  prom: {hashed}\n")
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}", f"--web.config.file={web}"],
        env={"DASHSCOPE_API_KEY": simulator.key, "FT_EXPORTER_WEB_HEALTH_NO_AUTH": value},
        auth=("prom", "pw-1234"),
    )
    assert http_get(exp.url + "/-/ready")[0] == ready_without_password
    assert http_get(exp.url + "/metrics")[0] == 401
    assert exp.get("/metrics")[0] == 200


# --- 15. The default port -----------------------------------------------------------------

#: The port 0.1.0 was first given; IANA registers it as zabbix-agent. (Written so that this
#: file does not itself hold the number the test below looks for.)
RETIRED_PORT = 10_000 + 50


def _service(port: int, proto: str) -> str | None:
    try:
        return socket.getservbyport(port, proto)
    except OSError:
        return None


def test_default_port_is_not_a_registered_service() -> None:
    # getservbyport reads /etc/services; without it every port would look free.
    if _service(RETIRED_PORT, "tcp") != "zabbix-agent" or _service(22, "tcp") != "ssh":
        message = "/etc/services (the netbase package) is missing or incomplete"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    assert _service(config.DEFAULT_PORT, "tcp") is None
    assert _service(config.DEFAULT_PORT, "udp") is None
    # Outside the crowded exporter range and the ephemeral ports.
    assert 1024 <= config.DEFAULT_PORT < 9100 or 10000 <= config.DEFAULT_PORT < 32768


@pytest.mark.e2e
def test_no_file_still_names_the_old_port() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    assert len(files) > 50, "not a git checkout?"
    needle = str(RETIRED_PORT).encode()
    paths = [ROOT / name.decode() for name in files if name]
    stale = [str(p.relative_to(ROOT)) for p in paths if p.is_file() and needle in p.read_bytes()]
    assert stale == [], f"still {RETIRED_PORT}: {stale}"


# --- 16. bcrypt costs ---------------------------------------------------------------------


def _hash(cost: int) -> str:
    return bcrypt.hashpw(b"secret-pw", bcrypt.gensalt(cost)).decode()


def _users_yaml(*costs: int) -> str:
    lines = [f"  user{i}: {_hash(cost)}" for i, cost in enumerate(costs)]
    return "basic_auth_users:\n" + "\n".join(lines) + "\n"


TIMING_WARNING = "basic_auth_users mix bcrypt costs"


def test_mixed_costs_are_warned_about() -> None:
    warnings = webconfig.parse(_users_yaml(4, 5, 4)).warnings
    timing = [w for w in warnings if w.startswith(TIMING_WARNING)]
    assert timing == [
        "basic_auth_users mix bcrypt costs (4, 5): a wrong password takes longer for some "
        "users than others, so a client can tell by the response time which user names "
        "exist; hash every password with the same cost"
    ]


@pytest.mark.parametrize("costs", [(4,), (5, 5), (4, 4, 4)])
def test_equal_costs_are_not_warned_about(costs: tuple[int, ...]) -> None:
    warnings = webconfig.parse(_users_yaml(*costs)).warnings
    assert [w for w in warnings if w.startswith(TIMING_WARNING)] == []


@pytest.mark.parametrize(
    ("costs", "dummy"),
    [
        ((5,), 5),
        ((4, 4), 4),
        ((6, 6, 6), 6),
        ((4, 4, 5), 4),  # the most common cost, not the highest
        ((4, 5, 5), 5),
        ((4, 5), 5),  # a tie goes to the higher cost
        ((4, 6, 5, 6, 4), 6),
    ],
)
def test_unknown_users_are_checked_against_the_most_common_cost(
    costs: tuple[int, ...], dummy: int
) -> None:
    auth = BasicAuth([(f"user{i}", _hash(cost)) for i, cost in enumerate(costs)])
    assert auth.dummy_cost == dummy  # read from the dummy hash itself
    assert not auth.check(basic_auth("nobody", "secret-pw")["Authorization"])
    assert auth.check(basic_auth("user0", "secret-pw")["Authorization"])


@pytest.mark.e2e
def test_mixed_costs_warning_is_logged_at_start(
    tmp_path: Path, simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(_users_yaml(4, 5))
    exp = exporter_factory(
        [f"--dashscope.base-url={simulator.url}", f"--web.config.file={web}"],
        env={"DASHSCOPE_API_KEY": simulator.key},
        auth=("user0", "secret-pw"),
    )
    warned = [line for line in exp.output().splitlines() if TIMING_WARNING in line]
    assert len(warned) == 1, exp.output()
    assert warned[0].startswith("ts=") and " level=warn " in warned[0]
