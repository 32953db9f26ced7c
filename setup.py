"""Build hook: stamps the git revision into the package; the metadata is in pyproject.toml.

The wheel gets ``ft_exporter/_revision.py`` (read by ft_exporter.version) holding, first
found: $FT_EXPORTER_REVISION (the Dockerfile passes its REVISION build argument this way,
its build context having no .git), else ``git rev-parse HEAD`` when building from a git
checkout, else the module an sdist carries. None of these: no module, and the exporter says
``unknown``. Editable installs are not stamped: they run the working tree, which need not
be the commit HEAD names. The module is written into the build, never into the source tree.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
ENV = "FT_EXPORTER_REVISION"
MODULE = Path("ft_exporter", "_revision.py")
#: The same rule as ft_exporter.version.REVISION_RE (a commit hash, a tag, a short name).
VALID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
TEMPLATE = '"""Written by setup.py at build time."""\n\nREVISION = {revision!r}\n'


def revision() -> str | None:
    """The revision to stamp, or None; a malformed $FT_EXPORTER_REVISION fails the build."""
    given = os.environ.get(ENV, "").strip()
    if given:
        if not VALID.fullmatch(given):
            raise SystemExit(f"${ENV} is not a revision (letters, digits, ._+-): {given[:80]!r}")
        return given
    if not (ROOT / ".git").exists():  # the root itself: never a repository around it
        return None
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def stamp(directory: Path) -> None:
    """Write the revision module under ``directory`` (a build or an sdist's tree). With no
    revision known, only the module the sources carry (an sdist's) is kept, never one an
    earlier build left in build/."""
    found = revision()
    carried = ROOT / MODULE
    if found is not None:
        text: str | None = TEMPLATE.format(revision=found)
    else:
        text = carried.read_text(encoding="utf-8") if carried.exists() else None
    target = directory / MODULE
    # Unlinked first: an sdist's tree holds hard links to the sources, never to be written.
    target.unlink(missing_ok=True)
    if text is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            stamp(Path(self.build_lib))


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        stamp(Path(base_dir))


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
