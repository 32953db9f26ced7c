"""docker-compose.yml and the monitoring files it mounts, checked without a Docker engine.

The files under prometheus/ and grafana/ are read as they are, whoever wrote them: these
tests check that compose wires them together, and that each one passes its own tool's check
in the form the container sees it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import deployfiles
import pytest
import yaml
from conftest import ROOT, Process, Simulator, http_get, listening_port, wait_for

from ft_exporter.config import DEFAULT_BASE_URL, DEFAULT_PORT

EXPORTER = "ft-exporter"


@pytest.mark.e2e
def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    check = [deployfiles.tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = deployfiles.run([*check, str(deployfiles.COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    # ...and the schema is strict enough to notice a misspelt key.
    bad = tmp_path / "docker-compose.yml"
    data = deployfiles.load_yaml(deployfiles.COMPOSE_FILE)
    data["services"][EXPORTER]["enviroment"] = data["services"][EXPORTER].pop("environment")
    bad.write_text(yaml.safe_dump(data))
    assert deployfiles.run([*check, str(bad)]).returncode != 0


def test_the_stack_has_its_four_services() -> None:
    assert set(deployfiles.services()) == {EXPORTER, "prometheus", "alertmanager", "grafana"}


def test_images_are_pinned_and_the_exporter_is_built_here() -> None:
    for name, service in deployfiles.services().items():
        if name == EXPORTER:
            assert service["build"] == ".", "the exporter is built from this checkout"
            assert (ROOT / "Dockerfile").is_file()
            continue
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin {image}"


def test_host_paths_exist_inside_the_repository() -> None:
    declared = set(deployfiles.compose().get("volumes") or {})
    used: set[str] = set()
    for name in deployfiles.services():
        for mount in deployfiles.mounts(name):
            if not mount.bind:
                assert mount.source in declared, f"{name}: volume {mount.source} undeclared"
                used.add(mount.source)
                continue
            assert mount.source.startswith("./"), f"{name}: {mount.source} is not in the repo"
            host = mount.host_path()
            assert host.is_relative_to(ROOT), f"{name}: {mount.source} leaves the repository"
            assert host.exists(), f"{name}: {mount.source} does not exist"
            assert mount.read_only, f"{name}: mount {mount.source} read-only"
    assert used == declared, "every named volume is used"
    assert declared, "data lives in named volumes"


def test_published_ports_are_on_loopback_and_the_exporter_on_its_default() -> None:
    published: dict[str, list[str]] = {
        name: service.get("ports", []) for name, service in deployfiles.services().items()
    }
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is open to the network"
    assert f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}" in published[EXPORTER]


def test_every_service_has_a_health_check() -> None:
    dockerfile = deployfiles.parse_dockerfile()
    for name, service in deployfiles.services().items():
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD", name
            assert test[-1].endswith(("/-/healthy", "/api/health")), name
        else:
            assert "build" in service, f"{name} has no health check"
            assert dockerfile.final.all("HEALTHCHECK"), f"{name}: the image has none either"
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] == "service_healthy"


def test_exporter_defaults_to_demo_and_passes_region_through() -> None:
    env = deployfiles.services()[EXPORTER]["environment"]
    unset = {k: deployfiles.interpolate(v, {}) for k, v in env.items()}
    assert unset["DASHSCOPE_API_KEY"] == ""
    assert unset["DASHSCOPE_BASE_URL"] == DEFAULT_BASE_URL
    assert "FT_EXPORTER_DEMO" not in env, "demo follows from the key; see the entrypoint"


def _prometheus_config(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """prometheus.yml as the prometheus service loads it, rule paths made host paths."""
    container_config = deployfiles.command_flag("prometheus", "config.file")
    assert container_config, "prometheus is started with --config.file"
    host_config = deployfiles.host_path_of("prometheus", container_config)
    assert host_config is not None, f"{container_config} is not mounted"
    assert host_config.is_file(), f"{container_config} is not a file"
    config = deployfiles.load_yaml(host_config)
    rule_files = []
    for pattern in config.get("rule_files") or []:
        container_path = (
            pattern if pattern.startswith("/") else f"{Path(container_config).parent}/{pattern}"
        )
        host = deployfiles.host_path_of("prometheus", container_path)
        assert host is not None, f"rule file {pattern} is not mounted into prometheus"
        rule_files.append(str(host))
    config["rule_files"] = rule_files
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    return copy, config


@pytest.mark.e2e
def test_prometheus_config_as_mounted_passes_promtool(tmp_path: Path) -> None:
    promtool = deployfiles.tool("promtool")
    copy, config = _prometheus_config(tmp_path)
    assert config["rule_files"], "prometheus loads the alert rules"
    result = deployfiles.run([promtool, "check", "config", str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    for rules in config["rule_files"]:
        checked = deployfiles.run([promtool, "check", "rules", rules])
        assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = {Path(p).resolve() for p in config["rule_files"]}
    assert (ROOT / "prometheus" / "alerts.yml").resolve() in loaded


@pytest.mark.e2e
def test_alertmanager_config_as_mounted_passes_amtool() -> None:
    amtool = deployfiles.tool("amtool")
    container_config = deployfiles.command_flag("alertmanager", "config.file")
    assert container_config
    host_config = deployfiles.host_path_of("alertmanager", container_config)
    assert host_config == (ROOT / "prometheus" / "alertmanager.yml").resolve()
    result = deployfiles.run([amtool, "check-config", str(host_config)])
    assert result.returncode == 0, result.stdout + result.stderr


def _targets(configs: list[dict[str, Any]]) -> set[str]:
    return {t for c in configs for sc in c.get("static_configs", []) for t in sc["targets"]}


def test_prometheus_scrapes_the_exporter_and_alerts_to_alertmanager(tmp_path: Path) -> None:
    _, config = _prometheus_config(tmp_path)
    scrape_targets = _targets(config["scrape_configs"])
    assert f"{EXPORTER}:{DEFAULT_PORT}" in scrape_targets
    alerting_targets = _targets(config["alerting"]["alertmanagers"])
    assert "alertmanager:9093" in alerting_targets
    for target in scrape_targets | alerting_targets:
        host = target.rsplit(":", 1)[0]
        assert host in deployfiles.services() or host in ("localhost", "127.0.0.1"), target
    # Alert expressions that select a job must name a scrape job that exists.
    jobs = {c["job_name"] for c in config["scrape_configs"]}
    assert deployfiles.alert_job_matchers() <= jobs


def test_grafana_provisioning_reaches_prometheus_and_the_dashboards() -> None:
    provisioning = deployfiles.host_path_of("grafana", "/etc/grafana/provisioning")
    assert provisioning == (ROOT / "grafana" / "provisioning").resolve()
    sources = [
        ds
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in deployfiles.load_yaml(path).get("datasources") or []
    ]
    prometheus = [ds for ds in sources if ds["type"] == "prometheus"]
    assert prometheus, "a Prometheus datasource is provisioned"
    for ds in prometheus:
        url = urlsplit(ds["url"])
        assert (url.hostname, url.port) == ("prometheus", 9090), ds["url"]
    providers = [
        p
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in deployfiles.load_yaml(path).get("providers") or []
    ]
    assert providers, "a dashboard provider is provisioned"
    dashboards = (ROOT / "grafana" / "dashboards").resolve()
    for provider in providers:
        host = deployfiles.host_path_of("grafana", provider["options"]["path"])
        assert host == dashboards, f"provider path {provider['options']['path']} is not mounted"
    found = sorted(dashboards.glob("*.json"))
    assert found
    for path in found:
        assert json.loads(path.read_text(encoding="utf-8"))["title"]
    home = deployfiles.services()["grafana"]["environment"].get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    )
    if home:
        home_host = deployfiles.host_path_of("grafana", home)
        assert home_host is not None, f"home dashboard {home} is not mounted"
        assert home_host.is_file(), f"home dashboard {home} is missing"


def _entrypoint_script() -> list[str]:
    entrypoint = deployfiles.services()[EXPORTER]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    # Compose turns $$ into $; nothing else in it is for compose to expand.
    script = entrypoint[2].replace("$$", "$")
    return ["/bin/sh", "-c", script, *entrypoint[3:]]


def _container_env(host_env: dict[str, str]) -> dict[str, str]:
    env = deployfiles.services()[EXPORTER]["environment"]
    return {k: deployfiles.interpolate(v, host_env) for k, v in env.items()}


def _start(tmp_path: Path, host_env: dict[str, str], name: str) -> tuple[Process, int]:
    env = {
        **_container_env(host_env),
        # The image puts the exporter's virtualenv first on PATH; here that is this venv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = Process(
        [*_entrypoint_script(), "--web.listen-address=127.0.0.1:0"],
        env=env,
        log_path=tmp_path / f"{name}.log",
    )
    return proc, listening_port(proc, what="exporter")


@pytest.mark.e2e
def test_without_a_key_the_exporter_runs_the_demo(tmp_path: Path) -> None:
    proc, port = _start(tmp_path, {}, "demo")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200, what="ready")
        wait_for(lambda: "Demo mode" in proc.output(), what="the demo banner")
    finally:
        proc.stop()


def test_the_key_variable_alone_switches_to_a_real_account(
    tmp_path: Path, simulator: Simulator
) -> None:
    # Stands in for the real API: the key and base URL are what an operator would export.
    host_env = {"DASHSCOPE_API_KEY": simulator.key, "DASHSCOPE_BASE_URL": simulator.url}
    proc, port = _start(tmp_path, host_env, "real")
    try:
        # Ready means a first sweep has ended, not that it succeeded: wait for up 1.
        def up() -> bool:
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            return status == 200 and 'dashscope_finetune_up{account="default"} 1.0' in body.decode()

        wait_for(up, what="a successful sweep")
        assert simulator.stats()["list_requests"] >= 1
        assert "Demo mode" not in proc.output()
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:-x}", {"A": "y"}, "y"),
        ("${A:+on}", {"A": "y"}, "on"),
        ("${A:+on}", {}, ""),
        ("$$A ${B}", {"B": "b"}, "$A b"),
    ],
)
def test_interpolation_helper(text: str, env: dict[str, str], expected: str) -> None:
    assert deployfiles.interpolate(text, env) == expected


#: Where the compose file mounts deploy/compose/ and what FT_EXPORTER_CONFIG_FILE names.
ACCOUNTS_IN_CONTAINER = "/etc/ft-exporter/accounts.yml"


def test_the_accounts_file_is_mounted_read_only_where_the_documented_variable_points() -> None:
    header = _compose_header()
    assert f"FT_EXPORTER_CONFIG_FILE={ACCOUNTS_IN_CONTAINER}" in header
    assert f"FT_EXPORTER_CONFIG_FILE={ACCOUNTS_IN_CONTAINER}" in (ROOT / "README.md").read_text()
    host = deployfiles.host_path_of(EXPORTER, ACCOUNTS_IN_CONTAINER)
    assert host == ROOT / "deploy" / "compose" / "accounts.yml"
    assert host.is_file()
    (mount,) = [m for m in deployfiles.mounts(EXPORTER) if m.bind]
    assert mount.read_only
    # Unset, the variable stays empty (demo) and the two keys pass through when given.
    assert _container_env({})["FT_EXPORTER_CONFIG_FILE"] == ""
    given = {"DASHSCOPE_API_KEY_SG": "sk-a", "DASHSCOPE_API_KEY_BJ": "sk-b"}
    assert {k: _container_env(given)[k] for k in given} == given


def _compose_header() -> str:
    """The compose file's opening comment, its continued lines joined."""
    text = deployfiles.COMPOSE_FILE.read_text(encoding="utf-8")
    return text.split("\nname:", 1)[0].replace("\\\n#", "")


