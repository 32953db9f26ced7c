"""Several accounts in one exporter (--config.file): each its own unit, reloaded whole.

Real processes: one simulator per account (each with its own key), the real exporter.
"""

from __future__ import annotations

import itertools
import json
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fixtures as fx
import pytest
from conftest import Exporter, Simulator, run_cli, samples, value, wait_for

from ft_exporter import sharding

pytestmark = pytest.mark.e2e


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[list[Simulator]]:
    started = [
        Simulator(tmp_path, key=f"sk-account-{n}-0123456789abcdef", scenario="static")
        for n in range(3)
    ]
    yield started
    for sim in started:
        sim.stop()


def account_yaml(name: str, sim: Simulator, env: str, **extra: Any) -> str:
    fields = {"name": name, "base_url": sim.url, "api_key_env": env, **extra}
    return "  - " + "\n    ".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()) + "\n"


def write_config(path: Path, accounts: list[str], defaults: str = "poll_interval: 1s") -> Path:
    path.write_text(f"defaults:\n  {defaults}\naccounts:\n" + "".join(accounts))
    return path


def keys_env(sims: list[Simulator]) -> dict[str, str]:
    return {f"KEY_{n}": sim.key for n, sim in enumerate(sims)}


def post_reload(exp: Exporter) -> tuple[int, str]:
    request = urllib.request.Request(exp.url + "/-/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def per_account(text: str, name: str) -> dict[str, float]:
    return {
        dict(labels)["account"]: v
        for (n, labels), v in samples(text).items()
        if n == name and "account" in dict(labels)
    }


def quota_used(model: str | None = None) -> int:
    """Jobs of the static account counted against the limit (not FAILED or CANCELED)."""
    return sum(
        n
        for (job_model, _, status), (n, _) in fx.NONZERO.items()
        if model in (None, job_model) and status not in ("FAILED", "CANCELED")
    )


def test_each_account_has_its_exact_values_and_a_failing_one_delays_no_other(
    sims: list[Simulator], exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "accounts.yml",
        [
            account_yaml("sg", sims[0], "KEY_0"),
            account_yaml("bj", sims[1], "KEY_1", quota_limit=30),
            account_yaml("hz", sims[2], "KEY_2", models=["qwen3-14b"], timeout="30s"),
        ],
    )
    exp = exporter_factory([f"--config.file={config}"], env=keys_env(sims))
    text = exp.metrics()
    # The static account: 16 jobs count against the limit, 19 listed (one malformed).
    assert per_account(text, "dashscope_finetune_quota_used_jobs") == {
        "sg": quota_used(),
        "bj": quota_used(),
        "hz": quota_used("qwen3-14b"),
    }
    assert quota_used() == 16
    assert per_account(text, "dashscope_finetune_quota_limit_jobs") == {
        "sg": 20,
        "bj": 30,
        "hz": 20,
    }
    assert per_account(text, "dashscope_finetune_up") == {"sg": 1, "bj": 1, "hz": 1}
    assert value(text, "dashscope_finetune_shard_accounts") == 3

    # bj is throttled on every request, hz hangs for 30 s on every request.
    sims[1].fault("throttle", endpoint="all")
    sims[2].fault("slow", delay=30, endpoint="all")
    start = len(sims[0].stats()["request_times"])
    wait_for(
        lambda: per_account(exp.metrics(), "dashscope_finetune_up")["bj"] == 0,
        what="bj down",
    )
    wait_for(lambda: len(sims[0].stats()["request_times"]) >= start + 6, what="6 sweeps of sg")
    times = sims[0].stats()["request_times"][start:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # sg keeps its 1 s schedule (one list request a sweep), whatever bj and hz do.
    assert max(gaps) < 2.5, gaps
    text = exp.metrics()
    assert per_account(text, "dashscope_finetune_up")["sg"] == 1
    assert per_account(text, "dashscope_finetune_quota_used_jobs")["sg"] == quota_used()
    throttled = value(
        text,
        "dashscope_finetune_api_errors_total",
        account="bj",
        endpoint="list",
        code="Throttling",
        http_status="429",
    )
    assert throttled is not None and throttled >= 1
    assert (
        value(
            text,
            "dashscope_finetune_api_errors_total",
            account="sg",
            endpoint="list",
            code="Throttling",
            http_status="429",
        )
        == 0
    )


def test_reload_adds_removes_and_changes_accounts_and_keeps_the_others_counting(
    sims: list[Simulator], exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    path = tmp_path / "accounts.yml"
    write_config(
        path,
        [
            account_yaml("keep", sims[0], "KEY_0"),
            account_yaml("change", sims[1], "KEY_1", quota_limit=20),
            account_yaml("drop", sims[2], "KEY_2"),
        ],
    )
    exp = exporter_factory([f"--config.file={path}"], env=keys_env(sims))

    def requests(account: str) -> float:
        got = value(
            exp.metrics(),
            "dashscope_finetune_api_requests_total",
            account=account,
            endpoint="list",
        )
        return got or 0

    wait_for(lambda: requests("keep") >= 3, what="three sweeps of keep")
    before = requests("keep")
    write_config(
        path,
        [
            account_yaml("keep", sims[0], "KEY_0"),
            account_yaml("change", sims[1], "KEY_1", quota_limit=7),
            account_yaml("new", sims[2], "KEY_2"),
        ],
    )
    assert post_reload(exp) == (200, "Reloaded\n")
    wait_for(
        lambda: (
            per_account(exp.metrics(), "dashscope_finetune_up")
            == {
                "keep": 1,
                "change": 1,
                "new": 1,
            }
        ),
        what="the new set of accounts up",
    )
    text = exp.metrics()
    assert requests("keep") >= before  # the same poller and counters: no reset
    assert per_account(text, "dashscope_finetune_quota_limit_jobs") == {
        "keep": 20,
        "change": 7,
        "new": 20,
    }
    assert all(dict(labels).get("account") != "drop" for _, labels in samples(text))
    assert value(text, "dashscope_finetune_config_last_reload_successful") == 1

    # An invalid file changes nothing and says why.
    path.write_text(path.read_text().replace("quota_limit: 7", "quota_limt: 7"))
    status, body = post_reload(exp)
    assert status == 500
    assert body == "Reload failed, nothing changed: accounts[1].quota_limt: unknown field\n"
    text = exp.metrics()
    assert value(text, "dashscope_finetune_config_last_reload_successful") == 0
    assert per_account(text, "dashscope_finetune_quota_limit_jobs")["change"] == 7
    assert requests("keep") >= before


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            "accounts:\n  - name: a\n    site: intl\n    api_key_env: K\n    quota_limt: 5\n",
            "accounts[0].quota_limt: unknown field",
        ),
        (
            "accounts:\n  - name: a\n    site: intl\n    api_key_env: K\n"
            "  - name: a\n    site: cn\n    api_key_env: K\n",
            "accounts[1].name: duplicate of accounts[0].name 'a'",
        ),
        (
            "accounts:\n  - name: a\n    site: intl\n",
            "accounts[0]: no key source: set api_key_file or api_key_env",
        ),
        (
            'accounts:\n  - name: "a\\x1b[31m"\n    site: intl\n    api_key_env: K\n',
            "accounts[0].name: contains a control character (U+001B)",
        ),
        (
            "accounts:\n  - name: a\n    site: intl\n    api_key_env: UNSET_KEY_VARIABLE\n",
            "accounts[0].api_key_env: $UNSET_KEY_VARIABLE is not set or empty",
        ),
    ],
)
def test_a_bad_config_file_stops_the_start_with_its_line_and_exit_2(
    tmp_path: Path, body: str, line: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(body)
    result = run_cli(f"--config.file={path}", env={"K": "sk-some-key-0123456789"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"ft-exporter: error: {line}"]
    assert "sk-some-key" not in result.stderr


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/dev/zero", "/dev/zero: is a character device, not a config file"),
        ("/nonexistent/x.yml", "/nonexistent/x.yml: cannot read: No such file or directory"),
        ("/", "/: is a directory, not a config file"),
    ],
)
def test_a_config_path_that_is_no_file_stops_the_start_at_once(path: str, line: str) -> None:
    result = run_cli(f"--config.file={path}", timeout=10)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"ft-exporter: error: {line}"]


