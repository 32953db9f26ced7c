"""The ``--config.file`` of many accounts (issue 11): read, bounded, and validated whole.

The file::

    defaults:                 # optional; any account field except name
      poll_interval: 60s
    accounts:                 # required: 1 to 1000 accounts
      - name: sg-research     # required, unique, the `account` label value
        site: intl            # or base_url: https://...
        api_key_file: /run/secrets/sg   # or api_key_env: DASHSCOPE_API_KEY_SG
        quota_limit: 20
    prices:                   # optional
      currency: CNY
      per_1k_tokens: {qwen3-8b: 0.06, default: 0.1}

An account field is its flag without ``--dashscope.``, with dots and dashes as underscores
(so ``--poll.interval`` is ``poll_interval`` and ``--quota.limit`` is ``quota_limit``):

=====================================  =============================  ===================
flag                                   file field                     AccountSettings
=====================================  =============================  ===================
--dashscope.account                    name (accounts only)           name
(none)                                 site: intl | cn                base_url
--dashscope.base-url                   base_url                       base_url
--dashscope.api-key-file               api_key_file                   api_key_file
$DASHSCOPE_API_KEY                     api_key_env (a variable name)  api_key_env
--dashscope.workspace                  workspace                      workspace
--dashscope.model                      models (a list)                models
--dashscope.page-size                  page_size                      page_size
--dashscope.timeout                    timeout                        timeout
--dashscope.max-requests-per-second    max_requests_per_second        max_requests_per_second
--dashscope.max-attempts               max_attempts                   max_attempts
--dashscope.burst-requests             burst_requests                 burst_requests
--dashscope.ca-file                    ca_file                        ca_file
--dashscope.timezone                   timezone                       timezone
--poll.interval                        poll_interval                  poll_interval
--poll.sweep-timeout                   poll_sweep_timeout             sweep_timeout
--poll.full-sweep-interval             poll_full_sweep_interval       full_sweep_interval
--poll.max-staleness                   poll_max_staleness             max_staleness
--quota.limit                          quota_limit                    quota_limit
--quota.statuses                       quota_statuses                 quota
--jobs.max-series                      jobs_max_series                max_job_series
--jobs.max-aggregate-series            jobs_max_aggregate_series      max_aggregate_series
--logs.max-jobs                        logs_max_jobs                  log_max_jobs
--logs.max-lines-per-sweep             logs_max_lines_per_sweep       log_max_lines
=====================================  =============================  ===================

Values take the flags' syntax (durations ``30s``, ``1m30s``; a bare number is seconds)
and the flags' range checks (the same functions in :mod:`ft_exporter.config`). Each
setting is the account's, else the file's ``defaults:``, else ``base`` (built from the
flags). ``site``/``base_url`` and ``api_key_file``/``api_key_env`` are each one setting
said two ways: a level that says one replaces what a lower level said with the other.
The key source is never taken from ``base``: each account of a file names its own (or
the file's ``defaults:`` does), and the key itself is never read here.

Every problem is collected, one line each, starting with its path in the file
(``accounts[1].quota_limt: unknown field``). A value of ``api_key_file`` or
``api_key_env`` is never echoed: a key pasted there must not reach a log.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import tzinfo
from types import MappingProxyType
from typing import Any

import yaml

from ft_exporter import config, keyfile
from ft_exporter.client import normalise_base_url
from ft_exporter.collector import QuotaRule
from ft_exporter.cost import Prices
from ft_exporter.model import parse_timezone

#: A config file of 1000 accounts is about 300 KiB.
MAX_FILE_BYTES = 1 << 20
MAX_ACCOUNTS = 1000
#: Nodes after expanding every alias: a file of aliases of aliases ("billion laughs")
#: stays small on disk but would expand past memory.
MAX_NODES = 200_000
#: Deeper than any real config file (which is 4 deep); PyYAML composes recursively.
MAX_DEPTH = 32
MAX_NAME_CHARS = 64
SITES = {"intl": "https://dashscope-intl.aliyuncs.com", "cn": "https://dashscope.aliyuncs.com"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Field names that are safe to echo in "unknown field" ("poll-interval" is a likely typo);
# anything else may be pasted text, and a DashScope key starts with "sk-".
_FIELD_NAME = re.compile(r"(?!sk-)[A-Za-z_][A-Za-z0-9_-]{0,39}")
# Model names in prices: "qwen2.5-7b-instruct", "ft-202410291653-a1b2".
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")


class ConfigFileError(ValueError):
    """Every problem of a config file, one line each; ``str()`` is the first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0])
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """One account's settings: what the flags set today for the single account."""

    name: str
    base_url: str
    #: Exactly one of the two is set in a file's account: where its key is read from.
    api_key_file: str
    api_key_env: str
    workspace: str
    models: tuple[str, ...]
    quota_limit: int
    quota: QuotaRule
    poll_interval: float
    sweep_timeout: float
    max_staleness: float
    timeout: float
    max_requests_per_second: float
    max_attempts: int
    burst_requests: int
    page_size: int
    ca_file: str
    timezone: tzinfo
    max_job_series: int
    max_aggregate_series: int
    log_max_jobs: int
    log_max_lines: int
    full_sweep_interval: float = 600.0


