"""The config file of many accounts (issue 11), in-process: exact dataclasses, exact lines.

Every refusal is pinned to its whole line, and a file with many mistakes must list all
of them: a user fixes a config file once, not once per mistake.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from pathlib import Path
from types import MappingProxyType

import pytest

from ft_exporter import config, configfile
from ft_exporter.collector import QuotaRule
from ft_exporter.configfile import (
    MAX_FILE_BYTES,
    AccountSettings,
    ConfigFileError,
    FileConfig,
    check_config,
)
from ft_exporter.cost import Prices
from ft_exporter.model import parse_timezone

KEY = "sk-configfile-SECRET-0042"
INTL = "https://dashscope-intl.aliyuncs.com"
CN = "https://dashscope.aliyuncs.com"

#: What the flags give by default (the lead builds it from config.load()).
BASE = AccountSettings(
    name="default",
    base_url=INTL,
    api_key_file="/from/the/flags",
    api_key_env="DASHSCOPE_API_KEY",
    workspace="",
    models=(),
    quota_limit=20,
    quota=QuotaRule(),
    poll_interval=60.0,
    sweep_timeout=60.0,
    max_staleness=900.0,
    timeout=10.0,
    max_requests_per_second=2.0,
    max_attempts=4,
    burst_requests=20,
    page_size=100,
    ca_file="",
    timezone=parse_timezone("+08:00"),
    max_job_series=100,
    max_aggregate_series=1000,
    log_max_jobs=20,
    log_max_lines=1000,
)

ISSUE_EXAMPLE = """\
defaults:                     # optional; any account field except name
  poll_interval: 60s
accounts:
  - name: sg-research         # required, unique; the `account` label value
    site: intl                # intl (Singapore) | cn (Beijing); or base_url: https://...
    api_key_file: /run/secrets/sg   # or api_key_env: DASHSCOPE_API_KEY_SG (exactly one)
    workspace: ws-123         # optional
    models: [qwen3-8b]        # optional filter
    quota_limit: 20
    quota_statuses: "!FAILED,!CANCELED"
    poll_interval: 60s
    max_requests_per_second: 2
    timezone: "+08:00"
prices:                       # optional; see 4
  currency: CNY
  per_1k_tokens: {qwen3-8b: 0.06, default: 0.1}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "accounts.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems_of(tmp_path: Path, text: str, **kwargs: float) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(write(tmp_path, text), BASE, **kwargs)
    assert str(caught.value) == caught.value.problems[0]
    return caught.value.problems


def one_account(tmp_path: Path, fields: str) -> AccountSettings:
    text = "accounts:\n  - name: a\n    api_key_env: K\n" + textwrap.indent(fields, "    ")
    return configfile.load(write(tmp_path, text), BASE).accounts[0]


def test_the_issues_example_parses_to_exactly_this(tmp_path: Path) -> None:
    loaded = configfile.load(write(tmp_path, ISSUE_EXAMPLE), BASE)
    assert loaded == FileConfig(
        accounts=(
            AccountSettings(
                name="sg-research",
                base_url=INTL,
                api_key_file="/run/secrets/sg",
                api_key_env="",
                workspace="ws-123",
                models=("qwen3-8b",),
                quota_limit=20,
                quota=QuotaRule(counted=None, excluded=frozenset({"FAILED", "CANCELED"})),
                poll_interval=60.0,
                sweep_timeout=60.0,
                max_staleness=900.0,
                timeout=10.0,
                max_requests_per_second=2.0,
                max_attempts=4,
                burst_requests=20,
                page_size=100,
                ca_file="",
                timezone=timezone(timedelta(hours=8)),
                max_job_series=100,
                max_aggregate_series=1000,
                log_max_jobs=20,
                log_max_lines=1000,
            ),
        ),
        prices=Prices(currency="CNY", per_1k_tokens={"qwen3-8b": 0.06}, default=0.1),
    )
    assert isinstance(loaded.prices, Prices)
    assert isinstance(loaded.prices.per_1k_tokens, MappingProxyType)  # read-only


