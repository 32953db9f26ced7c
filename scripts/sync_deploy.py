#!/usr/bin/env python3
"""Regenerate the deployment files that copy something kept elsewhere.

One source each, copied where kustomize and the image build need it:

* ``prometheus/alerts.yml`` -> ``deploy/kubernetes/monitoring/prometheusrule.yaml``
  (the same rule groups, comments kept, as a prometheus-operator PrometheusRule);
* ``grafana/dashboards/*.json`` -> ``deploy/kubernetes/monitoring/dashboards.yaml``
  (a ConfigMap the Grafana sidecar picks up; kustomize's configMapGenerator cannot read files
  outside its own directory);
* ``ft_exporter.__version__`` -> ``ARG VERSION`` in ``Dockerfile`` and the image ``newTag`` in
  ``deploy/kubernetes/exporter/kustomization.yaml`` (and the sharded example's);
* ``ft_exporter.config.DEFAULT_PORT`` -> the Dockerfile's ``EXPOSE``, the exporter's port in
  ``docker-compose.yml`` and the container and Service ports in ``deploy/kubernetes/exporter``
  and ``deploy/kubernetes/examples/sharded``.

Run ``python scripts/sync_deploy.py`` after changing any source; ``--check`` only reports
(exit 1) what is out of date, which the tests do.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = Path("prometheus/alerts.yml")
DASHBOARDS = Path("grafana/dashboards")
PROMETHEUS_RULE = Path("deploy/kubernetes/monitoring/prometheusrule.yaml")
DASHBOARDS_CONFIGMAP = Path("deploy/kubernetes/monitoring/dashboards.yaml")
DOCKERFILE = Path("Dockerfile")
COMPOSE = Path("docker-compose.yml")
EXPORTER_KUSTOMIZATION = Path("deploy/kubernetes/exporter/kustomization.yaml")
DEPLOYMENT = Path("deploy/kubernetes/exporter/deployment.yaml")
SERVICE = Path("deploy/kubernetes/exporter/service.yaml")
SHARDED_KUSTOMIZATION = Path("deploy/kubernetes/examples/sharded/kustomization.yaml")
STATEFULSET = Path("deploy/kubernetes/examples/sharded/statefulset.yaml")
SHARDED_SERVICE = Path("deploy/kubernetes/examples/sharded/service.yaml")

NAME = "ft-exporter"
DASHBOARDS_NAME = "ft-exporter-dashboards"


class SyncError(Exception):
    """A source that cannot be copied faithfully."""


def _constant(path: Path, name: str) -> object:
    """A module-level ``NAME = literal`` of a source file, read without importing it."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(
            value, ast.Constant
        ):
            return value.value
    raise SyncError(f"{path} has no {name} = <literal>")


def package_version(root: Path) -> str:
    """``__version__`` of ft_exporter."""
    version = _constant(root / "ft_exporter" / "__init__.py", "__version__")
    if not isinstance(version, str):
        raise SyncError("ft_exporter.__version__ is not a string")
    return version


def default_port(root: Path) -> int:
    """``DEFAULT_PORT`` of ft_exporter.config."""
    port = _constant(root / "ft_exporter" / "config.py", "DEFAULT_PORT")
    if not isinstance(port, int):
        raise SyncError("ft_exporter.config.DEFAULT_PORT is not an int")
    return port


def _header(source: str) -> str:
    return (
        f"# Generated from {source} by scripts/sync_deploy.py: do not edit here.\n"
        f"# Change {source}, then run: python scripts/sync_deploy.py\n"
    )


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def prometheus_rule(alerts_text: str) -> str:
    """The PrometheusRule holding exactly the groups of alerts.yml, its comments kept."""
    data = yaml.safe_load(alerts_text)
    if not isinstance(data, dict) or set(data) != {"groups"}:
        raise SyncError(f"{ALERTS} must be a mapping whose only key is 'groups'")
    head = (
        _header(str(ALERTS)) + "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        f"  name: {NAME}\n"
        "  labels:\n"
        f"    app.kubernetes.io/name: {NAME}\n"
        "spec:\n"
    )
    # The file's own preamble (comments before the first key) speaks of the file; drop it.
    lines = alerts_text.splitlines(True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith(("#", "---"))):
        lines.pop(0)
    text = head + _indent("".join(lines), 2)
    if not text.endswith("\n"):
        text += "\n"
    try:
        faithful = _load(text)["spec"]["groups"] == data["groups"]
    except yaml.YAMLError:
        faithful = False
    if not faithful:
        # Something the verbatim copy cannot carry (e.g. a document marker mid-file).
        text = head + _indent(_dump({"groups": data["groups"]}), 2)
    return text