def test_check_config_prints_a_line_per_account_and_never_a_key(tmp_path: Path) -> None:
    key = "sk-check-config-0123456789"
    (tmp_path / "key").write_text(key + "\n")
    good = tmp_path / "good.yml"
    good.write_text(
        textwrap.dedent(
            f"""\
            accounts:
              - name: sg
                site: intl
                api_key_file: {tmp_path / "key"}
                workspace: ws-1
              - name: bj
                site: cn
                api_key_env: BJ_KEY
                models: [qwen3-8b]
                poll_interval: 2m
            """
        )
    )
    result = run_cli("check-config", str(good), env={"BJ_KEY": key})
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"sg: https://dashscope-intl.aliyuncs.com, key from file {tmp_path / 'key'}, "
        "workspace ws-1, all models, quota 20 (!CANCELED,!FAILED), every 60s",
        "bj: https://dashscope.aliyuncs.com, key from $BJ_KEY, default workspace, "
        "models qwen3-8b, quota 20 (!CANCELED,!FAILED), every 120s",
    ]
    bad = run_cli("check-config", str(good), env={})
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == ["accounts[1].api_key_env: $BJ_KEY is not set or empty"]
    assert key not in result.stdout + bad.stdout + bad.stderr
    usage = run_cli("check-config")
    assert usage.returncode == 2