def test_every_field_maps_to_its_setting(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    account = one_account(
        tmp_path,
        f"""\
base_url: https://proxy.example:8443/dash/api/v1/
workspace: ws-9
models: qwen3-8b, qwen3-14b ,qwen3-8b
page_size: "50"
timeout: 1m30s
max_requests_per_second: "0.5"
max_attempts: 10
ca_file: {ca}
timezone: Asia/Shanghai
poll_interval: 90
poll_sweep_timeout: 45s
poll_full_sweep_interval: 0
poll_max_staleness: 2h
quota_limit: 7
quota_statuses: running, succeed
jobs_max_series: 0
jobs_max_aggregate_series: 7
logs_max_jobs: 0
logs_max_lines_per_sweep: 100000
""",
    )
    assert account == AccountSettings(
        name="a",
        base_url="https://proxy.example:8443/dash",
        api_key_file="",
        api_key_env="K",
        workspace="ws-9",
        models=("qwen3-8b", "qwen3-14b"),
        quota_limit=7,
        quota=QuotaRule(counted=frozenset({"RUNNING", "SUCCEEDED"})),
        poll_interval=90.0,
        sweep_timeout=45.0,
        full_sweep_interval=0.0,
        max_staleness=7200.0,
        timeout=90.0,
        max_requests_per_second=0.5,
        max_attempts=10,
        burst_requests=20,
        page_size=50,
        ca_file=str(ca),
        timezone=parse_timezone("Asia/Shanghai"),
        max_job_series=0,
        max_aggregate_series=7,
        log_max_jobs=0,
        log_max_lines=100000,
    )


def test_the_flags_give_the_base(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    from_env = config.load(
        ["--dashscope.account=solo", "--quota.limit=3"], {"DASHSCOPE_API_KEY": KEY}
    )
    assert configfile.base_from_config(from_env) == replace(
        BASE, name="solo", api_key_file="", quota_limit=3, max_aggregate_series=2000
    )
    from_file = config.load(
        [
            f"--dashscope.api-key-file={key_file}",
            "--dashscope.base-url=https://dashscope.aliyuncs.com/api/v1",
            "--dashscope.workspace=ws-1",
            "--dashscope.model=m1",
            "--dashscope.page-size=10",
            "--dashscope.timeout=3s",
            "--dashscope.max-requests-per-second=5",
            "--dashscope.max-attempts=2",
            f"--dashscope.ca-file={key_file}",
            "--dashscope.timezone=UTC",
            "--poll.interval=2m",
            "--poll.sweep-timeout=50s",
            "--poll.full-sweep-interval=30m",
            "--poll.max-staleness=1h",
            "--quota.statuses=RUNNING",
            "--jobs.max-series=9",
            "--jobs.max-aggregate-series=70",
            "--logs.max-jobs=4",
            "--logs.max-lines-per-sweep=40",
        ],
        {},
    )
    assert configfile.base_from_config(from_file) == AccountSettings(
        name="default",
        base_url=CN,
        api_key_file=str(key_file),
        api_key_env="",
        workspace="ws-1",
        models=("m1",),
        quota_limit=20,
        quota=QuotaRule(counted=frozenset({"RUNNING"})),
        poll_interval=120.0,
        sweep_timeout=50.0,
        full_sweep_interval=1800.0,
        max_staleness=3600.0,
        timeout=3.0,
        max_requests_per_second=5.0,
        max_attempts=2,
        burst_requests=20,
        page_size=10,
        ca_file=str(key_file),
        timezone=UTC,
        max_job_series=9,
        max_aggregate_series=70,
        log_max_jobs=4,
        log_max_lines=40,
    )


def test_account_over_defaults_over_the_flags(tmp_path: Path) -> None:
    loaded = configfile.load(
        write(
            tmp_path,
            """\
            defaults:
              site: cn
              api_key_env: SHARED_KEY
              quota_limit: 5
              poll_interval: 2m
            accounts:
              - name: plain
              - name: own
                base_url: https://own.example
                api_key_file: /run/secrets/own
                quota_limit: 9
              - name: intl
                site: intl
            """,
        ),
        BASE,
    )
    plain, own, intl = loaded.accounts
    # The defaults win over the flags; the key source never comes from the flags.
    assert (plain.base_url, plain.api_key_file, plain.api_key_env) == (CN, "", "SHARED_KEY")
    assert (plain.quota_limit, plain.poll_interval, plain.timeout) == (5, 120.0, 10.0)
    # base_url replaces the defaults' site, api_key_file their api_key_env.
    assert (own.base_url, own.api_key_file, own.api_key_env) == (
        "https://own.example",
        "/run/secrets/own",
        "",
    )
    assert (own.quota_limit, own.poll_interval) == (9, 120.0)
    assert (intl.base_url, intl.api_key_env) == (INTL, "SHARED_KEY")
    assert loaded.prices is None


def test_defaults_may_name_the_key_file_and_the_account_its_variable(tmp_path: Path) -> None:
    loaded = configfile.load(
        write(
            tmp_path,
            """\
            defaults: {api_key_file: /k}
            accounts: [{name: a, api_key_env: A_KEY}, {name: b}]
            """,
        ),
        BASE,
    )
    assert [(a.api_key_file, a.api_key_env) for a in loaded.accounts] == [
        ("", "A_KEY"),
        ("/k", ""),
    ]


ACCOUNT = "accounts:\n  - name: a\n    api_key_env: K\n"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("quota_limt", "3", "unknown field"),
        ("poll_interval", "5x", "not a duration: '5x' (use e.g. 30s, 1m30s, 15m)"),
        ("site", "eu", "must be intl or cn, got 'eu'"),
        ("workspace", "", "must be text, got nothing (null)"),
        ("models", "{a: 1}", "must be a list of model names, got a mapping"),
        (
            "base_url",
            "dashscope.aliyuncs.com",
            "not an http(s) base URL: no scheme (use e.g. https://dashscope-intl.aliyuncs.com)",
        ),
        ("timezone", "Mars/Base", "unknown timezone: 'Mars/Base'"),
        ("quota_statuses", "RUNING", "names unknown status(es): RUNING"),
        ("quota_statuses", "'RUNNING,!FAILED'", "mixes '!STATUS' and 'STATUS'; use one form"),
        ("quota_statuses", "','", "is empty"),
        ("quota_limit", "0", "must be at least 1, got 0"),
        ("quota_limit", "twenty", "not a whole number: 'twenty'"),
        ("quota_limit", "2.5", "not a whole number: 2.5"),
        ("quota_limit", "true", "not a whole number: true/false (true)"),
        ("page_size", "101", "must be between 1 and 100, got 101"),
        ("max_attempts", "11", "must be between 1 and 10"),
        ("burst_requests", "0", "must be between 1 and 1000, got 0"),
        ("burst_requests", "1001", "must be between 1 and 1000, got 1001"),
        ("burst_requests", "many", "not a whole number: 'many'"),
        ("timeout", "0s", "must be positive"),
        ("poll_sweep_timeout", "0", "must be positive"),
        ("poll_max_staleness", "-1", "must be positive"),
        (
            "poll_full_sweep_interval",
            "-5",
            "must be 0 (every sweep reads every page) or more, got -5s",
        ),
        ("poll_full_sweep_interval", "soon", "not a duration: 'soon' (use e.g. 30s, 1m30s, 15m)"),
        ("poll_interval", "0.5", "must be at least 1s, got 0.5s"),
        ("poll_interval", ".nan", "not a duration: 'nan' (use e.g. 30s, 1m30s, 15m)"),
        ("max_requests_per_second", "0", "must be positive"),
        ("max_requests_per_second", ".inf", "not a number: inf"),
        ("max_requests_per_second", "fast", "not a number: 'fast'"),
        ("jobs_max_series", "-1", "must not be negative"),
        (
            "jobs_max_aggregate_series",
            "6",
            "must be at least 7 (one model's documented statuses), got 6",
        ),
        ("logs_max_jobs", "1001", "must be between 0 and 1000, got 1001"),
        ("logs_max_lines_per_sweep", "0", "must be between 1 and 100000, got 0"),
        ("ca_file", "/nonexistent/ca.pem", "cannot read '/nonexistent/ca.pem'"),
        ("site", "x" * 80, f"must be intl or cn, got '{'x' * 80}'"),
        ("site", "x" * 81, f"must be intl or cn, got '{'x' * 79}\u2026'"),  # clipped
        ("workspace", "2024-01-01", "must be text, got a date"),
        ("poll_interval", "true", "must be text, got true/false (true)"),
        ("max_requests_per_second", "[1]", "not a number: a list"),
    ],
)
def test_each_bad_account_field_is_one_line_naming_its_path(
    tmp_path: Path, field: str, value: str, problem: str
) -> None:
    assert problems_of(tmp_path, f"{ACCOUNT}    {field}: {value}\n") == [
        f"accounts[0].{field}: {problem}"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("accounts:\n  - api_key_env: K\n", "accounts[0]: missing name"),
        ("accounts:\n  - name: a\n", "accounts[0]: no key source: set api_key_file or api_key_env"),
        (
            ACCOUNT + "    api_key_file: /k\n",
            "accounts[0]: api_key_file and api_key_env are exclusive",
        ),
        (
            ACCOUNT + "    site: cn\n    base_url: https://x.example\n",
            "accounts[0]: site and base_url are exclusive",
        ),
        (
            "defaults: {site: cn, base_url: 'https://x.example'}\n" + ACCOUNT,
            "defaults: site and base_url are exclusive",
        ),
        (
            ACCOUNT + "prices: {currency: CNY, per_1k_tokens: {qwen3-8b: cheap}}\n",
            "prices.per_1k_tokens.qwen3-8b: not a non-negative number: 'cheap'",
        ),
        (
            ACCOUNT + "prices: {currency: CNY, per_1k_tokens: {qwen2.5-7b: -0.5}}\n",
            "prices.per_1k_tokens.qwen2.5-7b: not a non-negative number: -0.5",
        ),
        (
            ACCOUNT + "prices: {currency: CNY, per_1k_tokens: {default: .inf}}\n",
            "prices.per_1k_tokens.default: not a non-negative number: inf",
        ),
        (
            ACCOUNT + "prices: {currency: CNY, per_1k_tokens: {m: true}}\n",
            "prices.per_1k_tokens.m: not a non-negative number: true/false (true)",
        ),
        (ACCOUNT + "prices: {per_1k_tokens: {}}\n", "prices: missing currency"),
        (ACCOUNT + "prices: {currency: CNY}\n", "prices: missing per_1k_tokens"),
        (
            ACCOUNT + "prices: {currency: CNY, per_1k_tokens: {}, vat: 0.2}\n",
            "prices.vat: unknown field",
        ),
        (ACCOUNT + "prices: [1]\n", "prices: must be a mapping of fields, got a list"),
        (ACCOUNT + "colour: blue\n", "colour: unknown field"),
        (
            "defaults: {name: x}\naccounts:\n  - name: a\n    api_key_env: K\n",
            "defaults.name: not allowed: each account has its own name",
        ),
        ("accounts:\n  - name: ''\n    api_key_env: K\n", "accounts[0].name: must not be empty"),
        ("accounts:\n  - name: '  '\n    api_key_env: K\n", "accounts[0].name: must not be empty"),
        (
            f"accounts:\n  - name: {'n' * 65}\n    api_key_env: K\n",
            "accounts[0].name: longer than 64 characters",
        ),
        (
            'accounts:\n  - name: "a\\tb"\n    api_key_env: K\n',
            "accounts[0].name: contains a control character (U+0009)",
        ),
        (
            'accounts:\n  - name: "a\\x85b"\n    api_key_env: K\n',
            "accounts[0].name: contains a control character (U+0085)",
        ),
        ("accounts:\n  - name: 42\n    api_key_env: K\n", "accounts[0].name: must be text, got 42"),
        (ACCOUNT + "    models: [a, [b]]\n", "accounts[0].models[1]: must be text, got a list"),
        (
            "accounts:\n  - name: a\n    api_key_file: 42\n",
            "accounts[0].api_key_file: must be the path of the file holding the key",
        ),
        ("accounts: []\n", "accounts: empty: at least one account"),
        ("defaults: [1]\n" + ACCOUNT, "defaults: must be a mapping of fields, got a list"),
        (
            ACCOUNT + "prices: {currency: CNY, per_1k_tokens: [1]}\n",
            "prices.per_1k_tokens: must be a mapping of fields, got a list",
        ),
        (
            ACCOUNT + "prices: {currency: '', per_1k_tokens: {}}\n",
            "prices.currency: must not be empty",
        ),
        ("accounts: a\n", "accounts: must be a list of accounts, got 'a'"),
        ("defaults: {}\n", "accounts: missing: a list of accounts, each with a name"),
        ("accounts: [a]\n", "accounts[0]: must be a mapping of fields, got 'a'"),
        (
            ACCOUNT + "    quota_limit: 1\n    quota_limit: 2\n",
            "accounts[0].quota_limit: duplicate key",
        ),
    ],
)
def test_each_problem_is_one_line_naming_its_path(tmp_path: Path, text: str, problem: str) -> None:
    assert problems_of(tmp_path, text) == [problem]


