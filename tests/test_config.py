"""Configuration: flags, env vars, and bad input failing fast with one line and exit 2."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import readme_section, run_cli

from ft_exporter import __version__, config
from ft_exporter.client import normalise_base_url
from ft_exporter.config import ConfigError, load, parse_duration, parse_listen_address
from ft_exporter.model import parse_timezone

KEY = "sk-config-test-SECRET-4242"


def test_defaults() -> None:
    cfg = load([], {"DASHSCOPE_API_KEY": KEY})
    assert cfg.api_key.reveal() == KEY
    assert (cfg.listen_host, cfg.listen_port) == ("", config.DEFAULT_PORT)
    assert cfg.base_url == "https://dashscope-intl.aliyuncs.com"
    assert (cfg.page_size, cfg.poll_interval, cfg.max_staleness) == (100, 60.0, 900.0)
    assert (cfg.quota_limit, cfg.max_job_series, cfg.account) == (20, 100, "default")
    assert cfg.quota.counts("SUCCEEDED") and not cfg.quota.counts("FAILED")
    assert KEY not in repr(cfg)


def test_env_vars_and_flags_flag_wins(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    env = {
        "DASHSCOPE_BASE_URL": "https://dashscope.aliyuncs.com/api/v1",
        "FT_EXPORTER_POLL_INTERVAL": "2m",
        "FT_EXPORTER_DASHSCOPE_MODEL": "qwen3-8b, qwen3-14b",
        "FT_EXPORTER_DASHSCOPE_API_KEY_FILE": str(keyfile),
        "FT_EXPORTER_QUOTA_STATUSES": "RUNNING,SUCCEED",
    }
    cfg = load(["--poll.interval=90s", "--web.listen-address=127.0.0.1:0"], env)
    assert cfg.base_url == "https://dashscope.aliyuncs.com"
    assert cfg.poll_interval == 90.0
    assert cfg.models == ("qwen3-8b", "qwen3-14b")
    assert cfg.api_key.reveal() == KEY
    assert cfg.quota.counted == frozenset({"RUNNING", "SUCCEEDED"})
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 0)
    cfg2 = load(["--dashscope.model=a", "--dashscope.model=b", "--dashscope.model=a"], env)
    assert cfg2.models == ("a", "b")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60", 60),
        ("1.5", 1.5),
        ("30s", 30),
        ("1m30s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("500ms", 0.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "1x", "m", "1m 30s", "-"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        (":11550", ("", 11550)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses(text: str, pair: tuple[str, int]) -> None:
    assert parse_listen_address(text) == pair


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "no API key: set $DASHSCOPE_API_KEY or --dashscope.api-key-file (or try --demo)"),
        (
            ["--dashscope.api-key-file=/nonexistent/key"],
            {},
            "cannot read --dashscope.api-key-file '/nonexistent/key': No such file or directory",
        ),
        (
            ["--dashscope.base-url=dashscope.aliyuncs.com"],
            {"DASHSCOPE_API_KEY": KEY},
            "argument --dashscope.base-url: not an http(s) base URL: no scheme "
            "(use e.g. https://dashscope-intl.aliyuncs.com)",
        ),
        (
            ["--dashscope.page-size=101"],
            {"DASHSCOPE_API_KEY": KEY},
            "--dashscope.page-size must be between 1 and 100, got 101",
        ),
        (
            ["--dashscope.page-size=0"],
            {"DASHSCOPE_API_KEY": KEY},
            "--dashscope.page-size must be between 1 and 100, got 0",
        ),
        (
            ["--poll.interval=-5s"],
            {"DASHSCOPE_API_KEY": KEY},
            "argument --poll.interval: not a duration: '-5s' (use e.g. 30s, 1m30s, 15m)",
        ),
        (
            ["--poll.interval=0.5"],
            {"DASHSCOPE_API_KEY": KEY},
            "--poll.interval must be at least 1s, got 0.5s",
        ),
        (
            [],
            {"DASHSCOPE_API_KEY": KEY, "FT_EXPORTER_POLL_INTERVAL": "soon"},
            "argument --poll.interval: not a duration: 'soon' (use e.g. 30s, 1m30s, 15m)",
        ),
        (
            ["--web.listen-address=11550"],
            {"DASHSCOPE_API_KEY": KEY},
            "argument --web.listen-address: not a listen address: '11550' (use host:port or :port)",
        ),
        (
            ["--dashscope.timezone=Mars/Base"],
            {"DASHSCOPE_API_KEY": KEY},
            "argument --dashscope.timezone: unknown timezone: 'Mars/Base'",
        ),
        (
            ["--quota.statuses=RUNNING,!FAILED"],
            {"DASHSCOPE_API_KEY": KEY},
            "argument --quota.statuses: --quota.statuses mixes '!STATUS' and 'STATUS'; "
            "use one form",
        ),
        (
            ["--quota.statuses=RUNING"],
            {"DASHSCOPE_API_KEY": KEY},
            "--quota.statuses names unknown status(es): RUNING",
        ),
        (
            ["--log.format=xml"],
            {"DASHSCOPE_API_KEY": KEY},
            "--log.format must be one of logfmt, json",
        ),
        (["--no-such-flag"], {"DASHSCOPE_API_KEY": KEY}, "unrecognized arguments: --no-such-flag"),
        (
            ["--logs.max-jobs=-1"],
            {"DASHSCOPE_API_KEY": KEY},
            "--logs.max-jobs must be between 0 and 1000, got -1",
        ),
        (
            [],
            {"DASHSCOPE_API_KEY": KEY, "FT_EXPORTER_LOGS_MAX_JOBS": "1001"},
            "--logs.max-jobs must be between 0 and 1000, got 1001",
        ),
        (
            [],
            {"DASHSCOPE_API_KEY": KEY, "FT_EXPORTER_LOGS_MAX_JOBS": "twenty"},
            "argument --logs.max-jobs: not a whole number: 'twenty'",
        ),
        (
            ["--poll.full-sweep-interval=-1"],
            {"DASHSCOPE_API_KEY": KEY},
            "--poll.full-sweep-interval must be 0 (every sweep reads every page) or more, got -1s",
        ),
        (
            [],
            {"DASHSCOPE_API_KEY": KEY, "FT_EXPORTER_POLL_FULL_SWEEP_INTERVAL": "often"},
            "argument --poll.full-sweep-interval: not a duration: 'often' "
            "(use e.g. 30s, 1m30s, 15m)",
        ),
        (
            ["--poll.full-sweep-interval=inf"],
            {"DASHSCOPE_API_KEY": KEY},
            "argument --poll.full-sweep-interval: not a duration: 'inf' (use e.g. 30s, 1m30s, 15m)",
        ),
        (
            ["--dashscope.burst-requests=0"],
            {"DASHSCOPE_API_KEY": KEY},
            "--dashscope.burst-requests must be between 1 and 1000, got 0",
        ),
        (
            [],
            {
                "DASHSCOPE_API_KEY": KEY,
                "FT_EXPORTER_DASHSCOPE_BURST_REQUESTS": "99999999999999999999",
            },
            "argument --dashscope.burst-requests: not a whole number: '99999999999999999999'",
        ),
        (
            [],
            {"DASHSCOPE_API_KEY": KEY, "FT_EXPORTER_DASHSCOPE_BURST_REQUESTS": "-3"},
            "--dashscope.burst-requests must be between 1 and 1000, got -3",
        ),
        (
            ["--logs.max-lines-per-sweep=0"],
            {"DASHSCOPE_API_KEY": KEY},
            "--logs.max-lines-per-sweep must be between 1 and 100000, got 0",
        ),
        (
            [],
            {"DASHSCOPE_API_KEY": KEY, "FT_EXPORTER_LOGS_MAX_LINES_PER_SWEEP": "1e9"},
            "argument --logs.max-lines-per-sweep: not a whole number: '1e9'",
        ),
    ],
)
@pytest.mark.e2e
def test_bad_configuration_fails_with_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"ft-exporter: error: {message}"
    assert KEY not in result.stderr


def test_empty_key_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load([f"--dashscope.api-key-file={keyfile}"], {})


@pytest.mark.e2e
def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    # prometheus/common's version.Print, in Python's terms; this install is editable.
    assert re.fullmatch(
        rf"ft-exporter, version {re.escape(__version__)} \(revision: unknown\)\n"
        r"  python version:   3\.\d+\.\d+\S* \((CPython|PyPy)\)\n"
        rf"  platform:         {sys.platform}/{platform.machine()}\n",
        version.stdout,
    ), version.stdout
    helptext = run_cli("--help")
    assert helptext.returncode == 0
    for flag in (
        "--web.listen-address",
        "--web.telemetry-path",
        "--dashscope.base-url",
        "--dashscope.api-key-file",
        "--dashscope.workspace",
        "--dashscope.model",
        "--dashscope.page-size",
        "--dashscope.timeout",
        "--dashscope.timezone",
        "--poll.interval",
        "--poll.max-staleness",
        "--quota.limit",
        "--quota.statuses",
        "--jobs.max-series",
        "--log.level",
        "--log.format",
        "--demo",
        "DASHSCOPE_BASE_URL",
        "FT_EXPORTER_POLL_INTERVAL",
        "DASHSCOPE_API_KEY",
    ):
        assert flag in helptext.stdout, flag


@pytest.mark.e2e
def test_readme_documents_every_flag() -> None:
    """The README's configuration table lists exactly the flags --help shows."""
    import re

    table = readme_section("## Configuration")
    documented = set(re.findall(r"^\| `(--[a-z.-]+)` \|", table, re.MULTILINE))
    helptext = run_cli("--help").stdout
    offered = set(re.findall(r"^\s+(--[a-z][a-z.-]+)", helptext, re.MULTILINE))
    assert documented == offered - {"--help", "--version"}