@dataclass(frozen=True, slots=True)
class FileConfig:
    accounts: tuple[AccountSettings, ...]
    prices: Prices | None = None


# ---- values ---------------------------------------------------------------------------


def _shown(value: object) -> str:
    """A value in a message: text as quoted text, clipped; anything else by its kind."""
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:79] + "\u2026")
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {_shown(value)}")
    return config.check_text(value)


def _word(value: object) -> str:
    """Text that must say something: a workspace id, a model name, a path."""
    text = _text(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _name(value: object) -> str:
    name = _word(value)
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"longer than {MAX_NAME_CHARS} characters")
    return name


def _duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return config.parse_duration(str(value))
    return config.parse_duration(_text(value))


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return config.parse_count(str(value))
    if isinstance(value, str):
        return config.parse_count(_text(value))
    raise ValueError(f"not a whole number: {_shown(value)}")


def _number(value: object) -> float:
    """A finite number, or text float() reads as one (the flag's syntax)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {_shown(value)}")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"not a number: {_shown(value)}")
    return number


def _site(value: object) -> str:
    site = _text(value)
    if site not in SITES:
        raise ValueError(f"must be intl or cn, got {_shown(site)}")
    return SITES[site]


def _base_url(value: object) -> str:
    return normalise_base_url(_text(value))


def _key_file(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be the path of the file holding the key")
    try:
        return config.check_text(value).strip()
    except ValueError:
        raise ValueError("must be a path without control characters") from None


def _key_env(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ValueError("must be the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*)")
    return value


class _ItemError(ValueError):
    """A problem of one item of a list value: its path gets the item's index."""

    def __init__(self, suffix: str, message: str) -> None:
        super().__init__(message)
        self.suffix = suffix


def _models(value: object) -> tuple[str, ...]:
    """A list of model names, or one text of comma-separated names (like the variable)."""
    if isinstance(value, str):
        items: list[object] = [m for m in _text(value).split(",") if m.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"must be a list of model names, got {_shown(value)}")
    models = []
    for index, item in enumerate(items):
        try:
            models.append(_word(item))
        except ValueError as exc:
            raise _ItemError(f"[{index}]", str(exc)) from None
    return tuple(dict.fromkeys(models))


def _quota_rule(value: object) -> QuotaRule:
    rule = config.parse_quota_rule(_text(value))
    config.check_quota_statuses(rule)
    return rule


def _ca_file(value: object) -> str:
    path = _word(value)
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path!r}")
    return path


def _timezone(value: object) -> tzinfo:
    return parse_timezone(_text(value))