def test_every_problem_is_collected_in_file_order(tmp_path: Path) -> None:
    text = """\
    defaults:
      poll_interval: 5x
    accounts:
      - site: intl
        base_url: https://x.example
        api_key_file: /a
        api_key_env: OK
      - name: sg
        site: eu
        quota_limt: 3
        timeout: soon
        api_key_env: K
      - name: sg
        api_key_env: K
        models: [a, 3]
    prices:
      currency: CNY
      per_1k_tokens: {qwen3-8b: cheap, 1.5: 1, default: 0.1, qwen3-14b: -1, 2.5: 1}
    """
    assert problems_of(tmp_path, text) == [
        "defaults.poll_interval: not a duration: '5x' (use e.g. 30s, 1m30s, 15m)",
        "accounts[0]: missing name",
        "accounts[0]: site and base_url are exclusive",
        "accounts[0]: api_key_file and api_key_env are exclusive",
        "accounts[1].quota_limt: unknown field",
        "accounts[1].site: must be intl or cn, got 'eu'",
        "accounts[1].timeout: not a duration: 'soon' (use e.g. 30s, 1m30s, 15m)",
        "accounts[2].name: duplicate of accounts[1].name 'sg'",
        "accounts[2].models[1]: must be text, got 3",
        "prices.per_1k_tokens.qwen3-8b: not a non-negative number: 'cheap'",
        "prices.per_1k_tokens.1.5: model name must be text, got 1.5",
        "prices.per_1k_tokens.qwen3-14b: not a non-negative number: -1",
        "prices.per_1k_tokens.2.5: model name must be text, got 2.5",
    ]


