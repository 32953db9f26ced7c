"""Command-line and environment configuration, validated before anything starts.

Every flag can also be set through an environment variable (flag wins). Bad
configuration raises :class:`ConfigError`; the CLI turns it into one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, NoReturn

from ft_exporter import keyfile, sharding, webconfig
from ft_exporter.client import normalise_base_url
from ft_exporter.collector import DEFAULT_MAX_AGGREGATE_SERIES, QuotaRule
from ft_exporter.model import DOCUMENTED_STATUSES, normalise_status, parse_timezone
from ft_exporter.secret import Secret
from ft_exporter.tailer import DEFAULT_MAX_JOBS, DEFAULT_MAX_LINES
from ft_exporter.version import version_text

#: Not in /etc/services (IANA) nor in Prometheus' default port allocations; see the README.
DEFAULT_PORT = 11550
DEFAULT_BASE_URL = "https://dashscope-intl.aliyuncs.com"
API_KEY_ENV = "DASHSCOPE_API_KEY"
MODELS_ENV = "FT_EXPORTER_DASHSCOPE_MODEL"
POLL_INTERVAL_ENV = "FT_EXPORTER_POLL_INTERVAL"
#: --poll.interval under --demo when none is given: the demo's jobs run for three minutes.
DEMO_POLL_INTERVAL = 10.0
#: Far above any real need; a typo of extra zeros is refused rather than obeyed.
MAX_CONNECTIONS = 100_000
#: Upper bounds of the --logs.* flags: 11 series and one request per sweep per job.
MAX_LOG_JOBS = 1000
MAX_LOG_LINES = 100_000
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")

#: Statuses --quota.statuses accepts: the documented ones and those the SDK knows.
KNOWN_STATUSES = frozenset({*DOCUMENTED_STATUSES, "SUSPENDED", "UNKNOWN"})

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(ValueError):
    """Configuration that cannot work; reported as one line, exit code 2."""


def parse_count(text: str) -> int:
    """A whole number in decimal digits (int() alone would say 'invalid literal ... base 10')."""
    value = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,9}", value):
        raise ValueError(f"not a whole number: {text!r}")
    return int(value)


def parse_duration(text: str) -> float:
    """Prometheus-style durations (``90s``, ``1m30s``, ``15m``) or plain seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # float() also reads "nan" and "inf", which no comparison with a bound refuses.
        if math.isfinite(seconds):
            return seconds
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 1m30s, 15m)")
    return total


def parse_listen_address(text: str) -> tuple[str, int]:
    """``:11550``, ``0.0.0.0:11550``, ``127.0.0.1:0`` or ``[::1]:11550`` into (host, port)."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"not a listen address: {text!r}")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"not a listen address: {text!r} (use host:port or :port)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"not a port number in listen address: {text!r}")
    return host, int(port_text)


def parse_quota_rule(text: str) -> QuotaRule:
    """``!FAILED,!CANCELED`` (count all but these) or ``RUNNING,SUCCEEDED`` (count only these).

    Its messages name no setting: the flag and the config file each put their own name first.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("is empty")
    negated = [item[1:] for item in items if item.startswith("!")]
    plain = [item for item in items if not item.startswith("!")]
    if negated and plain:
        raise ValueError("mixes '!STATUS' and 'STATUS'; use one form")
    if negated:
        return QuotaRule(counted=None, excluded=frozenset(normalise_status(s) for s in negated))
    return QuotaRule(counted=frozenset(normalise_status(s) for s in plain))


def parse_quota_statuses(text: str) -> QuotaRule:
    """:func:`parse_quota_rule` for the flag, whose messages start with its name."""
    try:
        return parse_quota_rule(text)
    except ValueError as exc:
        raise ValueError(f"--quota.statuses {exc}") from None


# The range checks of the per-account settings, shared by the flags (load) and the config
# file (configfile): each raises ValueError with a message that names no setting.


def check_page_size(value: int) -> None:
    if not 1 <= value <= 100:
        raise ValueError(f"must be between 1 and 100, got {value}")


def check_poll_interval(value: float, floor: float = 1.0) -> None:
    """``floor`` is 1 s for users; the project's tests may lower it (see min_poll_interval)."""
    if not value >= floor:
        raise ValueError(f"must be at least 1s, got {value:g}s")