def _check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed console script, as the image runs it, in a bare environment."""
    return deployfiles.run(
        [deployfiles.tool("ft-exporter"), "check-config", str(path)],
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.e2e
def test_the_accounts_file_passes_check_config_with_its_two_keys() -> None:
    host = deployfiles.host_path_of(EXPORTER, ACCOUNTS_IN_CONTAINER)
    assert host is not None
    keys = {"DASHSCOPE_API_KEY_SG": "sk-sg-0123456789", "DASHSCOPE_API_KEY_BJ": "sk-bj-0123456789"}
    result = _check_config(host, keys)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "sg: https://dashscope-intl.aliyuncs.com, key from $DASHSCOPE_API_KEY_SG, "
        "default workspace, all models, quota 20 (!CANCELED,!FAILED), every 60s",
        "bj: https://dashscope.aliyuncs.com, key from $DASHSCOPE_API_KEY_BJ, "
        "default workspace, all models, quota 20 (!CANCELED,!FAILED), every 60s",
    ]
    missing = _check_config(host, {"DASHSCOPE_API_KEY_SG": keys["DASHSCOPE_API_KEY_SG"]})
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "accounts[1].api_key_env: $DASHSCOPE_API_KEY_BJ is not set or empty"
    ]


@pytest.mark.e2e
def test_the_config_file_variable_switches_to_its_two_accounts(
    tmp_path: Path, simulator: Simulator
) -> None:
    # The example file as mounted, its sites pointed at the simulator (the real API's stand-in).
    host = deployfiles.host_path_of(EXPORTER, ACCOUNTS_IN_CONTAINER)
    assert host is not None
    text = host.read_text(encoding="utf-8")
    assert text.count("site: ") == 2
    copy = tmp_path / "accounts.yml"
    copy.write_text(re.sub(r"site: \w+", f"base_url: {simulator.url}", text))
    host_env = {
        "FT_EXPORTER_CONFIG_FILE": str(copy),
        "DASHSCOPE_API_KEY_SG": simulator.key,
        "DASHSCOPE_API_KEY_BJ": simulator.key,
    }
    proc, port = _start(tmp_path, host_env, "accounts")
    try:

        def both_up() -> bool:
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            text = body.decode()
            return status == 200 and all(
                f'dashscope_finetune_up{{account="{name}"}} 1.0' in text for name in ("sg", "bj")
            )

        wait_for(both_up, what="both accounts' first successful sweep")
        assert "Demo mode" not in proc.output()
    finally:
        proc.stop()
