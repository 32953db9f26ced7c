"""``ft-exporter check``: one sweep per account against the simulator as a real process."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import Simulator, http_json, readme_section, run_cli

from ft_exporter import check as check_module
from ft_exporter import config, configfile, sharding
from ft_exporter.account import Account, spec_of
from ft_exporter.model import Snapshot

pytestmark = pytest.mark.e2e

#: The report for the simulator's static scenario (tests/fixtures.py has the same figures):
#: 19 jobs, 16 of them counted against the limit (all but 2 FAILED and 1 CANCELED), one list
#: request and a log request for each of the 3 RUNNING jobs. The sweep time varies: SWEEP.
STATIC_TABLE = """\
ACCOUNT  RESULT  QUOTA  REQUESTS  ERRORS  SWEEP
default  ok      16/20         4       0  SWEEP

ACCOUNT  MODEL                PENDING  QUEUING  RUNNING  CANCELING  SUCCEEDED  FAILED  CANCELED  SUSPENDED  TOTAL
default  qwen2.5-7b-instruct        0        0        1          0          1       0         0          0      2
default  qwen3-14b                  1        1        1          0          4       1         1          0      9
default  qwen3-8b                   0        2        1          1          2       1         0          1      8

default: 1 malformed list entry skipped
"""  # noqa: E501
SWEEP = re.compile(r"\b\d+\.\d\ds$", re.MULTILINE)


def check(sim: Simulator, *args: str, key: str | None = None, **env: str) -> Any:
    return run_cli(
        "check",
        f"--dashscope.base-url={sim.url}",
        *args,
        env={"DASHSCOPE_API_KEY": sim.key if key is None else key, **env},
    )


def test_the_static_account_prints_the_exact_table(simulator: Simulator) -> None:
    result = check(simulator)
    assert result.returncode == 0, result.stderr
    assert SWEEP.sub("SWEEP", result.stdout) == STATIC_TABLE
    assert simulator.stats()["list_requests"] == 1
    assert simulator.key not in result.stdout + result.stderr


def test_json_gives_the_same_figures_to_scripts(simulator: Simulator) -> None:
    result = check(simulator, "--output=json", "--dashscope.account=lab", "--quota.limit=18")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (account,) = report["accounts"]
    seconds = account.pop("sweep_seconds")
    assert isinstance(seconds, float)
    assert 0 < seconds < 30
    assert report == {
        "ok": True,
        "accounts": [
            {
                "account": "lab",
                "base_url": simulator.url,
                "ok": True,
                "error": None,
                "requests": {"list": 1, "logs": 3},
                "errors": [],
                "quota": {"used": 16, "limit": 18, "statuses": "!CANCELED,!FAILED"},
                "jobs": {
                    "total": 19,
                    "malformed": 1,
                    "by_model": {
                        "qwen2.5-7b-instruct": {"RUNNING": 1, "SUCCEEDED": 1},
                        "qwen3-14b": {
                            "PENDING": 1,
                            "QUEUING": 1,
                            "RUNNING": 1,
                            "SUCCEEDED": 4,
                            "FAILED": 1,
                            "CANCELED": 1,
                        },
                        "qwen3-8b": {
                            "QUEUING": 2,
                            "RUNNING": 1,
                            "CANCELING": 1,
                            "SUCCEEDED": 2,
                            "FAILED": 1,
                            "SUSPENDED": 1,
                        },
                    },
                },
            }
        ],
    }
    # Lifecycle order, as the table prints them, kept by the JSON object too.
    assert list(account["jobs"]["by_model"]["qwen3-14b"]) == [
        "PENDING",
        "QUEUING",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELED",
    ]


def test_a_bad_key_exits_1_with_code_status_and_request_id(simulator: Simulator) -> None:
    bad_key = "sk-wrong-key-9876543210abcdef"
    result = check(simulator, key=bad_key)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"default  failed      -         1       1  \d+\.\d\ds", lines[1])
    assert re.fullmatch(
        r"default: InvalidApiKey HTTP 401: Invalid API-key provided\. "
        r"\(request_id sim-\d{8}\)",
        lines[3],
    ), result.stdout
    assert lines[4].startswith("  the API refused the key")
    as_json = check(simulator, "--output", "json", key=bad_key)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    account = report["accounts"][0]
    assert report["ok"] is False
    assert account["ok"] is False
    assert account["jobs"] is None
    assert account["quota"]["used"] is None
    assert account["error"]["code"] == "InvalidApiKey"
    assert account["error"]["http_status"] == 401
    assert re.fullmatch(r"sim-\d{8}", account["error"]["request_id"])
    assert account["errors"] == [
        {"endpoint": "list", "code": "InvalidApiKey", "http_status": 401, "count": 1}
    ]
    for output in (result, as_json):
        assert bad_key not in output.stdout + output.stderr


def test_an_api_echoing_the_key_never_gets_it_printed(simulator: Simulator) -> None:
    simulator.fault("bad_key", count=100, message=f"key {simulator.key} refused")
    for output in ("table", "json"):
        result = check(simulator, f"--output={output}")
        assert result.returncode == 1
        assert "InvalidApiKey" in result.stdout
        assert simulator.key not in result.stdout + result.stderr
        assert "refused" in result.stdout


def test_an_error_message_cannot_drive_the_terminal(simulator: Simulator) -> None:
    simulator.fault("bad_key", count=100, message="\x1b[2J\x1b[31mgone\nACCOUNT  RESULT  forged")
    result = check(simulator)
    assert result.returncode == 1
    assert "\x1b" not in result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "InvalidApiKey" in line]
    assert "gone ACCOUNT  RESULT  forged" in line
    assert [line for line in result.stdout.splitlines() if line.startswith("ACCOUNT")] == [
        "ACCOUNT  RESULT  QUOTA  REQUESTS  ERRORS  SWEEP"
    ]


def test_throttling_exits_1_after_the_retries(simulator: Simulator) -> None:
    simulator.fault("throttle", count=100)
    result = check(simulator, "--dashscope.max-attempts=2", "--output=json")
    assert result.returncode == 1
    account = json.loads(result.stdout)["accounts"][0]
    assert account["error"]["code"] == "Throttling"
    assert account["error"]["http_status"] == 429
    assert account["requests"] == {"list": 2, "logs": 0}
    assert account["errors"] == [
        {"endpoint": "list", "code": "Throttling", "http_status": 429, "count": 2}
    ]
    table = check(simulator, "--dashscope.max-attempts=1")
    assert table.returncode == 1
    assert re.search(
        r"^default: Throttling HTTP 429: Too many requests, please retry later\. "
        r"\(request_id sim-\d{8}\)$",
        table.stdout,
        re.MULTILINE,
    ), table.stdout
    assert "--dashscope.max-requests-per-second" in table.stdout


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["--dashscope.page-size=0"],
            {"DASHSCOPE_API_KEY": "sk-test-secret-0123456789"},
            "ft-exporter: error: --dashscope.page-size must be between 1 and 100, got 0",
        ),
        (
            [],
            {},
            "ft-exporter: error: no API key: set $DASHSCOPE_API_KEY or "
            "--dashscope.api-key-file (or try --demo)",
        ),
        (
            ["--output=xml"],
            {"DASHSCOPE_API_KEY": "sk-test-secret-0123456789"},
            "ft-exporter: error: --output must be one of table, json, got 'xml'",
        ),
        (
            ["--output"],
            {"DASHSCOPE_API_KEY": "sk-test-secret-0123456789"},
            "ft-exporter: error: argument --output: expected one argument",
        ),
        (
            ["--no-such-flag"],
            {"DASHSCOPE_API_KEY": "sk-test-secret-0123456789"},
            "ft-exporter: error: unrecognized arguments: --no-such-flag",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    args: list[str], env: dict[str, str], line: str
) -> None:
    result = run_cli("check", *args, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [line]


def test_several_accounts_one_failing_exits_1_and_reports_both(
    simulator: Simulator, tmp_path: Path
) -> None:
    """Exit 1 when any account fails: the exporter would serve ``up 0`` for it."""
    config = tmp_path / "accounts.yml"
    config.write_text(
        textwrap.dedent(
            f"""\
            accounts:
              - name: good
                base_url: {simulator.url}
                api_key_env: GOOD_KEY
              - name: wrong
                base_url: {simulator.url}
                api_key_env: WRONG_KEY
                quota_limit: 5
            """
        )
    )
    env = {"GOOD_KEY": simulator.key, "WRONG_KEY": "sk-not-this-one-0123456789"}
    result = run_cli("check", f"--config.file={config}", env=env)
    assert result.returncode == 1
    summary = SWEEP.sub("SWEEP", result.stdout).splitlines()
    assert summary[:3] == [
        "ACCOUNT  RESULT  QUOTA  REQUESTS  ERRORS  SWEEP",
        "good     ok      16/20         4       0  SWEEP",
        "wrong    failed      -         1       1  SWEEP",
    ]
    assert [line.split()[:2] for line in summary[5:8]] == [
        ["good", "qwen2.5-7b-instruct"],
        ["good", "qwen3-14b"],
        ["good", "qwen3-8b"],
    ]
    assert re.search(r"^wrong: InvalidApiKey HTTP 401: ", result.stdout, re.MULTILINE)
    missing = run_cli("check", f"--config.file={config}", env={"GOOD_KEY": simulator.key})
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "ft-exporter: error: accounts[1].api_key_env: $WRONG_KEY is not set or empty"
    ]
    assert "sk-not-this-one" not in result.stdout + result.stderr


def test_demo_checks_the_built_in_simulator() -> None:
    result = run_cli("check", "--demo", "--output=json")
    assert result.returncode == 0, result.stderr
    (account,) = json.loads(result.stdout)["accounts"]
    assert account["ok"] is True
    assert account["requests"]["list"] >= 1


def test_the_readme_troubleshooting_starts_with_check_and_shows_its_real_output(
    simulator: Simulator,
) -> None:
    section = readme_section("## Troubleshooting")
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.DOTALL)
    first_command = blocks[0][1].splitlines()[0].split("#")[0].strip()
    assert first_command == "ft-exporter check"
    # The table shown is what check prints for the static scenario.
    table = next(body for kind, body in blocks if body.startswith("ACCOUNT"))
    assert SWEEP.sub("SWEEP", table) == STATIC_TABLE
    # The JSON example has the real document's shape, key for key.
    example = json.loads(next(body for kind, body in blocks if kind == "json"))
    real = json.loads(check(simulator, "--output=json").stdout)

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k != "by_model"}
        if isinstance(value, list):
            return [shape(v) for v in value[:1]]
        return type(value).__name__

    assert shape(example) == shape(real)
    for heading in ("### 401", "### 429", "### Stale data", "### A stuck job"):
        assert f"\n{heading}" in section, heading


def test_a_bug_in_the_sweep_is_a_failed_account_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "sk-unit-test-0123456789"
    cfg = config.load(["--dashscope.base-url=http://127.0.0.1:9"], {"DASHSCOPE_API_KEY": key})
    spec = spec_of(configfile.base_from_config(cfg), cfg.api_key)

    def broken(self: Account) -> Snapshot:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Account, "_sweep", broken)
    (result,) = check_module.run([spec])
    assert result.error is not None
    assert result.error.code == "Unexpected"
    assert result.error.message == "unexpected RuntimeError: a bug"
    assert check_module.to_table([result])[3] == (
        "default: Unexpected: unexpected RuntimeError: a bug (request_id none)"
    )


def test_a_full_quota_is_a_successful_check_showing_the_limit_reached(tmp_path: Path) -> None:
    """The 20-job limit refuses new jobs, not the exporter's requests: check exits 0."""
    sim = Simulator(tmp_path, scenario="empty")
    try:
        http_json(sim.url + "/_sim/jobs", "POST", {"fill_quota": 20})
        result = check(sim)
    finally:
        sim.stop()
    assert result.returncode == 0, result.stderr
    assert SWEEP.sub("SWEEP", result.stdout).splitlines() == [
        "ACCOUNT  RESULT  QUOTA  REQUESTS  ERRORS  SWEEP",
        "default  ok      20/20         1       0  SWEEP",
        "",
        "ACCOUNT  MODEL     SUCCEEDED  TOTAL",
        "default  qwen3-8b         20     20",
    ]


def test_check_help_says_what_it_does_and_exits_0() -> None:
    result = run_cli("check", "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "usage: ft-exporter check [--output {table,json}] [FLAGS]"
    assert max(len(line) for line in lines) < 80
    assert "0 all swept, 1 an API error, 2 bad" in " ".join(lines)


def test_an_empty_shard_has_nothing_to_check_and_says_so(tmp_path: Path) -> None:
    config_file = tmp_path / "accounts.yml"
    config_file.write_text(
        "accounts:\n  - name: only\n    base_url: http://127.0.0.1:9\n    api_key_env: K\n"
    )
    # "only" hashes to one of two shards: the other holds nothing.
    (empty,) = [n for n in (0, 1) if not sharding.owned(["only"], n, 2)]
    args = ["check", f"--config.file={config_file}", f"--shard={empty}", "--total-shards=2"]
    table = run_cli(*args, env={"K": "sk-unused-0123456789"})
    assert (table.returncode, table.stdout) == (
        0,
        "no account to check: this shard (--shard, --total-shards) holds none\n",
    )
    as_json = run_cli(*args, "--output=json", env={"K": "sk-unused-0123456789"})
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == {"ok": True, "accounts": []}