def check_full_sweep_interval(value: float) -> None:
    if not value >= 0:
        raise ValueError(f"must be 0 (every sweep reads every page) or more, got {value:g}s")


def check_positive(value: float) -> None:
    if not value > 0:
        raise ValueError("must be positive")


def check_max_attempts(value: int) -> None:
    if not 1 <= value <= 10:
        raise ValueError("must be between 1 and 10")


def check_burst_requests(value: int) -> None:
    if not 1 <= value <= 1000:
        raise ValueError(f"must be between 1 and 1000, got {value}")


def check_quota_limit(value: int) -> None:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")


def check_max_job_series(value: int) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def check_max_aggregate_series(value: int) -> None:
    if value < len(DOCUMENTED_STATUSES):
        raise ValueError(
            f"must be at least {len(DOCUMENTED_STATUSES)} "
            f"(one model's documented statuses), got {value}"
        )


def check_log_max_jobs(value: int) -> None:
    if not 0 <= value <= MAX_LOG_JOBS:
        raise ValueError(f"must be between 0 and {MAX_LOG_JOBS}, got {value}")


def check_log_max_lines(value: int) -> None:
    if not 1 <= value <= MAX_LOG_LINES:
        raise ValueError(f"must be between 1 and {MAX_LOG_LINES}, got {value}")


def check_quota_statuses(rule: QuotaRule) -> None:
    unknown = [s for s in _quota_statuses(rule) if s not in KNOWN_STATUSES]
    if unknown:
        raise ValueError(f"names unknown status(es): {', '.join(unknown)}")


@dataclass(frozen=True)
class Config:
    """Everything the exporter needs, already validated."""

    api_key: Secret
    #: Re-read when it changes; "" when the key came from the environment.
    api_key_file: str = ""
    config_file: str = ""
    shard: int = 0
    total_shards: int = 1
    listen_host: str = ""
    listen_port: int = DEFAULT_PORT
    telemetry_path: str = "/metrics"
    base_url: str = DEFAULT_BASE_URL
    workspace: str = ""
    models: tuple[str, ...] = ()
    page_size: int = 100
    timeout: float = 10.0
    max_requests_per_second: float = 2.0
    max_attempts: int = 4
    burst_requests: int = 20
    ca_file: str = ""
    sweep_timeout: float = 60.0
    full_sweep_interval: float = 600.0
    timezone: tzinfo = field(default_factory=lambda: parse_timezone("+08:00"))
    account: str = "default"
    poll_interval: float = 60.0
    max_staleness: float = 900.0
    quota_limit: int = 20
    quota: QuotaRule = field(default_factory=QuotaRule)
    max_job_series: int = 100
    max_aggregate_series: int = DEFAULT_MAX_AGGREGATE_SERIES
    log_max_jobs: int = DEFAULT_MAX_JOBS
    log_max_lines: int = DEFAULT_MAX_LINES
    log_level: str = "info"
    log_format: str = "logfmt"
    demo: bool = False
    web_config_file: str = ""
    web: webconfig.WebConfig = field(default_factory=webconfig.WebConfig)
    #: Serve /-/healthy and /-/ready without basic auth (TLS still applies).
    health_no_auth: bool = False
    max_connections: int = 512
    read_header_timeout: float = 10.0
    idle_timeout: float = 300.0


#: Endpoints that --web.health-no-auth exempts from basic auth.
HEALTH_PATHS = ("/-/healthy", "/-/ready")
#: What every boolean variable accepts, in any case and with surrounding whitespace.
BOOLEAN_WORDS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def parse_env_bool(name: str, raw: str | None) -> bool | None:
    """One rule for every boolean variable; None (unset or empty) means the default."""
    text = (raw or "").strip().lower()
    if not text:
        return None
    if text not in BOOLEAN_WORDS:
        raise ConfigError(
            f"{name} must be one of 1, true, yes, on or 0, false, no, off (any case), got {raw!r}"
        )
    return BOOLEAN_WORDS[text]


@dataclass(frozen=True)
class _Flag:
    name: str
    env: str
    help: str
    default: str | None = None
    kind: Callable[[str], Any] = str
    #: The value's name in --help when its parser does not say it (see _metavar).
    metavar: str = ""
    #: The only values it takes, listed in --help (load() checks them).
    choices: tuple[str, ...] = ()


