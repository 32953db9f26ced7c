"""The API key and the key file, against the real ``ft-exporter`` process.

A careless operator's key file (a BOM, a FIFO, /dev/zero, a huge file, two lines...), a
rotated key file (a Kubernetes Secret's symlink swap, no restart), a key pasted into the
base URL; and a sweep that fails unexpectedly.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Exporter, Simulator, api_errors, exporter_exe, free_port, value, wait_for
from leaks import leaked

from ft_exporter import logs
from ft_exporter.keyfile import MAX_KEY_FILE_BYTES, KeyFile
from ft_exporter.logs import REPEAT_LOG_INTERVAL
from ft_exporter.model import Snapshot
from ft_exporter.poller import Poller
from ft_exporter.secret import REDACTED, Secret

KEY = "sk-keyfile-SECRET-0123456789abcd"
OLD_KEY = "sk-revoked-SECRET-9876543210zyxw"
NEW_KEY = "sk-rotated-SECRET-aaaabbbbccccdd"
FLAG = "--dashscope.api-key-file"
CHANGED = "API key file changed, using the new key"
#: The failing start of the old code was a hang or a read of gigabytes; bound both.
START_TIMEOUT = 20
MEMORY_LIMIT = 1 << 30


def start_failing(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real exporter, expected to refuse its configuration at start.

    Bounded in time and memory (``ulimit -v``: the old code read gigabytes), and nothing
    listens at its base URL should it start after all.
    """
    if "DASHSCOPE_BASE_URL" not in env:
        args = [f"--dashscope.base-url=http://127.0.0.1:{free_port()}", *args]
    return subprocess.run(
        [
            "sh",
            "-c",
            f'ulimit -v {MEMORY_LIMIT // 1024} && exec "$@"',
            "sh",
            exporter_exe(),
            "--web.listen-address=127.0.0.1:0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
    )


def assert_one_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    assert result.stderr == f"ft-exporter: error: {expected}\n"


# --- item 8: a key file is a small regular file holding one printable word -------------


def _write(content: bytes) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / "api-key"
        path.write_bytes(content)
        return str(path)

    return make


def _fifo(tmp: Path) -> str:
    path = tmp / "api-key"
    os.mkfifo(path)
    return str(path)


def _sparse_gigabyte(tmp: Path) -> str:
    path = tmp / "api-key"
    with open(path, "wb") as handle:
        handle.write(KEY.encode())
        handle.truncate(1 << 30)  # sparse: no disk used
    return str(path)


def _directory(tmp: Path) -> str:
    path = tmp / "secret"
    path.mkdir()
    (path / "api-key").write_text(KEY)
    return str(path)


def _loop(tmp: Path) -> str:
    path = tmp / "api-key"
    path.symlink_to(path.name)
    return str(path)


RULE = "an API key is printable ASCII without spaces"
BAD_FILES: list[tuple[str, Callable[[Path], str], str]] = [
    ("fifo", _fifo, "is a FIFO, not a file holding the key"),
    ("dev-zero", lambda _: "/dev/zero", "is a character device, not a file holding the key"),
    (
        "sparse-1GB",
        _sparse_gigabyte,
        f"is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold the key alone",
    ),
    (
        "one-byte-too-big",
        _write(b"s" * (MAX_KEY_FILE_BYTES + 1)),
        f"is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold the key alone",
    ),
    ("directory", _directory, "is a directory, not a file holding the key"),
    ("two-lines", _write(f"{KEY}\n{KEY[::-1]}\n".encode()), f"holds more than one line; {RULE}"),
    ("crlf-lines", _write(f"{KEY}\r\nnext\r\n".encode()), f"holds more than one line; {RULE}"),
    (
        "inner-space",
        _write(f"{KEY[:10]} {KEY[10:]}".encode()),
        f"holds a space inside the key; {RULE}",
    ),
    (
        "escape",
        _write(f"{KEY[:10]}\x1b[2J{KEY[10:]}".encode()),
        f"holds a control character; {RULE}",
    ),
    ("tab", _write(f"{KEY[:10]}\t{KEY[10:]}".encode()), f"holds a control character; {RULE}"),
    (
        "non-ascii",
        _write(f"{KEY[:10]}é{KEY[10:]}".encode()),
        f"holds a character that is not ASCII; {RULE}",
    ),
    ("utf-16", _write(KEY.encode("utf-16")), "is not UTF-8 text"),
    ("latin-1", _write(f"{KEY}\xe9".encode("latin-1")), "is not UTF-8 text"),
    ("empty", _write(b""), "is empty"),
    ("bom-only", _write(b"\xef\xbb\xbf\r\n"), "is empty"),
    ("blank", _write(b" \n\t\n"), "is empty"),
]


@pytest.mark.parametrize(
    ("make", "problem"), [(m, p) for _, m, p in BAD_FILES], ids=[n for n, _, _ in BAD_FILES]
)
@pytest.mark.e2e
def test_a_bad_key_file_stops_the_start_with_one_line(
    make: Callable[[Path], str], problem: str, tmp_path: Path
) -> None:
    path = make(tmp_path)
    result = start_failing([f"{FLAG}={path}"], {})
    assert_one_line(result, f"{FLAG} {path!r} {problem}")
    assert leaked(result.stderr, KEY) == []


@pytest.mark.e2e
def test_a_missing_or_looping_key_file_names_the_reason(tmp_path: Path) -> None:
    path = _loop(tmp_path)
    env = {"FT_EXPORTER_DASHSCOPE_API_KEY_FILE": path}
    result = start_failing([], env)
    assert_one_line(result, f"cannot read {FLAG} {path!r}: Too many levels of symbolic links")


ENV_CASES = [
    ("inner-space", f"{KEY[:10]} {KEY[10:]}", "holds a space inside the key"),
    ("two-lines", f"{KEY}\n{KEY[::-1]}", "holds more than one line"),
    ("escape", f"{KEY[:10]}\x1b]0;x\x07{KEY[10:]}", "holds a control character"),
    ("non-ascii", f"{KEY[:10]}\u00a0{KEY[10:]}", "holds a character that is not ASCII"),
]


@pytest.mark.parametrize(
    ("key", "problem"), [(k, p) for _, k, p in ENV_CASES], ids=[n for n, _, _ in ENV_CASES]
)
@pytest.mark.e2e
def test_a_bad_key_in_the_environment_stops_the_start_with_one_line(key: str, problem: str) -> None:
    result = start_failing([], {"DASHSCOPE_API_KEY": key})
    assert_one_line(result, f"$DASHSCOPE_API_KEY {problem}; {RULE}")
    assert leaked(result.stderr, KEY) == []


def test_a_key_with_a_bom_and_crlf_works(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    """Before: every request failed with UnicodeEncodeError, a traceback per sweep, and
    nothing counted; the exporter never became ready."""
    sim = Simulator(tmp_path, key=KEY)
    try:
        keyfile = tmp_path / "api-key"
        keyfile.write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")
        from_file = exporter_factory(
            [f"--dashscope.base-url={sim.url}", f"{FLAG}={keyfile}", "--poll.interval=1s"],
        )
        from_env = exporter_factory(
            [f"--dashscope.base-url={sim.url}", "--poll.interval=1s"],
            env={"DASHSCOPE_API_KEY": f"\ufeff{KEY}\n"},
        )
        for exp in (from_file, from_env):
            three_sweeps_and_no_failure(exp)
    finally:
        sim.stop()


def three_sweeps_and_no_failure(exp: Exporter) -> None:
    wait_for(lambda: metric(exp, "dashscope_finetune_sweeps_total") >= 3, what="three sweeps")
    text = exp.metrics()
    assert value(text, "dashscope_finetune_up", account="default") == 1
    assert value(text, "dashscope_finetune_sweep_failures_total", account="default") == 0
    exp.stop()
    assert "Traceback" not in exp.output()
    assert leaked(exp.output() + text, KEY) == []


def metric(exp: Exporter, name: str, **labels: str) -> float:
    return value(exp.metrics(), name, account="default", **labels) or 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unexpected_sweep_failure_is_logged_once_then_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a traceback per sweep (16 in 16 s at a 1 s interval)."""
    calls = 0

    def crashing_sweep() -> Snapshot:
        nonlocal calls
        calls += 1
        raise UnicodeEncodeError("latin-1", f"call {calls}", 0, 1, "ordinal not in range")

    clock = Clock()
    results: list[bool] = []
    poller = Poller(crashing_sweep, 1, on_sweep=results.append, monotonic=clock)
    with caplog.at_level(logging.INFO, logger="ft_exporter.poller"):
        for _ in range(16):
            assert not poller.run_once()
            clock.now += 1
        clock.now += REPEAT_LOG_INTERVAL
        assert not poller.run_once()
    records = [r for r in caplog.records if r.name == "ft_exporter.poller"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    first, repeat = records
    assert first.exc_info is not None and first.exc_info[0] is UnicodeEncodeError
    assert first.getMessage().startswith(
        "sweep failed, keeping the last complete snapshot: unexpected UnicodeEncodeError"
    )
    assert repeat.exc_info is None
    assert repeat.getMessage().startswith("sweep still failing (17 times in a row): unexpected")
    # Each one is a failed sweep: dashscope_finetune_sweep_failures_total counts it.
    assert results == [False] * 17
    assert not poller.state().up


# --- item 9: a rotated key file is used from the next request on ----------------------


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume, swapped the same way:
    ``api-key -> ..data/api-key``, ``..data -> ..<version>``, a new version by renaming a
    new ``..data`` link over the old one."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.root.mkdir()
        self.versions = 0
        self.publish(key)
        (root / "api-key").symlink_to("..data/api-key")
        self.path = str(root / "api-key")

    def publish(self, content: str) -> None:
        self.versions += 1
        version = self.root / f"..2024_01_01_00_00_0{self.versions}"
        version.mkdir()
        (version / "api-key").write_text(content)
        link = self.root / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.root / "..data")


def test_a_rotated_key_file_is_used_without_a_restart(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    sim = Simulator(tmp_path, key=NEW_KEY)  # the old key is revoked
    volume = SecretVolume(tmp_path / "secret", OLD_KEY + "\n")
    try:
        exp = exporter_factory(
            [
                f"--dashscope.base-url={sim.url}",
                f"{FLAG}={volume.path}",
                "--poll.interval=0.2s",
                "--dashscope.max-attempts=1",
                "--log.level=debug",
            ],
            wait_ready=False,
        )
        wait_for(lambda: api_errors(exp, "InvalidApiKey", "401") >= 2, what="old key refused")
        assert metric(exp, "dashscope_finetune_up") == 0

        volume.publish(NEW_KEY + "\n")
        wait_for(lambda: metric(exp, "dashscope_finetune_up") == 1, what="the new key used")
        refused = api_errors(exp, "InvalidApiKey", "401")
        requests = metric(exp, "dashscope_finetune_api_requests_total", endpoint="list")
        wait_for(
            lambda: (
                metric(exp, "dashscope_finetune_api_requests_total", endpoint="list")
                >= requests + 3
            ),
            what="three more requests",
        )
        assert api_errors(exp, "InvalidApiKey", "401") == refused

        # A rotation to a file that holds no key keeps the last good one, with one error.
        volume.publish("\ufeff\n")
        wait_for(lambda: "is empty; keeping the previous key" in exp.output(), what="refusal")
        requests = metric(exp, "dashscope_finetune_api_requests_total", endpoint="list")
        wait_for(
            lambda: (
                metric(exp, "dashscope_finetune_api_requests_total", endpoint="list")
                >= requests + 3
            ),
            what="three more requests",
        )
        assert metric(exp, "dashscope_finetune_up") == 1
        assert api_errors(exp, "InvalidApiKey", "401") == refused
        text = exp.metrics()
        assert exp.stop() == 0
        log = exp.output()
    finally:
        sim.stop()
    assert log.count(CHANGED) == 1
    assert log.count("keeping the previous key") == 1
    assert f"{FLAG} '{volume.path}' is empty; keeping the previous key" in log
    assert "Traceback" not in log
    assert leaked(log + text, OLD_KEY, NEW_KEY) == []


def test_key_file_checks_follow_each_rotation(tmp_path: Path) -> None:
    """The key source alone: re-read only on change, every kind of bad file refused
    without blocking, the new key handed to the redaction filter before its first use."""
    volume = SecretVolume(tmp_path / "secret", OLD_KEY)
    learned: list[str] = []
    source = KeyFile(volume.path, Secret(OLD_KEY), on_change=learned.append)
    assert source.current().reveal() == OLD_KEY
    assert learned == []  # the same key: nothing to tell
    volume.publish(NEW_KEY)
    assert source.current().reveal() == NEW_KEY
    assert learned == [NEW_KEY]

    fifo_version = tmp_path / "fifo"
    os.mkfifo(fifo_version)
    for bad in ("", "\ufeff", f"{KEY}\n{KEY}", "x" * (MAX_KEY_FILE_BYTES + 1)):
        volume.publish(bad)
        assert source.current().reveal() == NEW_KEY
    volume.publish("placeholder")
    current = volume.root / "..data" / "api-key"
    current.unlink()
    current.symlink_to(fifo_version)  # a FIFO: must not block
    assert source.current().reveal() == NEW_KEY
    (volume.root / "..data").unlink()  # gone altogether
    assert source.current().reveal() == NEW_KEY
    volume.publish(KEY)
    assert source.current().reveal() == KEY
    assert learned == [NEW_KEY, KEY]
    assert NEW_KEY not in repr(source) and KEY not in repr(source)


def test_the_log_filter_redacts_rotated_keys_old_and_new() -> None:
    redact = logs.RedactFilter([OLD_KEY])
    redact.add(NEW_KEY)
    redact.add(NEW_KEY + "-longer")  # contains NEW_KEY: redacted whole, not in part
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "%s %s %s", (OLD_KEY, NEW_KEY, NEW_KEY + "-longer"), None
    )
    assert redact.filter(record)
    assert record.getMessage() == f"{REDACTED} {REDACTED} {REDACTED}"


# --- item 11: a key pasted into the base URL never reaches the error text -------------

BAD_URLS = {
    "ftp-userinfo": f"ftp://user:{KEY}@api.example",
    "password": f"https://user:{KEY}@api.example",
    "user": f"https://{KEY}@api.example",
    "query": f"https://api.example/?api_key={KEY}",
    "query-after-api-v1": f"https://api.example/api/v1?api_key={KEY}",
    "path": f"https://api.example/{KEY}",
    "path-before-other": f"https://api.example/{KEY}/fine-tunes",
    "fragment": f"https://api.example/#{KEY}",
    "port": f"https://api.example:{KEY}/",
    "space-in-path": f"https://api.example/{KEY[:10]} {KEY[10:]}/api/v1",
    "the-key-alone": KEY,
}


@pytest.mark.parametrize("via", ["flag", "env"])
@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
@pytest.mark.e2e
def test_a_key_in_the_base_url_is_never_echoed(url: str, via: str) -> None:
    args: list[str] = []
    env = {"DASHSCOPE_API_KEY": "sk-unrelated-key-000"}
    if via == "flag":
        args = [f"--dashscope.base-url={url}"]
    else:
        env["DASHSCOPE_BASE_URL"] = url
    result = start_failing(args, env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ft-exporter: error: argument --dashscope.base-url: ")
    assert leaked(result.stderr, KEY) == []
    if "api.example" in url:
        assert "host 'api.example'" in lines[0]