def dashboards_configmap(files: dict[str, str]) -> str:
    """A ConfigMap with one key per dashboard file, labelled for the Grafana sidecar."""
    if not files:
        raise SyncError(f"no dashboards in {DASHBOARDS}/*.json")
    out = [
        _header(f"{DASHBOARDS}/*.json"),
        "apiVersion: v1\n",
        "kind: ConfigMap\n",
        "metadata:\n",
        f"  name: {DASHBOARDS_NAME}\n",
        "  labels:\n",
        f"    app.kubernetes.io/name: {NAME}\n",
        "    # The label the Grafana dashboard sidecar (e.g. kube-prometheus-stack's) looks for.\n",
        '    grafana_dashboard: "1"\n',
        "data:\n",
    ]
    for name, content in sorted(files.items()):
        out.append(_block(name, content))
    text = "".join(out)
    if _load(text)["data"] != files:
        raise SyncError("the dashboards ConfigMap does not round-trip")
    return text


def _block(key: str, content: str) -> str:
    """``key: |`` with the content verbatim, or a quoted scalar where a block cannot hold it."""
    chomp = "-" if not content.endswith("\n") else ("+" if content.endswith("\n\n") else "")
    text = f"  {key}: |2{chomp}\n" + _indent(content, 4)
    if not text.endswith("\n"):
        text += "\n"
    try:
        if _load(text) == {key: content}:
            return text
    except yaml.YAMLError:
        pass
    return _indent(_dump({key: content}), 2)


def _load(text: str) -> Any:
    return yaml.safe_load(text)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _replace_one(pattern: str, replacement: str, text: str, where: Path) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise SyncError(f"{where}: expected exactly one line matching {pattern!r}")
    return new


def _replace_in_service(
    service: str, pattern: str, replacement: str, text: str, where: Path
) -> str:
    """:func:`_replace_one` within one service of a compose file (its indented block)."""
    start = re.search(rf"^  {re.escape(service)}:[ \t]*$", text, flags=re.MULTILINE)
    if start is None:
        raise SyncError(f"{where}: no service {service!r}")
    end = re.search(r"^(?:  )?\S", text[start.end() + 1 :], flags=re.MULTILINE)
    stop = start.end() + 1 + end.start() if end else len(text)
    block = _replace_one(pattern, replacement, text[start.end() : stop], where)
    return text[: start.end()] + block + text[stop:]


def outputs(root: Path) -> dict[Path, Callable[[], str]]:
    """Every generated or version-carrying file and how to produce its content."""
    version = package_version(root)
    port = default_port(root)

    def rule() -> str:
        return prometheus_rule((root / ALERTS).read_text(encoding="utf-8"))

    def dashboards() -> str:
        found = sorted((root / DASHBOARDS).glob("*.json"))
        return dashboards_configmap({p.name: p.read_text(encoding="utf-8") for p in found})

    def dockerfile() -> str:
        text = (root / DOCKERFILE).read_text(encoding="utf-8")
        text = _replace_one(r"^ARG VERSION=.*$", f"ARG VERSION={version}", text, DOCKERFILE)
        return _replace_one(r"^EXPOSE .*$", f"EXPOSE {port}", text, DOCKERFILE)

    def compose() -> str:
        text = (root / COMPOSE).read_text(encoding="utf-8")
        return _replace_in_service(
            NAME, r'"127\.0\.0\.1:\d+:\d+"', f'"127.0.0.1:{port}:{port}"', text, COMPOSE
        )

    def container_port(path: Path) -> Callable[[], str]:
        def make() -> str:
            text = (root / path).read_text(encoding="utf-8")
            return _replace_one(r"^(\s+containerPort: ).*$", rf"\g<1>{port}", text, path)

        return make

    def service_port(path: Path) -> Callable[[], str]:
        def make() -> str:
            text = (root / path).read_text(encoding="utf-8")
            return _replace_one(r"^(\s+port: ).*$", rf"\g<1>{port}", text, path)

        return make

    def image_tag(path: Path) -> Callable[[], str]:
        def make() -> str:
            text = (root / path).read_text(encoding="utf-8")
            return _replace_one(r"^(\s*newTag:\s*).*$", rf'\g<1>"{version}"', text, path)

        return make

    return {
        PROMETHEUS_RULE: rule,
        DASHBOARDS_CONFIGMAP: dashboards,
        DOCKERFILE: dockerfile,
        COMPOSE: compose,
        EXPORTER_KUSTOMIZATION: image_tag(EXPORTER_KUSTOMIZATION),
        DEPLOYMENT: container_port(DEPLOYMENT),
        SERVICE: service_port(SERVICE),
        SHARDED_KUSTOMIZATION: image_tag(SHARDED_KUSTOMIZATION),
        STATEFULSET: container_port(STATEFULSET),
        SHARDED_SERVICE: service_port(SHARDED_SERVICE),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    stale: list[Path] = []
    try:
        for rel, produce in outputs(ROOT).items():
            want = produce()
            path = ROOT / rel
            have = path.read_text(encoding="utf-8") if path.exists() else None
            if have == want:
                continue
            stale.append(rel)
            if not args.check:
                path.write_text(want, encoding="utf-8")
                print(f"updated {rel}")
    except (OSError, SyncError, yaml.YAMLError) as exc:
        print(f"sync_deploy: error: {exc}", file=sys.stderr)
        return 2
    if args.check and stale:
        for rel in stale:
            print(f"out of date: {rel}", file=sys.stderr)
        print("run: python scripts/sync_deploy.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