#: file field -> (AccountSettings attribute, parser, range checks); both raise ValueError.
_FIELDS: dict[str, tuple[str, Callable[[object], Any], *tuple[Callable[[Any], None], ...]]] = {
    "site": ("base_url", _site),
    "base_url": ("base_url", _base_url),
    "api_key_file": ("api_key_file", _key_file),
    "api_key_env": ("api_key_env", _key_env),
    "workspace": ("workspace", _word),
    "models": ("models", _models),
    "page_size": ("page_size", _count, config.check_page_size),
    "timeout": ("timeout", _duration, config.check_positive),
    "max_requests_per_second": (
        "max_requests_per_second",
        _number,
        config.check_positive,
    ),
    "max_attempts": ("max_attempts", _count, config.check_max_attempts),
    "burst_requests": ("burst_requests", _count, config.check_burst_requests),
    "ca_file": ("ca_file", _ca_file),
    "timezone": ("timezone", _timezone),
    "poll_interval": ("poll_interval", _duration),  # its floor is a parameter of load()
    "poll_sweep_timeout": ("sweep_timeout", _duration, config.check_positive),
    "poll_full_sweep_interval": (
        "full_sweep_interval",
        _duration,
        config.check_full_sweep_interval,
    ),
    "poll_max_staleness": ("max_staleness", _duration, config.check_positive),
    "quota_limit": ("quota_limit", _count, config.check_quota_limit),
    "quota_statuses": ("quota", _quota_rule),
    "jobs_max_series": ("max_job_series", _count, config.check_max_job_series),
    "jobs_max_aggregate_series": (
        "max_aggregate_series",
        _count,
        config.check_max_aggregate_series,
    ),
    "logs_max_jobs": ("log_max_jobs", _count, config.check_log_max_jobs),
    "logs_max_lines_per_sweep": ("log_max_lines", _count, config.check_log_max_lines),
}
#: Pairs that say one setting two ways: exclusive on one level.
_EXCLUSIVE = (("site", "base_url"), ("api_key_file", "api_key_env"))


def base_from_config(cfg: config.Config) -> AccountSettings:
    """The settings the flags and variables give: the defaults of a file's accounts.

    Also the single implicit account when no file is given (its key from
    ``--dashscope.api-key-file``, else from $DASHSCOPE_API_KEY).
    """
    return AccountSettings(
        name=cfg.account,
        base_url=cfg.base_url,
        api_key_file=cfg.api_key_file,
        api_key_env="" if cfg.api_key_file else config.API_KEY_ENV,
        workspace=cfg.workspace,
        models=cfg.models,
        quota_limit=cfg.quota_limit,
        quota=cfg.quota,
        poll_interval=cfg.poll_interval,
        sweep_timeout=cfg.sweep_timeout,
        full_sweep_interval=cfg.full_sweep_interval,
        max_staleness=cfg.max_staleness,
        timeout=cfg.timeout,
        max_requests_per_second=cfg.max_requests_per_second,
        max_attempts=cfg.max_attempts,
        burst_requests=cfg.burst_requests,
        page_size=cfg.page_size,
        ca_file=cfg.ca_file,
        timezone=cfg.timezone,
        max_job_series=cfg.max_job_series,
        max_aggregate_series=cfg.max_aggregate_series,
        log_max_jobs=cfg.log_max_jobs,
        log_max_lines=cfg.log_max_lines,
    )