def _metavar(flag: _Flag) -> str:
    """What --help calls the flag's value: its choices, else named after its parser."""
    if flag.choices:
        return "{" + ",".join(flag.choices) + "}"
    if flag.metavar:
        return flag.metavar
    by_kind: dict[Callable[[str], Any], str] = {
        parse_duration: "DURATION",
        parse_count: "N",
        float: "NUMBER",
        parse_listen_address: "ADDRESS",
        normalise_base_url: "URL",
        parse_timezone: "ZONE",
        parse_quota_statuses: "STATUSES",
    }
    if flag.kind in by_kind:
        return by_kind[flag.kind]
    return "FILE" if flag.name.endswith("file") else "TEXT"


_FLAGS: tuple[_Flag, ...] = (
    _Flag(
        "web.listen-address",
        "FT_EXPORTER_WEB_LISTEN_ADDRESS",
        "address to serve metrics on",
        f":{DEFAULT_PORT}",
        parse_listen_address,
    ),
    _Flag(
        "web.telemetry-path",
        "FT_EXPORTER_WEB_TELEMETRY_PATH",
        "path under which metrics are served",
        "/metrics",
        metavar="PATH",
    ),
    _Flag(
        "web.config.file",
        "FT_EXPORTER_WEB_CONFIG_FILE",
        "Prometheus exporter-toolkit web configuration (TLS, basic auth, headers); "
        "default: plain HTTP without auth",
    ),
    _Flag(
        "web.max-connections",
        "FT_EXPORTER_WEB_MAX_CONNECTIONS",
        "most HTTP connections held at once; past it the oldest connection still waiting "
        "for a request is closed (lowered to fit the open-file limit)",
        "512",
        parse_count,
    ),
    _Flag(
        "web.read-header-timeout",
        "FT_EXPORTER_WEB_READ_HEADER_TIMEOUT",
        "time a client gets to send a whole request head (and TLS handshake), however "
        "slowly it trickles",
        "10s",
        parse_duration,
    ),
    _Flag(
        "web.idle-timeout",
        "FT_EXPORTER_WEB_IDLE_TIMEOUT",
        "time a kept-alive connection may idle between requests",
        "5m",
        parse_duration,
    ),
    _Flag(
        "config.file",
        "FT_EXPORTER_CONFIG_FILE",
        "YAML file of accounts (and prices) to poll; reloaded on SIGHUP and POST /-/reload. "
        "The flags below then give the accounts' defaults",
    ),
    _Flag(
        "shard",
        "FT_EXPORTER_SHARD",
        "this replica's shard, 0 .. --total-shards - 1: it polls only the accounts whose "
        "name hashes to it",
        "0",
        parse_count,
    ),
    _Flag(
        "total-shards",
        "FT_EXPORTER_TOTAL_SHARDS",
        "replicas sharing the accounts of --config.file (1: this one polls them all)",
        "1",
        parse_count,
    ),
    _Flag(
        "dashscope.base-url",
        "DASHSCOPE_BASE_URL",
        "API base URL (Singapore: https://dashscope-intl.aliyuncs.com, "
        "Beijing: https://dashscope.aliyuncs.com); a URL ending in /api/v1 works too",
        DEFAULT_BASE_URL,
        normalise_base_url,
    ),
    _Flag(
        "dashscope.api-key-file",
        "FT_EXPORTER_DASHSCOPE_API_KEY_FILE",
        f"file holding the API key (else ${API_KEY_ENV} is used); re-read when it changes",
    ),
    _Flag(
        "dashscope.workspace",
        "FT_EXPORTER_DASHSCOPE_WORKSPACE",
        "workspace id sent as X-DashScope-WorkSpace (default: the key's default workspace)",
        metavar="ID",
    ),
    _Flag(
        "dashscope.model",
        MODELS_ENV,
        "only list jobs of this model; repeat the flag (or comma-separate the variable) "
        "for several; default: all jobs",
        metavar="MODEL",
    ),
    _Flag(
        "dashscope.page-size",
        "FT_EXPORTER_DASHSCOPE_PAGE_SIZE",
        "jobs per API page, 1..100",
        "100",
        parse_count,
    ),
    _Flag(
        "dashscope.timeout",
        "FT_EXPORTER_DASHSCOPE_TIMEOUT",
        "timeout of each API request",
        "10s",
        parse_duration,
    ),
    _Flag(
        "dashscope.max-requests-per-second",
        "FT_EXPORTER_DASHSCOPE_MAX_REQUESTS_PER_SECOND",
        "client-side rate limit of API requests, over any run longer than a burst",
        "2",
        float,
    ),
    _Flag(
        "dashscope.burst-requests",
        "FT_EXPORTER_DASHSCOPE_BURST_REQUESTS",
        "requests that may go at once after a quiet spell (1 = evenly spaced); 20 lets a "
        "1,000-job account's first sweep, or the logs of 20 running jobs, go without waiting",
        "20",
        parse_count,
    ),
    _Flag(
        "dashscope.max-attempts",
        "FT_EXPORTER_DASHSCOPE_MAX_ATTEMPTS",
        "attempts per request on 429, 5xx, timeouts and connection errors (1 = no retry)",
        "4",
        parse_count,
    ),
    _Flag(
        "dashscope.ca-file",
        "FT_EXPORTER_DASHSCOPE_CA_FILE",
        "PEM bundle of CAs to verify the API's certificate with (e.g. a corporate "
        "proxy's); default: the system's",
    ),
    _Flag(
        "dashscope.timezone",
        "FT_EXPORTER_DASHSCOPE_TIMEZONE",
        "zone of the API's zone-less timestamps (+08:00, UTC, Asia/Shanghai)",
        "+08:00",
        parse_timezone,
    ),
    _Flag(
        "dashscope.account",
        "FT_EXPORTER_DASHSCOPE_ACCOUNT",
        "value of the 'account' label on every series",
        "default",
        metavar="NAME",
    ),
    _Flag(
        "poll.interval",
        POLL_INTERVAL_ENV,
        "time between sweeps of the API (at least 1s; 10s by default with --demo)",
        "60s",
        parse_duration,
    ),
    _Flag(
        "poll.sweep-timeout",
        "FT_EXPORTER_POLL_SWEEP_TIMEOUT",
        "deadline for a whole sweep, retries included",
        "60s",
        parse_duration,
    ),
    _Flag(
        "poll.full-sweep-interval",
        "FT_EXPORTER_POLL_FULL_SWEEP_INTERVAL",
        "read every page at least this often; sweeps in between read only what can have "
        "changed (0: every sweep reads every page)",
        "10m",
        parse_duration,
    ),
    _Flag(
        "poll.max-staleness",
        "FT_EXPORTER_POLL_MAX_STALENESS",
        "withdraw job series when the last complete sweep is older than this",
        "15m",
        parse_duration,
    ),
    _Flag(
        "quota.limit",
        "FT_EXPORTER_QUOTA_LIMIT",
        "the account's limit of running-or-succeeded jobs",
        "20",
        parse_count,
    ),
    _Flag(
        "quota.statuses",
        "FT_EXPORTER_QUOTA_STATUSES",
        "statuses counted against the limit: a list (RUNNING,SUCCEEDED) or "
        "exclusions (!FAILED,!CANCELED)",
        "!FAILED,!CANCELED",
        parse_quota_statuses,
    ),
    _Flag(
        "jobs.max-series",
        "FT_EXPORTER_JOBS_MAX_SERIES",
        "most jobs given per-job series (active first, then most recently ended)",
        "100",
        parse_count,
    ),
    _Flag(
        "jobs.max-aggregate-series",
        "FT_EXPORTER_JOBS_MAX_AGGREGATE_SERIES",
        "most series of dashscope_finetune_jobs (and of usage_tokens), at least 7; "
        "groups with active jobs, then with more jobs, are kept first",
        str(DEFAULT_MAX_AGGREGATE_SERIES),
        parse_count,
    ),
    _Flag(
        "logs.max-jobs",
        "FT_EXPORTER_LOGS_MAX_JOBS",
        "most RUNNING jobs whose training log is read after each sweep (one request each "
        "per sweep); 0 turns training metrics off",
        str(DEFAULT_MAX_JOBS),
        parse_count,
    ),
    _Flag(
        "logs.max-lines-per-sweep",
        "FT_EXPORTER_LOGS_MAX_LINES_PER_SWEEP",
        "most log lines read per job per sweep (1000 per request); a log further behind is "
        "read from its newest lines",
        str(DEFAULT_MAX_LINES),
        parse_count,
    ),
    _Flag(
        "log.level",
        "FT_EXPORTER_LOG_LEVEL",
        "least severe log level written",
        "info",
        choices=LOG_LEVELS,
    ),
    _Flag(
        "log.format",
        "FT_EXPORTER_LOG_FORMAT",
        "format of the log lines",
        "logfmt",
        choices=LOG_FORMATS,
    ),
)


