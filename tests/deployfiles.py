"""Reading the deployment files (Dockerfile, .dockerignore, compose, kustomize) for the tests.

Nothing here needs a Docker engine or a cluster: each helper reads the files the way the real
tool would, closely enough for the checks the tests make.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import dockerfile
import yaml
from conftest import ROOT, require_tool

COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "kubernetes"


def tool(name: str) -> str:
    """An executable from the test virtualenv (pip-installed tools), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return require_tool(name)


def run(args: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


@cache
def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper case, e.g. "COPY"
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json: bool
    original: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def parse_dockerfile(path: Path = ROOT / "Dockerfile") -> Dockerfile:
    """Instructions grouped by stage, as Docker's own parser (via ``dockerfile``) reads them."""
    parsed: Any = dockerfile.parse_file(str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for command in parsed:
        ins = Instruction(
            cmd=command.cmd.upper(),
            flags=tuple(command.flags),
            value=tuple(command.value),
            json=bool(command.json),
            original=command.original,
        )
        if ins.cmd == "FROM":
            name = ins.value[2] if len(ins.value) == 3 and ins.value[1].upper() == "AS" else None
            stages.append(Stage(base=ins.value[0], name=name, instructions=[]))
        elif not stages and ins.cmd == "ARG":
            key, _, default = ins.value[0].partition("=")
            global_args[key] = unquote(default)
        elif stages:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args=global_args, stages=stages)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def pairs(ins: Instruction) -> dict[str, str]:
    """``LABEL``/``ENV`` key=value pairs (the parser yields them flat: k1, v1, k2, v2...)."""
    values = list(ins.value)
    return {values[i]: unquote(values[i + 1]) for i in range(0, len(values), 2)}


def substitute(text: str, variables: dict[str, str]) -> str:
    """Expand ``$NAME`` and ``${NAME}`` as Docker does in instructions."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text
    )


# --- .dockerignore ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


@cache
def dockerignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    """(excludes, regex) per line of .dockerignore, in order."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    path = ROOT / ".dockerignore"
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        cleaned = str(PurePosixPath(line.lstrip("!").strip())).lstrip("/")
        rules.append((exclude, _pattern_regex(cleaned)))
    return tuple(rules)


def in_build_context(rel: str) -> bool:
    """Whether Docker sends this repo-relative path to the builder: as moby's patternmatcher
    does, a rule applies when it matches the path or one of its parent directories, and the
    last rule that applies wins."""
    parts = PurePosixPath(rel).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exclude, regex in dockerignore_rules():
        if any(regex.match(c) for c in candidates):
            excluded = exclude
    return not excluded


def build_context_files() -> list[str]:
    """Every file of the working tree that ``docker build .`` would send."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            rel = Path(dirpath, filename).relative_to(ROOT).as_posix()
            if in_build_context(rel):
                out.append(rel)
    return sorted(out)


# --- docker-compose.yml ----------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


_VAR = re.compile(r"\$(?:\$|\{(\w+)(?:(:?)([-?+])((?:[^{}]|\{[^{}]*\})*))?\}|(\w+))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${V}, ${V:-d}, ${V-d}, ${V:+r}, ${V+r}, $V and $$."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(5)
        colon, op, arg = m.group(2), m.group(3), m.group(4) or ""
        value = env.get(name)
        present = value is not None and (value != "" or not colon)
        if op == "-":
            return value if present and value is not None else interpolate(arg, env)
        if op == "+":
            return interpolate(arg, env) if present else ""
        if op == "?" and not present:
            raise ValueError(f"required variable {name} is missing: {arg}")
        return value or ""

    return _VAR.sub(repl, text)


@dataclass(frozen=True)
class Mount:
    source: str  # host path (relative to the compose file) or volume name
    target: str  # path in the container
    bind: bool
    read_only: bool

    def host_path(self) -> Path:
        return (COMPOSE_FILE.parent / self.source).resolve()


def mounts(service: str) -> list[Mount]:
    declared = set(compose().get("volumes") or {})
    out: list[Mount] = []
    for entry in services()[service].get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else ""
            bind = source.startswith((".", "/", "~")) or source not in declared
            out.append(Mount(source, target, bind, "ro" in mode.split(",")))
        else:
            out.append(
                Mount(
                    entry["source"],
                    entry["target"],
                    entry.get("type") == "bind",
                    bool(entry.get("read_only")),
                )
            )
    return out


def host_path_of(service: str, container_path: str) -> Path | None:
    """The host file a container path of a service is, through its bind mounts."""
    best: Mount | None = None
    for mount in mounts(service):
        target = mount.target.rstrip("/")
        inside = container_path == target or container_path.startswith(target + "/")
        longer = best is None or len(target) > len(best.target.rstrip("/"))
        if mount.bind and inside and longer:
            best = mount
    if best is None:
        return None
    rest = container_path[len(best.target.rstrip("/")) :].lstrip("/")
    return best.host_path() / rest if rest else best.host_path()


def command_flag(service: str, flag: str) -> str | None:
    """The value of ``--flag=value`` in a service's command."""
    for arg in services()[service].get("command", []):
        if arg.startswith(f"--{flag}="):
            value: str = arg.split("=", 1)[1]
            return value
    return None


def alert_job_matchers() -> set[str]:
    """Every job="..." that an expression in prometheus/alerts.yml selects on."""
    jobs: set[str] = set()
    for group in load_yaml(ROOT / "prometheus" / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            jobs.update(re.findall(r'\bjob\s*=\s*"([^"]+)"', str(rule["expr"])))
    return jobs


# --- kustomize -------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization with the real kustomize (the one built into kubectl)."""
    result = run([tool("kubectl"), "kustomize", str(directory)])
    assert result.returncode == 0, f"kustomize {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