def test_duplicate_keys_are_listed_in_file_order(tmp_path: Path) -> None:
    text = """\
    defaults: {timeout: 1s, timeout: 2s}
    accounts:
      - {name: a, api_key_env: K, site: cn, site: intl}
      - {name: b, api_key_env: K, models: [{x: 1, x: 2}]}
    accounts: []
    """
    assert problems_of(tmp_path, text) == [
        "defaults.timeout: duplicate key",
        "accounts[0].site: duplicate key",
        "accounts[1].models[0].x: duplicate key",
        "accounts: duplicate key",
        "accounts: empty: at least one account",  # PyYAML took the last one
    ]


def test_a_key_pasted_into_the_file_is_never_echoed(tmp_path: Path) -> None:
    text = f"""\
    accounts:
      - name: a
        api_key_env: {KEY}
      - name: b
        api_key_file: "{KEY}\\n"
      - name: c
        api_key_env: K
        {KEY}: 1
    """
    problems = problems_of(tmp_path, text)
    assert problems == [
        "accounts[0].api_key_env: must be the name of an environment variable "
        "([A-Za-z_][A-Za-z0-9_]*)",
        "accounts[1].api_key_file: must be a path without control characters",
        "accounts[2].(a key that is not a field name): unknown field",
    ]
    assert not any(KEY in problem for problem in problems)