def test_shards_poll_disjoint_accounts_that_cover_them_all(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    names = [f"team-{n:02d}" for n in range(20)]
    config = write_config(
        tmp_path / "accounts.yml",
        [account_yaml(name, simulator, "KEY") for name in names],
        defaults="poll_interval: 1h",
    )
    polled: list[set[str]] = []
    for shard in range(3):
        exp = exporter_factory(
            [f"--config.file={config}", f"--shard={shard}", "--total-shards=3"],
            env={"KEY": simulator.key},
        )
        text = exp.metrics()
        accounts = set(per_account(text, "dashscope_finetune_up"))
        assert accounts == set(sharding.owned(names, shard, 3))
        assert value(text, "dashscope_finetune_shard_accounts") == len(accounts)
        polled.append(accounts)
        exp.stop()
    assert set().union(*polled) == set(names)
    assert sum(len(p) for p in polled) == len(names)


def test_estimated_cost_has_its_hand_computed_values(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    """The static account's tokens by model (tests/fixtures.py), priced by hand."""
    config = tmp_path / "accounts.yml"
    config.write_text(
        "accounts:\n"
        + account_yaml("sg", simulator, "KEY")
        + "prices:\n  currency: CNY\n  per_1k_tokens: {qwen3-14b: 0.5, qwen3-8b: 0.25}\n"
    )
    exp = exporter_factory([f"--config.file={config}"], env={"KEY": simulator.key})
    costs = {
        (dict(labels)["model"], dict(labels)["currency"]): v
        for (name, labels), v in samples(exp.metrics()).items()
        if name == "dashscope_finetune_estimated_cost"
    }
    # qwen3-14b: 279808 + 100000 + 50000 + 12345 = 442153 tokens; qwen3-8b: 2000 + 3000.
    assert costs == {("qwen3-14b", "CNY"): 221.0765, ("qwen3-8b", "CNY"): 1.25}
    # qwen2.5-7b-instruct (4096 tokens) has no price and there is no default: no series.
    assert "model qwen2.5-7b-instruct has no price" in exp.output()
    tokens = {
        model: sum(t for (m, _, _), (_, t) in fx.NONZERO.items() if m == model)
        for model in ("qwen3-14b", "qwen3-8b", "qwen2.5-7b-instruct")
    }
    assert tokens == {"qwen3-14b": 442153, "qwen3-8b": 5000, "qwen2.5-7b-instruct": 4096}


def test_a_reload_that_adds_accounts_keeps_each_existing_one_on_its_shard(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    path = tmp_path / "accounts.yml"
    first = [f"team-{n:02d}" for n in range(12)]
    write_config(path, [account_yaml(n, simulator, "KEY") for n in first], "poll_interval: 1s")
    exp = exporter_factory(
        [f"--config.file={path}", "--shard=1", "--total-shards=3"], env={"KEY": simulator.key}
    )
    owned_before = set(per_account(exp.metrics(), "dashscope_finetune_up"))
    assert owned_before == set(sharding.owned(first, 1, 3))

    def sweeps() -> dict[str, float]:
        return per_account(exp.metrics(), "dashscope_finetune_sweeps_total")

    wait_for(lambda: min(sweeps().values()) >= 2, what="two sweeps of each account")
    before = sweeps()
    more = first + [f"team-{n:02d}" for n in range(12, 30)]
    write_config(path, [account_yaml(n, simulator, "KEY") for n in more], "poll_interval: 1s")
    assert post_reload(exp) == (200, "Reloaded\n")
    owned_after = set(sharding.owned(more, 1, 3))
    assert owned_before <= owned_after  # nobody moved away
    wait_for(
        lambda: set(per_account(exp.metrics(), "dashscope_finetune_up")) == owned_after,
        what="the new accounts of this shard",
    )
    after = sweeps()
    # The accounts it had keep their pollers: their sweep counts go on from where they were,
    # and the reload says it added this shard's new accounts and changed nothing else.
    assert all(after[name] >= before[name] for name in owned_before)
    added = ",".join(n for n in more if n in owned_after - owned_before)
    assert (
        f"accounts: {len(owned_after)} polled; added {added}, changed none, removed none"
        in exp.output()
    )
    assert value(exp.metrics(), "dashscope_finetune_shard_accounts") == len(owned_after)