# ---- reading --------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        data, _ = keyfile.read_regular_file(path, MAX_FILE_BYTES)
    except keyfile.NotRegularFile as exc:
        raise ConfigFileError([f"{path}: is {exc.kind}, not a config file"]) from None
    except keyfile.FileTooLarge:
        raise ConfigFileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"]) from None
    except OSError as exc:
        raise ConfigFileError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _screen(path: str, text: str) -> None:
    """Refuse before building anything: tags, too deep, too many nodes after aliases.

    Walks PyYAML's event stream (a state machine, not recursive), keeping per open
    collection its expanded node count, and per anchor the count it stands for.
    """
    sizes: list[int] = [0]  # expanded nodes per open collection; [0] is the stream
    anchors_of_open: list[str | None] = []
    anchors: dict[str, int] = {}
    try:
        for event in yaml.parse(text):  # events only: no constructor runs
            tag = getattr(event, "tag", None)
            if tag not in (None, "!"):
                raise ConfigFileError(
                    [
                        f"{path}: YAML tag {tag!r} at {_where(event.start_mark)}: "
                        "only plain text, numbers, lists and mappings are read"
                    ]
                )
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if len(sizes) > MAX_DEPTH:
                    raise ConfigFileError(
                        [f"{path}: nested deeper than {MAX_DEPTH} at {_where(event.start_mark)}"]
                    )
                sizes.append(1)
                anchors_of_open.append(event.anchor)
                continue
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                size = sizes.pop()
                anchor = anchors_of_open.pop()
                if anchor is not None:
                    anchors[anchor] = size
            elif isinstance(event, yaml.AliasEvent):
                size = anchors.get(event.anchor or "", 1)
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    anchors[event.anchor] = 1
            else:
                continue
            sizes[-1] += size
            if sizes[-1] > MAX_NODES:
                raise ConfigFileError(
                    [f"{path}: more than {MAX_NODES} values once aliases are expanded"]
                )
    except yaml.YAMLError as exc:
        raise ConfigFileError([_yaml_problem(path, exc, text)]) from None