def test_the_poll_interval_floor_is_a_parameter(tmp_path: Path) -> None:
    text = ACCOUNT + "    poll_interval: 0.2\n"
    assert (
        configfile.load(write(tmp_path, text), BASE, poll_floor=0.2).accounts[0].poll_interval
        == 0.2
    )
    assert problems_of(tmp_path, text, poll_floor=0.25) == [
        "accounts[0].poll_interval: must be at least 1s, got 0.2s"
    ]


def test_the_bounds_are_inclusive(tmp_path: Path) -> None:
    text = f"""\
    accounts: [{{name: {"n" * 64}, api_key_env: K, poll_interval: 1s}}]
    prices: {{currency: EUR, per_1k_tokens: {{free: 0}}}}
    """
    loaded = configfile.load(write(tmp_path, text), BASE)
    assert (loaded.accounts[0].name, loaded.accounts[0].poll_interval) == ("n" * 64, 1.0)
    assert loaded.prices == Prices(currency="EUR", per_1k_tokens={"free": 0.0}, default=None)


def test_at_most_1000_accounts(tmp_path: Path) -> None:
    def accounts(n: int) -> str:
        return "accounts:\n" + "".join(f"  - {{name: a{i}, api_key_env: K}}\n" for i in range(n))

    assert len(configfile.load(write(tmp_path, accounts(1000)), BASE).accounts) == 1000
    assert problems_of(tmp_path, accounts(1001)) == ["accounts: 1001 accounts, at most 1000"]