#: On/off flags; their variables take what :func:`parse_env_bool` accepts.
_SWITCHES: tuple[_Flag, ...] = (
    _Flag(
        "web.health-no-auth",
        "FT_EXPORTER_WEB_HEALTH_NO_AUTH",
        "serve /-/healthy and /-/ready without basic auth when the web config sets "
        "basic_auth_users (TLS and client certificates still apply)",
    ),
    _Flag(
        "demo",
        "FT_EXPORTER_DEMO",
        "start the built-in API simulator on loopback and export it (no cloud account needed)",
    ),
)


def _dest(flag: _Flag) -> str:
    return flag.name.replace(".", "_").replace("-", "_")


#: Hidden, for the project's own tests only: lets a test sweep every 0.2 s instead of 1 s.
#: Not a flag and not documented for users, who keep the 1 s minimum.
TEST_MIN_POLL_INTERVAL_ENV = "_FT_EXPORTER_TEST_MIN_POLL_INTERVAL"


def min_poll_interval(environ: Mapping[str, str]) -> float:
    raw = environ.get(TEST_MIN_POLL_INTERVAL_ENV, "")
    try:
        floor = float(raw) if raw else 1.0
    except ValueError:
        return 1.0
    return min(max(floor, 0.05), 1.0)


def check_text(text: str) -> str:
    """Refuse text no setting can mean: control characters, or bytes that are not UTF-8.

    Non-UTF-8 bytes in argv or the environment reach Python as lone surrogates, which
    fail much later (an account label that breaks every scrape, a workspace header that
    fails every request); refusing them here keeps the failure at start, in one line.
    """
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError("not valid UTF-8 text")
        if code < 0x20 or 0x7F <= code <= 0x9F:
            raise ValueError(f"contains a control character (U+{code:04X})")
    return text