def test_demo_sweeps_every_10s_unless_told_otherwise() -> None:
    assert config.load(["--demo"], {}).poll_interval == 10.0
    assert config.load(["--demo", "--poll.interval=30s"], {}).poll_interval == 30.0
    assert config.load(["--demo"], {"FT_EXPORTER_POLL_INTERVAL": "2m"}).poll_interval == 120.0
    assert config.load([], {"DASHSCOPE_API_KEY": KEY}).poll_interval == 60.0


@pytest.mark.parametrize(
    ("args", "env", "seconds"),
    [
        ([], {}, 600.0),
        (["--poll.full-sweep-interval=0"], {}, 0.0),
        (["--poll.full-sweep-interval=1h30m"], {}, 5400.0),
        ([], {"FT_EXPORTER_POLL_FULL_SWEEP_INTERVAL": "90s"}, 90.0),
        (["--poll.full-sweep-interval=2m"], {"FT_EXPORTER_POLL_FULL_SWEEP_INTERVAL": "90s"}, 120.0),
    ],
)
def test_the_full_sweep_interval_flag_and_variable(
    args: list[str], env: dict[str, str], seconds: float
) -> None:
    cfg = load(args, {"DASHSCOPE_API_KEY": KEY, **env})
    assert cfg.full_sweep_interval == seconds