# ---- hostile files ----------------------------------------------------------------------


def test_a_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    padding = "#" * 99 + "\n"
    path.write_text(ACCOUNT + padding * ((MAX_FILE_BYTES - len(ACCOUNT)) // 100))
    assert os.path.getsize(path) <= MAX_FILE_BYTES
    assert len(configfile.load(str(path), BASE).accounts) == 1
    with path.open("a") as handle:
        handle.write(padding)
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(str(path), BASE)
    assert caught.value.problems == [f"{path}: larger than 1048576 bytes"]


@pytest.mark.parametrize(
    ("kind", "problem"),
    [("fifo", "is a FIFO, not a config file"), ("dir", "is a directory, not a config file")],
)
def test_a_fifo_or_a_directory_is_refused_without_blocking(
    tmp_path: Path, kind: str, problem: str
) -> None:
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: opening it blocking would hang the test
    else:
        path.mkdir()
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(str(path), BASE)
    assert caught.value.problems == [f"{path}: {problem}"]


def test_a_device_and_a_missing_file_are_refused() -> None:
    with pytest.raises(ConfigFileError) as caught:
        configfile.load("/dev/zero", BASE)
    assert caught.value.problems == ["/dev/zero: is a character device, not a config file"]
    with pytest.raises(ConfigFileError) as caught:
        configfile.load("/nonexistent/accounts.yml", BASE)
    assert caught.value.problems == [
        "/nonexistent/accounts.yml: cannot read: No such file or directory"
    ]


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"accounts:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(str(path), BASE)
    assert caught.value.problems == [f"{path}: not UTF-8 text (byte 23)"]


def test_billion_laughs_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        refs = ",".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(path, BASE)
    assert caught.value.problems == [f"{path}: more than 200000 values once aliases are expanded"]


def test_exactly_200000_values_after_expansion_are_fine(tmp_path: Path) -> None:
    # root 1 + "x" 1 + list &a (1 + 999) + "y" 1 + list (1 + 198 * 1000 + 994 + &s + *s)
    scalars = ", ".join(["v"] * 994)
    aliases = ", ".join(["*a"] * 198)
    text = f"x: &a [{', '.join(['v'] * 999)}]\ny: [{aliases}, {scalars}, &s v, *s]\n"
    assert problems_of(tmp_path, text) == [
        "x: unknown field",
        "y: unknown field",
        "accounts: missing: a list of accounts, each with a name",
    ]
    path = write(tmp_path, text.replace("*s]", "*s, v]"))
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(path, BASE)
    assert caught.value.problems == [f"{path}: more than 200000 values once aliases are expanded"]


def test_a_duplicate_key_behind_an_alias_is_reported_once(tmp_path: Path) -> None:
    text = ACCOUNT + (
        "    models: &m [{a: 1, a: 2}]\n"
        "  - {name: b, api_key_env: K, models: *m}\n"
        "  - {name: c, api_key_env: K, site: cn, site: cn}\n"  # the walk goes on after *m
    )
    assert problems_of(tmp_path, text) == [
        "accounts[0].models[0].a: duplicate key",
        "accounts[2].site: duplicate key",
        "accounts[0].models[0]: must be text, got a mapping",
        "accounts[1].models[0]: must be text, got a mapping",
    ]


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    text = """\
    common: &common {api_key_env: K, quota_limit: 3}
    accounts:
      - {name: a, api_key_env: K, site: &site cn}
      - {name: b, api_key_env: K, site: *site}
    """
    # "common" is not a field: the anchor works, the unknown key is still refused.
    assert problems_of(tmp_path, text) == ["common: unknown field"]
    loaded = configfile.load(write(tmp_path, text.replace("    common:", "    defaults:")), BASE)
    assert [(a.name, a.base_url, a.quota_limit) for a in loaded.accounts] == [
        ("a", CN, 3),
        ("b", CN, 3),
    ]


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("accounts: !!python/object:os.system {}\n", "tag:yaml.org,2002:python/object:os.system"),
        ("accounts: [!!python/name:os.system '']\n", "tag:yaml.org,2002:python/name:os.system"),
        ("accounts: !custom x\n", "!custom"),
        ("accounts: !!binary aGk=\n", "tag:yaml.org,2002:binary"),
        ("accounts: !!set {a}\n", "tag:yaml.org,2002:set"),
    ],
)
def test_tags_are_refused(tmp_path: Path, text: str, tag: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(path, BASE)
    assert caught.value.problems == [
        f"{path}: YAML tag {tag!r} at line 1, column {text.index('!') + 1}: "
        "only plain text, numbers, lists and mappings are read"
    ]


def test_the_non_specific_tag_is_plain_text(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "accounts: ! x\n") == [
        "accounts: must be a list of accounts, got 'x'"
    ]


def test_deep_nesting_is_refused_before_composing(tmp_path: Path) -> None:
    depth = 100_000  # far past the interpreter's recursion limit
    path = write(tmp_path, "accounts: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(path, BASE)
    assert caught.value.problems == [f"{path}: nested deeper than 32 at line 1, column 42"]
    fine = "accounts: " + "[" * 30 + "]" * 30 + "\n"
    assert problems_of(tmp_path, fine) == ["accounts[0]: must be a mapping of fields, got a list"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "{path}: must be a mapping of fields, got nothing (null)"),
        ("- a\n", "{path}: must be a mapping of fields, got a list"),
        (
            "accounts: [\n",
            "{path}: not valid YAML: expected the node content, but found '<stream end>' "
            "at line 2, column 1",
        ),
        (
            "a: *nowhere\n",
            "{path}: not valid YAML: found undefined alias 'nowhere' at line 1, column 4",
        ),
        (
            "a: b\nc: d\ne: f\x07",
            "{path}: not valid YAML: character U+0007 is not allowed at line 3, column 5",
        ),
    ],
)
def test_what_is_not_a_config_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        configfile.load(path, BASE)
    assert caught.value.problems == [problem.format(path=path)]


