"""CHANGELOG.md and the README's "Deploying" section agree with the code and the files."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT, readme_section

from ft_exporter import __version__
from ft_exporter.config import DEFAULT_PORT

KEEP_A_CHANGELOG_TYPES = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _changelog() -> str:
    return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_changelog_follows_keep_a_changelog() -> None:
    text = _changelog()
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[0] == "[Unreleased]"
    for heading in headings[1:]:
        assert re.fullmatch(r"\[\d+\.\d+\.\d+\] - (\d{4}-\d{2}-\d{2}|Unreleased)", heading)
    for kind in re.findall(r"^### (.+)$", text, flags=re.MULTILINE):
        assert kind in KEEP_A_CHANGELOG_TYPES, kind


def test_changelog_newest_version_is_the_package_version() -> None:
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", _changelog(), flags=re.MULTILINE)
    assert versions, "no version in CHANGELOG.md"
    assert versions[0] == __version__


def _deploying() -> str:
    return readme_section("## Deploying")


def _code(section: str) -> str:
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL))


@pytest.mark.parametrize(
    ("subsection", "command"),
    [
        ("docker run", r"docker run .*ft-exporter"),
        ("docker compose", r"docker compose up -d"),
        ("Kubernetes", r"kubectl .*apply .*-k deploy/kubernetes"),
    ],
)
def test_deploying_has_copy_paste_commands_for_each_way(subsection: str, command: str) -> None:
    parts = re.split(r"^### ", _deploying(), flags=re.MULTILINE)
    (part,) = [p for p in parts if p.startswith(subsection)]
    assert re.search(command, _code(part)), f"{subsection}: no {command!r} in a sh block"


def test_deploying_names_the_default_port_and_real_paths() -> None:
    section = _deploying()
    code = _code(section)
    for host, container in re.findall(r"-p 127\.0\.0\.1:(\d+):(\d+)", code):
        assert int(host) == int(container) == DEFAULT_PORT
    for port in re.findall(r"localhost:(\d+)/(?:metrics|-/ready)", section):
        assert int(port) == DEFAULT_PORT
    assert f"Port {DEFAULT_PORT} below is the exporter's default" in " ".join(section.split())
    for directory in re.findall(r"-k (\S+)", code):
        assert (ROOT / directory / "kustomization.yaml").is_file(), directory
    for path in re.findall(r"`((?:prometheus|grafana|deploy|scripts)/[\w./-]+)`", section):
        assert (ROOT / path).exists(), path