#: What --help calls each flag's value; a new flag gets its name from its parser.
METAVARS = {
    "--web.listen-address": "ADDRESS",
    "--web.telemetry-path": "PATH",
    "--web.config.file": "FILE",
    "--web.read-header-timeout": "DURATION",
    "--config.file": "FILE",
    "--shard": "N",
    "--dashscope.base-url": "URL",
    "--dashscope.api-key-file": "FILE",
    "--dashscope.workspace": "ID",
    "--dashscope.model": "MODEL",
    "--dashscope.page-size": "N",
    "--dashscope.max-requests-per-second": "NUMBER",
    "--dashscope.timezone": "ZONE",
    "--dashscope.account": "NAME",
    "--poll.interval": "DURATION",
    "--quota.statuses": "STATUSES",
    "--log.level": "{debug,info,warn,error}",
    "--log.format": "{logfmt,json}",
}


@pytest.mark.e2e
def test_help_names_every_value_lists_choices_and_shows_no_empty_default() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = result.stdout
    options = dict(re.findall(r"^  (--[a-z][a-z.-]+)(?: (\S+))?", text, re.MULTILINE))
    switches = {"--version"} | {f"--{flag.name}" for flag in config._SWITCHES}
    assert set(options) >= switches | set(METAVARS)
    for flag, metavar in options.items():
        if flag in switches:
            assert metavar == "", flag
        else:
            # A word naming the value, or the choices: never argparse's WEB_LISTEN_ADDRESS.
            assert re.fullmatch(r"[A-Z]+|\{[a-z,]+\}", metavar), (flag, metavar)
    assert {flag: options[flag] for flag in METAVARS} == METAVARS
    assert "default: None" not in text
    assert "default: False" not in text
    assert "(default: 10s)" in text  # real defaults are still shown
    assert text.startswith(
        "usage: ft-exporter [FLAGS]\n"
        "       ft-exporter check [--output {table,json}] [FLAGS]\n"
        "       ft-exporter check-config FILE [FLAGS]\n"
    )


def test_a_new_flag_is_named_after_its_parser() -> None:
    """Flags added to the table later need no metavar of their own."""

    def named(kind: Any, name: str = "new.flag") -> str:
        return config._metavar(config._Flag(name, "NEW_FLAG", "help", kind=kind))

    assert named(config.parse_duration) == "DURATION"
    assert named(config.parse_count) == "N"
    assert named(float) == "NUMBER"
    assert named(config.parse_listen_address) == "ADDRESS"
    assert named(normalise_base_url) == "URL"
    assert named(parse_timezone) == "ZONE"
    assert named(str, "new.thing-file") == "FILE"
    assert named(str) == "TEXT"
    choices = config._Flag("new.flag", "NEW_FLAG", "help", choices=("a", "b"))
    assert config._metavar(choices) == "{a,b}"