# ---- check-config -----------------------------------------------------------------------


def test_check_config_prints_one_line_per_account_and_the_prices(tmp_path: Path) -> None:
    key_file = tmp_path / "sg"
    key_file.write_text(KEY + "\n")
    second = "  - {name: bj, site: cn, api_key_env: BJ_KEY, poll_interval: 1m30s}\n"
    text = ISSUE_EXAMPLE.replace("/run/secrets/sg", str(key_file)).replace(
        "prices:", second + "prices:"
    )
    path = write(tmp_path, text)
    code, lines = check_config(path, BASE, {"BJ_KEY": KEY})
    assert (code, lines) == (
        0,
        [
            f"sg-research: {INTL}, key from file {key_file}, workspace ws-123, models qwen3-8b, "
            "quota 20 (!CANCELED,!FAILED), every 60s",
            f"bj: {CN}, key from $BJ_KEY, default workspace, all models, "
            "quota 20 (!CANCELED,!FAILED), every 90s",
            "prices per 1k tokens in CNY: qwen3-8b 0.06; default 0.1",
        ],
    )
    assert not any(KEY in line for line in lines)


def test_check_config_reads_every_key_source_and_never_prints_a_key(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    two_lines = tmp_path / "two"
    two_lines.write_text(f"{KEY}\n{KEY}\n")
    path = write(
        tmp_path,
        f"""\
        accounts:
          - {{name: a, api_key_file: {tmp_path / "missing"}}}
          - {{name: b, api_key_file: {empty}}}
          - {{name: c, api_key_file: {two_lines}}}
          - {{name: d, api_key_env: UNSET}}
          - {{name: e, api_key_env: SPACED}}
          - {{name: f, api_key_env: GOOD}}
          - {{name: g, api_key_file: /dev/zero}}
        """,
    )
    code, lines = check_config(path, BASE, {"SPACED": "sk- x", "GOOD": KEY, "UNSET": " "})
    assert (code, lines) == (
        1,
        [
            "accounts[0].api_key_file: cannot read the key file: No such file or directory",
            "accounts[1].api_key_file: the key file is empty",
            "accounts[2].api_key_file: the key file holds more than one line; "
            "an API key is printable ASCII without spaces",
            "accounts[3].api_key_env: $UNSET is not set or empty",
            "accounts[4].api_key_env: $SPACED holds a space inside the key; "
            "an API key is printable ASCII without spaces",
            "accounts[6].api_key_file: the key file is a character device, "
            "not a file holding the key",
        ],
    )
    assert not any(KEY in line or str(tmp_path) in line for line in lines)


def test_check_config_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "accounts: [{name: a, api_key_env: FT_TEST_KEY, models: [m1, m2]}]\n")
    monkeypatch.delenv("FT_TEST_KEY", raising=False)
    assert check_config(path, BASE) == (
        1,
        ["accounts[0].api_key_env: $FT_TEST_KEY is not set or empty"],
    )
    assert check_config(path, BASE, {}) == check_config(path, BASE)
    monkeypatch.setenv("FT_TEST_KEY", KEY)
    assert check_config(path, BASE) == (
        0,
        [
            f"a: {INTL}, key from $FT_TEST_KEY, default workspace, models m1,m2, "
            "quota 20 (!CANCELED,!FAILED), every 60s"
        ],
    )


