"""Session guards that keep the suite honest: the fast loop starts no process, CI skips none.

``ProcessGuard``: a test that starts a process (the exporter, the simulator, promtool,
kubectl, hadolint...) must carry the ``e2e`` marker, so that ``-m "not e2e"`` (the fast
loop, ``scripts/test.sh --fast``) stays fast. The check runs on every run, marked or not,
so an unmarked test fails in CI before it slows anyone's loop.

``SkipGuard``: under ``CI=true`` a skipped (or xfailed) test fails the run, whatever the
reason: a missing tool, a missing file, an import. CI must run every test it has.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from typing import Any

import pytest

#: Audit events of every way Python starts a process.
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.posix_spawn", "os.spawn", "os.exec", "os.fork"}
)


def in_ci(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when the ``CI`` variable says so, as CI services set it."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").lower() in ("1", "true", "yes")


class ProcessGuard:
    """Fails a test not marked ``e2e`` that starts a process, naming the command."""

    #: Audit hooks cannot be removed: one hook per interpreter, pointed at the live guard.
    current: ProcessGuard | None = None
    _hooked = False

    def __init__(self) -> None:
        self.test: str | None = None  # node id of the running unmarked test
        self.caught: dict[str, str] = {}

    def install(self) -> None:
        ProcessGuard.current = self
        if not ProcessGuard._hooked:
            sys.addaudithook(_audit)
            ProcessGuard._hooked = True

    def message(self, nodeid: str, what: str) -> str:
        return (
            f"{nodeid} starts a process ({what}) but is not marked e2e: mark it "
            "@pytest.mark.e2e (or pytestmark = pytest.mark.e2e), so that the fast loop "
            '(-m "not e2e", scripts/test.sh --fast) leaves it out'
        )

    def seen(self, event: str, args: tuple[Any, ...]) -> None:
        if self.test is None or event not in PROCESS_EVENTS:
            return
        what = event if event != "subprocess.Popen" else repr(list(args[1])[:3])
        self.caught.setdefault(self.test, what)
        test, self.test = self.test, None  # pytest's own reporting may start nothing, but
        pytest.fail(self.message(test, what), pytrace=False)  # never report it twice

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, Any, None]:
        self.test = None if item.get_closest_marker("e2e") else item.nodeid
        try:
            yield
        finally:
            self.test = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        what = self.caught.get(item.nodeid)
        if what is not None and call.when == "call" and not report.failed:
            # The test swallowed the failure (an except clause): fail it anyway.
            report.outcome = "failed"
            report.longrepr = self.message(item.nodeid, what)
        if call.when == "teardown":
            self.test = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    guard = ProcessGuard.current
    if guard is not None:
        guard.seen(event, args)


class SkipGuard:
    """Under ``CI=true``, turns a run with skipped tests into a failed run and lists them."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.skipped: list[tuple[str, str]] = []

    def _note(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped:
            return
        if hasattr(report, "wasxfail"):
            reason = f"xfail: {report.wasxfail}" if report.wasxfail else "xfail"
        elif isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        else:
            reason = str(report.longrepr)
        self.skipped.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        fine = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if self.enabled and self.skipped and session.exitstatus in fine:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not (self.enabled and self.skipped):
            return
        terminalreporter.section("skipped under CI=true", sep="=", red=True, bold=True)
        for nodeid, reason in self.skipped:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line(
            f"CI=true: {len(self.skipped)} test(s) skipped; in CI every test must run, "
            "so the run fails (install what is missing: scripts/test.sh does)"
        )
