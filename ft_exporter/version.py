"""What build this is: version, git revision and platform, as ``--version`` and build_info say.

The revision is stamped at build time (setup.py writes ``ft_exporter/_revision.py`` into the
wheel, from $FT_EXPORTER_REVISION or the checkout's ``git rev-parse HEAD``). A tree without
that module (an editable install, a source tree on PYTHONPATH) says ``unknown``: its code is
the working tree, which need not be any commit, so naming one would be a guess.
"""

from __future__ import annotations

import importlib
import platform
import re
import sys

from ft_exporter import __version__

PROGRAM = "ft-exporter"
UNKNOWN = "unknown"
#: What setup.py accepts as a revision; anything else in the module is not believed.
REVISION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")


def revision() -> str:
    """The git commit this build was made from, or ``unknown``."""
    try:
        stamped = importlib.import_module("ft_exporter._revision")
    except ImportError:
        return UNKNOWN
    value = getattr(stamped, "REVISION", None)
    return value if isinstance(value, str) and REVISION_RE.fullmatch(value) else UNKNOWN


def python_version() -> str:
    return f"{platform.python_version()} ({platform.python_implementation()})"


def platform_name() -> str:
    """``linux/x86_64``: the OS and machine, as Go exporters print GOOS/GOARCH."""
    return f"{sys.platform}/{platform.machine() or UNKNOWN}"


def version_text() -> str:
    """``--version``, laid out like prometheus/common's version.Print."""
    return (
        f"{PROGRAM}, version {__version__} (revision: {revision()})\n"
        f"  python version:   {python_version()}\n"
        f"  platform:         {platform_name()}"
    )