def test_check_config_passes_the_poll_floor_and_summarises_prices(tmp_path: Path) -> None:
    text = """\
    accounts: [{name: a, api_key_env: K, poll_interval: 0.2}]
    prices: {currency: USD, per_1k_tokens: {b: 2, a: 0.5}}
    """
    path = write(tmp_path, text)
    assert check_config(path, BASE, {"K": KEY}) == (
        1,
        ["accounts[0].poll_interval: must be at least 1s, got 0.2s"],
    )
    Path(path).write_text(text.replace("0.2", "1s"))  # the users' floor by default
    assert check_config(path, BASE, {"K": KEY})[0] == 0
    Path(path).write_text(text)
    assert check_config(path, BASE, {"K": KEY}, poll_floor=0.2)[1][1:] == [
        "prices per 1k tokens in USD: a 0.5, b 2; default none"
    ]
    Path(path).write_text(
        "accounts: [{name: a, api_key_env: K}]\n"
        "prices: {currency: USD, per_1k_tokens: {default: 1}}\n"
    )
    assert check_config(path, BASE, {"K": KEY})[1][1:] == [
        "prices per 1k tokens in USD: none listed; default 1"
    ]


def test_check_config_lists_every_problem_of_an_invalid_file(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n  - name: a\n  - name: a\n    api_key_env: K\n")
    assert check_config(path, BASE, {"K": KEY}) == (
        1,
        [
            "accounts[0]: no key source: set api_key_file or api_key_env",
            "accounts[1].name: duplicate of accounts[0].name 'a'",
        ],
    )
