"""Shared test helpers: real processes on loopback, and tools that must exist in CI."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from certs import Pki, make_pki
from guards import ProcessGuard, SkipGuard, in_ci
from prometheus_client.parser import text_string_to_metric_families

from ft_exporter.client import ApiError
from ft_exporter.config import TEST_MIN_POLL_INTERVAL_ENV

ROOT = Path(__file__).resolve().parent.parent
IN_CI = in_ci()
#: The zone DashScope writes its job times in (Beijing, no daylight saving).
UTC8 = timezone(timedelta(hours=8))


def require_tool(name: str) -> str:
    """Path of an external tool; missing is a skip locally but a failure in CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (scripts/test.sh installs it)"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nothing listened on a moment ago: for "nothing answers here" only.

    Never hand it to a process to bind: another test may take it in between (racy under
    xdist). Processes bind port 0 and report theirs (see ``listening_port``).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The start line of the exporter ("ft-exporter X listening on http://127.0.0.1:PORT/metrics")
#: and of the simulator ("simulator listening on http://127.0.0.1:PORT/api/v1"), text or JSON.
LISTENING = re.compile(r"listening on https?://[^\s/]+:(\d+)/")


def listening_port(process: Process, timeout: float = 20.0, what: str = "process") -> int:
    """The port a process bound at ``:0``, read from its start line.

    0 when the process exits before it listens (a test of a start-up failure reads its
    output and exit status instead).
    """
    found: list[int] = []

    def listening() -> bool:
        match = LISTENING.search(process.output())
        if match:
            found.append(int(match.group(1)))
            return True
        return process.proc.poll() is not None

    wait_for(listening, timeout, 0.02, f"{what} to log its port:\n{process.output()}")
    return found[0] if found else 0