def _typed(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """Let argparse show the converter's own message instead of 'invalid value'."""

    def convert(text: str) -> Any:
        try:
            return kind(check_text(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


class _PrintVersion(argparse.Action):
    """--version as exporters print it, its lines kept (argparse's own action reflows them)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str = "") -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_text())
        parser.exit(0)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown only where there is one: no "(default: None)" or "(default: False)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


USAGE = """ft-exporter [FLAGS]
       ft-exporter check [--output {table,json}] [FLAGS]
       ft-exporter check-config FILE [FLAGS]"""


class _Parser(argparse.ArgumentParser):
    """argparse, but every error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ft-exporter",
        usage=USAGE,
        description="Prometheus exporter for Alibaba Cloud Model Studio (DashScope) "
        "fine-tune jobs. Every flag can also be set by the environment variable shown. "
        "`check` sweeps every account once, prints what it saw and exits (0 ok, 1 API "
        "error, 2 bad configuration); `check-config` validates a --config.file.",
        formatter_class=_HelpFormatter,
    )
    for flag in _FLAGS:
        raw = env.get(flag.env, flag.default)
        help_text = f"{flag.help} [env {flag.env}]"
        if flag.name == "dashscope.model":
            models = [m.strip() for m in raw.split(",") if m.strip()] if raw else []
            parser.add_argument(
                f"--{flag.name}",
                dest="models",
                action="append",
                type=_typed(str),
                default=None,
                metavar=_metavar(flag),
                help=help_text,
            )
            parser.set_defaults(env_models=models)
            continue
        parser.add_argument(
            f"--{flag.name}",
            dest=_dest(flag),
            default=raw,
            type=_typed(flag.kind),
            metavar=_metavar(flag),
            help=help_text,
        )
    for flag in _SWITCHES:
        # The variable is read in load(), so that a bad value is a ConfigError, not --help's.
        parser.add_argument(
            f"--{flag.name}",
            dest=_dest(flag),
            action="store_true",
            help=f"{flag.help} [env {flag.env}=true]",
        )
    parser.add_argument(
        "--version", action=_PrintVersion, help="print the version, revision and platform"
    )
    parser.epilog = (
        f"The API key is read from ${API_KEY_ENV} or --dashscope.api-key-file; "
        "it never appears in logs or metrics."
    )
    return parser


def _read_key(path: str, environ: Mapping[str, str]) -> str:
    """The key from the file at ``path``, else from $DASHSCOPE_API_KEY, checked alike."""
    try:
        if path:
            return keyfile.read_key_file(path)[0]
        key = keyfile.clean_key(environ.get(API_KEY_ENV, ""), f"${API_KEY_ENV}")
    except keyfile.InvalidKey as exc:
        raise ConfigError(str(exc)) from None
    if not key:
        raise ConfigError(
            f"no API key: set ${API_KEY_ENV} or --dashscope.api-key-file (or try --demo)"
        )
    return key


def _check(flag: str, check: Callable[[Any], None], value: Any) -> None:
    """Run a shared range check on a flag's value; its message follows the flag's name."""
    try:
        check(value)
    except ValueError as exc:
        raise ConfigError(f"--{flag} {exc}") from None


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate. argparse errors exit 2 themselves; the rest raise ConfigError."""
    environ = os.environ if env is None else env
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(environ).parse_args(argv_list)
    for switch in _SWITCHES:
        # The flag turns it on; otherwise the variable decides, and it must make sense.
        from_env = parse_env_bool(switch.env, environ.get(switch.env))
        setattr(args, _dest(switch), bool(getattr(args, _dest(switch)) or from_env))
    try:
        check_text(environ.get(MODELS_ENV, ""))
    except ValueError as exc:
        raise ConfigError(f"{MODELS_ENV}: {exc}") from None
    _check("dashscope.page-size", check_page_size, args.dashscope_page_size)
    _check(
        "poll.interval",
        lambda v: check_poll_interval(v, min_poll_interval(environ)),
        args.poll_interval,
    )
    _check("poll.max-staleness", check_positive, args.poll_max_staleness)
    _check("dashscope.timeout", check_positive, args.dashscope_timeout)
    _check(
        "dashscope.max-requests-per-second", check_positive, args.dashscope_max_requests_per_second
    )
    _check("dashscope.max-attempts", check_max_attempts, args.dashscope_max_attempts)
    _check("dashscope.burst-requests", check_burst_requests, args.dashscope_burst_requests)
    _check("poll.sweep-timeout", check_positive, args.poll_sweep_timeout)
    _check("poll.full-sweep-interval", check_full_sweep_interval, args.poll_full_sweep_interval)
    if args.dashscope_ca_file and not os.access(args.dashscope_ca_file, os.R_OK):
        raise ConfigError(f"cannot read --dashscope.ca-file {args.dashscope_ca_file!r}")
    _check("quota.limit", check_quota_limit, args.quota_limit)
    _check("jobs.max-series", check_max_job_series, args.jobs_max_series)
    if not 1 <= args.web_max_connections <= MAX_CONNECTIONS:
        raise ConfigError(
            f"--web.max-connections must be between 1 and {MAX_CONNECTIONS}, "
            f"got {args.web_max_connections}"
        )
    if not 0 < args.web_read_header_timeout <= 600:
        raise ConfigError("--web.read-header-timeout must be positive and at most 10m")
    if not 0 < args.web_idle_timeout <= 3600:
        raise ConfigError("--web.idle-timeout must be positive and at most 1h")
    _check("jobs.max-aggregate-series", check_max_aggregate_series, args.jobs_max_aggregate_series)
    _check("logs.max-jobs", check_log_max_jobs, args.logs_max_jobs)
    _check("logs.max-lines-per-sweep", check_log_max_lines, args.logs_max_lines_per_sweep)
    if args.log_level not in LOG_LEVELS:
        raise ConfigError(f"--log.level must be one of {', '.join(LOG_LEVELS)}")
    if args.log_format not in LOG_FORMATS:
        raise ConfigError(f"--log.format must be one of {', '.join(LOG_FORMATS)}")
    path = args.web_telemetry_path
    if not path.startswith("/") or path in ("/", "/-/healthy", "/-/ready"):
        raise ConfigError(f"--web.telemetry-path must be a path of its own, got {path!r}")
    if not args.dashscope_account.strip():
        raise ConfigError("--dashscope.account must not be empty")
    _check("quota.statuses", check_quota_statuses, args.quota_statuses)
    web_file = args.web_config_file or ""
    web = webconfig.WebConfig()
    if web_file:
        try:
            web = webconfig.load(web_file)
        except webconfig.WebConfigError as exc:
            raise ConfigError(f"--web.config.file {web_file!r}: {exc}") from None

    # In demo mode the CLI supplies the simulator's key.
    key_file = "" if args.demo else args.dashscope_api_key_file or ""
    # In demo mode the CLI supplies the simulator's key; a config file names keys of its own.
    key = "" if args.demo or args.config_file else _read_key(key_file, environ)
    try:
        sharding.check_shards(args.shard, args.total_shards)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # Several shards and no --shard: every replica would silently be shard 0 (a StatefulSet
    # whose pod-index label did not reach the variable), polling one shard twice and another
    # never. Refused, as a replica cannot guess which one it is.
    # (argparse takes abbreviations: "--sha 1" is --shard too.)
    shard_given = "FT_EXPORTER_SHARD" in environ or any(
        len(name) > 2 and "--shard".startswith(name)
        for name in (a.split("=", 1)[0] for a in argv_list)
    )
    if args.total_shards > 1 and not shard_given:
        raise ConfigError(
            f"--total-shards={args.total_shards} needs --shard (or FT_EXPORTER_SHARD): "
            f"this replica's shard, 0 to {args.total_shards - 1}"
        )
    host, port = args.web_listen_address
    return Config(
        api_key=Secret(key),
        api_key_file=key_file,
        config_file=args.config_file or "",
        shard=args.shard,
        total_shards=args.total_shards,
        listen_host=host,
        listen_port=port,
        telemetry_path=path,
        base_url=args.dashscope_base_url,
        workspace=args.dashscope_workspace or "",
        models=tuple(dict.fromkeys(args.models if args.models else args.env_models)),
        page_size=args.dashscope_page_size,
        timeout=args.dashscope_timeout,
        max_requests_per_second=args.dashscope_max_requests_per_second,
        max_attempts=args.dashscope_max_attempts,
        burst_requests=args.dashscope_burst_requests,
        ca_file=args.dashscope_ca_file or "",
        sweep_timeout=args.poll_sweep_timeout,
        full_sweep_interval=args.poll_full_sweep_interval,
        timezone=args.dashscope_timezone,
        account=args.dashscope_account.strip(),
        poll_interval=_poll_interval(args, argv_list, environ),
        max_staleness=args.poll_max_staleness,
        quota_limit=args.quota_limit,
        quota=args.quota_statuses,
        max_job_series=args.jobs_max_series,
        max_aggregate_series=args.jobs_max_aggregate_series,
        log_max_jobs=args.logs_max_jobs,
        log_max_lines=args.logs_max_lines_per_sweep,
        log_level=args.log_level,
        log_format=args.log_format,
        demo=args.demo,
        web_config_file=web_file,
        web=web,
        health_no_auth=args.web_health_no_auth,
        max_connections=args.web_max_connections,
        read_header_timeout=args.web_read_header_timeout,
        idle_timeout=args.web_idle_timeout,
    )


def _poll_interval(args: argparse.Namespace, argv: list[str], environ: Mapping[str, str]) -> float:
    """The demo's jobs run for minutes: unless told otherwise, sweep often enough to see them."""
    given = POLL_INTERVAL_ENV in environ or any(a.startswith("--poll.interval") for a in argv)
    return DEMO_POLL_INTERVAL if args.demo and not given else float(args.poll_interval)


def _quota_statuses(rule: QuotaRule) -> list[str]:
    return sorted(rule.counted if rule.counted is not None else rule.excluded)