def _yaml_problem(path: str, exc: yaml.YAMLError, text: str) -> str:
    """Where and what, without the file's text (PyYAML's snippet could hold a pasted key)."""
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return (
            f"{path}: not valid YAML: character U+{ord(text[exc.position]):04X} is not "
            f"allowed at line {line}, column {column}"
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        return f"{path}: not valid YAML: {exc.problem} at {_where(exc.problem_mark)}"
    return f"{path}: not valid YAML"


def _duplicate_keys(node: yaml.Node, problems: list[str]) -> None:
    """PyYAML keeps the last of two equal keys silently; a config file must not.

    Walked without recursion (the file's depth is bounded, but its width is not);
    the problems are sorted by where the second key stands in the file.
    """
    found: list[tuple[int, str]] = []
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    seen_nodes: set[int] = set()
    while stack:
        current, at = stack.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in current.value:
                # A scalar: a list or mapping as a key has failed construction already.
                text = str(key.value)
                child = _join(at, text)
                if text in keys:
                    found.append((key.start_mark.index, f"{child}: duplicate key"))
                keys.add(text)
                children.append((value, child))
        elif isinstance(current, yaml.SequenceNode):
            children = [(item, f"{at}[{i}]") for i, item in enumerate(current.value)]
        # Last pushed, first visited: a node behind an alias is named by its first place.
        stack.extend(reversed(children))
    problems.extend(problem for _, problem in sorted(found))


def _join(at: str, key: str, pattern: re.Pattern[str] = _FIELD_NAME) -> str:
    """``at.key``; a key unlike a field name is not echoed (it may be a pasted key)."""
    shown = key if pattern.fullmatch(key) else "(a key that is not a field name)"
    return f"{at}.{shown}" if at else shown


# ---- validating -----------------------------------------------------------------------


def _mapping(value: object, at: str, problems: list[str]) -> dict[Any, Any] | None:
    if isinstance(value, dict):
        return value
    problems.append(f"{at}: must be a mapping of fields, got {_shown(value)}")
    return None


def _unknown(data: Mapping[Any, Any], known: Iterable[str], at: str) -> list[str]:
    allowed = set(known)
    return [f"{_join(at, str(key))}: unknown field" for key in data if key not in allowed]


def _level(
    data: Mapping[Any, Any], at: str, poll_floor: float, problems: list[str]
) -> dict[str, Any]:
    """The settings one level (``defaults`` or one account) gives, parsed: attribute -> value."""
    problems.extend(_unknown(data, {*_FIELDS, "name"}, at))
    if "name" in data and at == "defaults":
        problems.append("defaults.name: not allowed: each account has its own name")
    for first, second in _EXCLUSIVE:
        if first in data and second in data:
            problems.append(f"{at}: {first} and {second} are exclusive")
    given: dict[str, Any] = {}
    for key, (attr, parse, *checks) in _FIELDS.items():
        if key not in data:
            continue
        try:
            value = parse(data[key])
            for check in checks:
                check(value)
            if key == "poll_interval":
                config.check_poll_interval(value, poll_floor)
        except ValueError as exc:
            suffix = exc.suffix if isinstance(exc, _ItemError) else ""
            problems.append(f"{at}.{key}{suffix}: {exc}")
            continue
        if key == "api_key_file":
            given["api_key_env"] = ""
        elif key == "api_key_env":
            given["api_key_file"] = ""
        given[attr] = value
    return given


def _prices(value: object, problems: list[str]) -> Prices | None:
    data = _mapping(value, "prices", problems)
    if data is None:
        return None
    problems.extend(_unknown(data, {"currency", "per_1k_tokens"}, "prices"))
    before = len(problems)
    currency = ""
    if "currency" not in data:
        problems.append("prices: missing currency")
    else:
        try:
            currency = _name(data["currency"])
        except ValueError as exc:
            problems.append(f"prices.currency: {exc}")
    table: dict[str, float] = {}
    default: float | None = None
    if "per_1k_tokens" not in data:
        problems.append("prices: missing per_1k_tokens")
    else:
        per_1k = _mapping(data["per_1k_tokens"], "prices.per_1k_tokens", problems) or {}
        for model, price in per_1k.items():
            at = _join("prices.per_1k_tokens", str(model), _MODEL_NAME)
            try:
                name = _word(model)
            except ValueError as exc:
                problems.append(f"{at}: model name {exc}")
                continue
            try:
                number = _number(price)
                if number < 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{at}: not a non-negative number: {_shown(price)}")
                continue
            if name == "default":
                default = number
            else:
                table[name] = number
    if len(problems) > before:
        return None
    return Prices(currency=currency, per_1k_tokens=MappingProxyType(table), default=default)


def _parse(data: object, base: AccountSettings, path: str, poll_floor: float) -> FileConfig:
    """Validate the loaded YAML ``data`` whole; ConfigFileError lists every problem."""
    problems: list[str] = []
    top = _mapping(data, path, problems)
    if top is None:
        raise ConfigFileError(problems)
    problems.extend(_unknown(top, {"defaults", "accounts", "prices"}, ""))
    defaults: dict[str, Any] = {}
    if "defaults" in top:
        given = _mapping(top["defaults"], "defaults", problems)
        defaults = _level(given, "defaults", poll_floor, problems) if given is not None else {}
    accounts: list[AccountSettings] = []
    raw_accounts = top.get("accounts")
    if raw_accounts is None:
        problems.append("accounts: missing: a list of accounts, each with a name")
    elif not isinstance(raw_accounts, list):
        problems.append(f"accounts: must be a list of accounts, got {_shown(raw_accounts)}")
    elif not raw_accounts:
        problems.append("accounts: empty: at least one account")
    elif len(raw_accounts) > MAX_ACCOUNTS:
        problems.append(f"accounts: {len(raw_accounts)} accounts, at most {MAX_ACCOUNTS}")
    else:
        first_of: dict[str, int] = {}
        for index, raw in enumerate(raw_accounts):
            account = _account(raw, index, base, defaults, first_of, poll_floor, problems)
            if account is not None:
                accounts.append(account)
    prices = _prices(top["prices"], problems) if "prices" in top else None
    if problems:
        raise ConfigFileError(problems)
    return FileConfig(accounts=tuple(accounts), prices=prices)


def _account(
    raw: object,
    index: int,
    base: AccountSettings,
    defaults: Mapping[str, Any],
    first_of: dict[str, int],
    poll_floor: float,
    problems: list[str],
) -> AccountSettings | None:
    at = f"accounts[{index}]"
    data = _mapping(raw, at, problems)
    if data is None:
        return None
    before = len(problems)
    name = ""
    if "name" not in data:
        problems.append(f"{at}: missing name")
    else:
        try:
            name = _name(data["name"])
        except ValueError as exc:
            problems.append(f"{at}.name: {exc}")
        else:
            if name in first_of:
                problems.append(f"{at}.name: duplicate of accounts[{first_of[name]}].name {name!r}")
            else:
                first_of[name] = index
    given = _level(data, at, poll_floor, problems)
    settings = {**defaults, **given}
    said = any(key in data for key in ("api_key_file", "api_key_env"))  # else reported
    if not (said or settings.get("api_key_file") or settings.get("api_key_env")):
        problems.append(f"{at}: no key source: set api_key_file or api_key_env")
    if len(problems) > before:
        return None
    # settings hold both key fields: _level sets the other one "" (base's are never kept).
    return replace(base, name=name, **settings)


def load(path: str, base: AccountSettings, *, poll_floor: float = 1.0) -> FileConfig:
    """Read and validate the file at ``path``; ConfigFileError lists every problem.

    ``base`` gives every setting neither the account nor ``defaults:`` gives (its name
    and key source are not used); ``poll_floor`` is the least poll interval (1 s).
    """
    text = _read(path)
    _screen(path, text)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigFileError([_yaml_problem(path, exc, text)]) from None
    finally:
        loader.dispose()
    problems: list[str] = []
    if node is not None:
        _duplicate_keys(node, problems)
    try:
        loaded = _parse(data, base, path, poll_floor)
    except ConfigFileError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigFileError(problems)
    return loaded


# ---- check-config ---------------------------------------------------------------------


def _key_problem(account: AccountSettings, at: str, environ: Mapping[str, str]) -> str | None:
    """Whether the account's key can be read now; the message never holds the key or path."""
    if account.api_key_file:
        try:
            keyfile.read_key_file(account.api_key_file, "the key file")
        except keyfile.InvalidKey as exc:
            return f"{at}.api_key_file: {exc}"
        return None
    source = f"${account.api_key_env}"
    try:
        key = keyfile.clean_key(environ.get(account.api_key_env, ""), source)
    except keyfile.InvalidKey as exc:
        return f"{at}.api_key_env: {exc}"
    return None if key else f"{at}.api_key_env: {source} is not set or empty"


def summary(account: AccountSettings) -> str:
    """One line that says what the exporter will do for this account; never its key."""
    key = (
        f"key from file {account.api_key_file}"
        if account.api_key_file
        else f"key from ${account.api_key_env}"
    )
    workspace = f"workspace {account.workspace}" if account.workspace else "default workspace"
    models = f"models {','.join(account.models)}" if account.models else "all models"
    return (
        f"{account.name}: {account.base_url}, {key}, {workspace}, {models}, "
        f"quota {account.quota_limit} ({account.quota.describe()}), "
        f"every {account.poll_interval:g}s"
    )


def check_config(
    path: str,
    base: AccountSettings,
    environ: Mapping[str, str] | None = None,
    *,
    poll_floor: float = 1.0,
) -> tuple[int, list[str]]:
    """``ft-exporter check-config FILE``: its exit code and the lines it prints.

    0 and one summary line per account (and one for the prices) when the file is valid
    and every key source can be read now; 1 and every problem otherwise.
    """
    env = os.environ if environ is None else environ
    try:
        loaded = load(path, base, poll_floor=poll_floor)
    except ConfigFileError as exc:
        return 1, exc.problems
    problems = [
        problem
        for index, account in enumerate(loaded.accounts)
        if (problem := _key_problem(account, f"accounts[{index}]", env)) is not None
    ]
    if problems:
        return 1, problems
    lines = [summary(account) for account in loaded.accounts]
    if loaded.prices is not None:
        lines.append(_prices_summary(loaded.prices))
    return 0, lines


def _prices_summary(prices: Prices) -> str:
    listed = ", ".join(
        f"{model} {price:g}" for model, price in sorted(prices.per_1k_tokens.items())
    )
    default = "none" if prices.default is None else f"{prices.default:g}"
    return (
        f"prices per 1k tokens in {prices.currency}: {listed or 'none listed'}; default {default}"
    )
