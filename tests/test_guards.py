"""The session guards of tests/guards.py, run on tiny generated suites (in process)."""

from __future__ import annotations

import pytest
from guards import ProcessGuard, SkipGuard

SUITE = """
import sys
import pytest

def test_passes():
    assert True

def test_skips():
    pytest.skip("promtool is not installed")
"""

#: cloudcoil's plugin (see pyproject's addopts) fails to load without extra packages;
#: the others are not needed and cost time.
INNER = tuple(
    arg
    for plugin in ("cacheprovider", "cloudcoil", "xdist", "hypothesispytest", "anyio")
    for arg in ("-p", f"no:{plugin}")
)


def run(pytester: pytest.Pytester, source: str, ci: bool) -> pytest.RunResult:
    pytester.makepyfile(test_tiny=source)
    return pytester.runpytest_inprocess(*INNER, plugins=[SkipGuard(ci)])


def test_a_skip_fails_the_run_under_ci(pytester: pytest.Pytester) -> None:
    result = run(pytester, SUITE, ci=True)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*skipped under CI=true*",
            "SKIPPED test_tiny.py::test_skips: promtool is not installed",
            "CI=true: 1 test(s) skipped*",
        ]
    )


def test_a_skip_is_only_reported_outside_ci(pytester: pytest.Pytester) -> None:
    result = run(pytester, SUITE, ci=False)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    assert "skipped under CI=true" not in result.stdout.str()


def test_a_run_without_skips_passes_under_ci(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_passes():\n    assert True\n", ci=True)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (
            "import pytest\npytest.skip('no netbase', allow_module_level=True)\n",
            "test_tiny.py: no netbase",
        ),
        (
            "import pytest\n@pytest.mark.skipif(True, reason='not on this box')\n"
            "def test_x():\n    pass\n",
            "test_tiny.py::test_x: not on this box",
        ),
        (
            "import pytest\n@pytest.mark.xfail(reason='known bug')\ndef test_x():\n"
            "    assert False\n",
            "test_tiny.py::test_x: xfail: known bug",
        ),
    ],
    ids=["module-level", "skipif", "xfail"],
)
def test_every_kind_of_skip_fails_under_ci(
    pytester: pytest.Pytester, source: str, reason: str
) -> None:
    result = run(pytester, source, ci=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"SKIPPED {reason}"])


def test_a_failing_run_keeps_its_own_status(pytester: pytest.Pytester) -> None:
    result = run(pytester, SUITE + "\ndef test_fails():\n    assert False\n", ci=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED test_tiny.py::test_skips: *"])


UNMARKED = """
import subprocess, sys
import pytest

def test_unmarked():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_unmarked_swallowed():
    try:
        subprocess.Popen([sys.executable, "-c", "pass"]).wait()
    except BaseException:
        pass

@pytest.mark.e2e
def test_marked():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_no_process():
    assert True
"""


@pytest.mark.e2e  # its marked inner test starts one (python -c pass)
def test_an_unmarked_test_that_starts_a_process_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    e2e: starts processes\n")
    pytester.makepyfile(test_tiny=UNMARKED)
    guard = ProcessGuard()
    previous = ProcessGuard.current
    guard.install()
    try:
        result = pytester.runpytest_inprocess(*INNER, plugins=[guard])
    finally:
        ProcessGuard.current = previous
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_tiny.py::test_unmarked starts a process (*) but is not marked e2e*",
            "*test_tiny.py::test_unmarked_swallowed starts a process (*) but is not marked e2e*",
        ],
        consecutive=False,
    )
    assert guard.caught.keys() == {
        "test_tiny.py::test_unmarked",
        "test_tiny.py::test_unmarked_swallowed",
    }