def http_get(
    url: str,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def basic_credentials(user: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header for HTTP basic auth, as a headers dict."""
    return {"Authorization": basic_credentials(user, password)}


def readme_section(heading: str) -> str:
    """The README's text under ``heading`` (e.g. ``"## Metrics"``, ``"### Securing..."``),
    up to the next heading of the same level or above."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = f"\n{heading}\n"
    assert marker in readme, f"README.md has no {heading!r} section"
    level = len(heading) - len(heading.lstrip("#"))
    lines: list[str] = []
    fenced = False  # a "# comment" in a code block is no heading
    for line in readme.split(marker, 1)[1].splitlines(keepends=True):
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        lines.append(line)
    return "".join(lines)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The exporter's command line (``python -m ft_exporter``) in a bare environment,
    for what it prints and its exit status; expected to exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "ft_exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


class Recorder:
    """A client RequestObserver that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, ApiError | None]] = []
        #: The endpoint of each call (``list`` for a rejected listing).
        self.endpoints: list[str] = []

    def observe(self, endpoint: str, duration: float, error: ApiError | None) -> None:
        self.calls.append((duration, error))
        self.endpoints.append(endpoint)

    def reject(self, error: ApiError) -> None:
        self.calls.append((-1.0, error))
        self.endpoints.append("list")

    @property
    def codes(self) -> list[tuple[str, str] | None]:
        """(code, HTTP status) of each failed call, None for each success."""
        return [None if e is None else (e.code, e.http_status) for _, e in self.calls]

    @property
    def seen(self) -> list[str]:
        """Each call in one word: ``ok``, ``Code/status``, or ``rejected Code``."""
        return [
            "ok" if e is None else (f"rejected {e.code}" if d < 0 else f"{e.code}/{e.http_status}")
            for d, e in self.calls
        ]


def http_json(url: str, method: str = "GET", payload: Any = None, timeout: float = 5.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Poll with a bound instead of sleeping a guessed amount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample, or None when the series is absent."""
    return samples(text).get((name, frozenset(labels.items())))


def api_errors(exp: Exporter, code: str, http_status: str) -> float:
    """dashscope_finetune_api_errors_total for one code, 0 when the series is absent."""
    got = value(
        exp.metrics(),
        "dashscope_finetune_api_errors_total",
        account="default",
        endpoint="list",
        code=code,
        http_status=http_status,
    )
    return got or 0


class Process:
    """A child process whose output is kept in a file for assertions and debugging."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        nofile: tuple[int, int] | None = None,
        *,
        cwd: Path = ROOT,
        clean_env: bool = False,
    ) -> None:
        """``nofile``: the child's (soft, hard) open-file limit, as a careless host sets it;
        ``clean_env``: ``env`` alone, nothing inherited from the tests' environment."""
        self.args = args
        self.log_path = log_path or Path(os.devnull)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = dict(env or {}) if clean_env else {**os.environ, **(env or {})}

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            preexec_fn=limit_files if nofile is not None else None,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int:
        """Terminate (SIGTERM), then kill after ``timeout``; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


def _log_path(tmp: Path, name: str) -> Path:
    """A log file of its own for each process a test starts (the port is not known yet)."""
    for n in itertools.count(1):
        path = tmp / f"{name}-{n}.log"
        if not path.exists():
            path.touch()
            return path
    raise AssertionError("unreachable")


class Simulator(Process):
    """``python -m ft_exporter.simulator`` on a free loopback port."""

    def __init__(
        self,
        tmp: Path,
        key: str = "sk-test-secret-0123456789",
        scenario: str = "static",
        extra: list[str] | None = None,
    ) -> None:
        self.key = key
        super().__init__(
            [
                sys.executable,
                "-m",
                "ft_exporter.simulator",
                "--port",
                "0",
                "--key",
                key,
                "--scenario",
                scenario,
                *(extra or []),
            ],
            log_path=_log_path(tmp, "simulator"),
        )
        self.port = listening_port(self, what="simulator")
        if not self.port:
            raise AssertionError(f"simulator exited {self.proc.returncode}:\n{self.output()}")
        scheme = "https" if "--tls-cert" in (extra or []) else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(self.url + "/_sim/stats")
        return result

    def fault(self, mode: str, **options: Any) -> None:
        http_json(self.url + "/_sim/fault", "POST", {"mode": mode, **options})

    def clear_fault(self) -> None:
        http_json(self.url + "/_sim/fault", "DELETE")


def exporter_exe() -> str:
    """The console script of the interpreter running the tests, else the one on PATH."""
    beside = Path(sys.executable).parent / "ft-exporter"
    return str(beside) if beside.exists() else shutil.which("ft-exporter") or str(beside)


class Exporter(Process):
    """The real ``ft-exporter`` console script on a free loopback port.

    With ``ssl_context`` it is reached over https (the context carries the CA
    and any client certificate); ``auth`` is a (user, password) sent with the
    helper's own requests, readiness included.
    """

    def __init__(
        self,
        tmp: Path,
        args: list[str],
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        *,
        ssl_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        nofile: tuple[int, int] | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.auth_headers = basic_auth(*auth) if auth else {}
        super().__init__(
            [exporter_exe(), "--web.listen-address=127.0.0.1:0", *args],
            env={TEST_MIN_POLL_INTERVAL_ENV: "0.05", **(env or {})},
            log_path=_log_path(tmp, "exporter"),
            nofile=nofile,
        )
        # 0 when it exits before it listens: a test of a failed start reads output().
        self.port = listening_port(self, what="exporter")
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        if wait_ready:
            wait_for(self._ready, what="exporter ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited {self.proc.returncode}:\n{self.output()}")
        return self.get("/-/ready")[0] == 200

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET with this exporter's TLS context and credentials."""
        return http_get(
            self.url + path,
            headers={**self.auth_headers, **(headers or {})},
            context=self.ssl_context,
        )

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body.decode()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(tmp_path)
    yield sim
    sim.stop()


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(
        args: list[str], env: dict[str, str] | None = None, wait_ready: bool = True, **kw: Any
    ) -> Exporter:
        exporter = Exporter(tmp_path, args, env, wait_ready, **kw)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA with server and client certificates, made once per run."""
    return make_pki(tmp_path_factory.mktemp("pki"))


#: Fixtures that start a process: a test using one is marked e2e without saying so.
PROCESS_FIXTURES = frozenset({"simulator", "exporter_factory"})


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ProcessGuard(), "process-guard")
    if not hasattr(config, "workerinput"):  # xdist's controller (or a plain run) decides
        config.pluginmanager.register(SkipGuard(in_ci()), "skip-guard")
    ProcessGuard.current = None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    guard = session.config.pluginmanager.get_plugin("process-guard")
    assert isinstance(guard, ProcessGuard)
    guard.install()
