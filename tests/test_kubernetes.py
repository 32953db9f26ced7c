"""deploy/kubernetes: rendered by the real kustomize and validated offline and strictly.

Built-in kinds are checked by kubernetes-validate --strict (the Kubernetes OpenAPI schemas,
unknown fields rejected). ServiceMonitor and PrometheusRule are prometheus-operator CRDs that
kubernetes-validate does not know: they are checked against JSON schemas derived from the
typed prometheus-operator models of cloudcoil (generated from the operator's CRDs), made
strict the same way (no field the schema does not name).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import deployfiles
import pytest
import yaml
from conftest import ROOT, Exporter, Simulator, samples, value

from ft_exporter import __version__, sharding
from ft_exporter.config import DEFAULT_PORT

#: The CRD schemas (a session fixture) take seconds to build: one worker builds them once.
pytestmark = pytest.mark.xdist_group("kubernetes")

CRDS = ("ServiceMonitor", "PrometheusRule")
# The oldest and the newest Kubernetes release kubernetes-validate has schemas for.
K8S_VERSIONS = ("1.25.0", None)

BASE = deployfiles.K8S
SHARDED = deployfiles.K8S / "examples" / "sharded"
#: Where both the base and the sharded example mount their config file, as --config.file.
CONFIG_FILE = "/etc/ft-exporter/accounts.yml"


@cache
def rendered(directory: Path) -> list[dict[str, Any]]:
    return deployfiles.kustomize(directory)


def raw_manifests() -> list[Path]:
    """Every YAML file under deploy/kubernetes that is a manifest (not a kustomization)."""
    return sorted(
        p
        for p in deployfiles.K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "kind" in (deployfiles.load_yaml(p) or {})
    )


def _strict(node: Any) -> None:
    """No property beyond those a schema names; ECMA-262 patterns for check-jsonschema."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        pattern = node.get("pattern")
        if isinstance(pattern, str) and "(?i)" in pattern:
            # ECMA-262 has no inline flags: spell the case-insensitivity out.
            body = pattern.replace("(?i)", "")
            assert not re.search(r"[\\\[]", body), pattern
            node["pattern"] = re.sub(
                r"[A-Za-z]", lambda m: f"[{m.group().lower()}{m.group().upper()}]", body
            )
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)


@pytest.fixture(scope="session")
def crd_schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    models: Any = importlib.import_module("cloudcoil.models.prometheus_operator.v1")
    out = tmp_path_factory.mktemp("crd-schemas")
    paths: dict[str, Path] = {}
    for kind in CRDS:
        schema = getattr(models, kind).model_json_schema(by_alias=True)
        _strict(schema)
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
        paths[kind] = out / f"{kind}.json"
        paths[kind].write_text(json.dumps(schema))
    return paths


def validate(docs: list[dict[str, Any]], tmp: Path, crd_schemas: dict[str, Path]) -> list[str]:
    """Problems found in these documents; empty when every one validates strictly."""
    problems: list[str] = []
    native = [d for d in docs if d["kind"] not in CRDS]
    if native:
        path = tmp / "native.yaml"
        path.write_text(yaml.safe_dump_all(native))
        for version in K8S_VERSIONS:
            args = [deployfiles.tool("kubernetes-validate"), "--strict", str(path)]
            if version:
                args[1:1] = ["-k", version]
            result = deployfiles.run(args)
            lines = result.stdout.splitlines()
            passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
            if result.returncode != 0 or len(passed) != len(native):
                problems.append(f"kubernetes-validate {version or 'latest'}: {result.stdout}")
    for i, doc in enumerate(d for d in docs if d["kind"] in CRDS):
        path = tmp / f"crd-{i}.yaml"
        path.write_text(yaml.safe_dump(doc))
        schema = str(crd_schemas[doc["kind"]])
        result = deployfiles.run(
            [deployfiles.tool("check-jsonschema"), "--schemafile", schema, str(path)]
        )
        if result.returncode != 0:
            problems.append(f"{doc['kind']}: {result.stdout}{result.stderr}")
    return problems


@pytest.mark.parametrize(
    "directory", deployfiles.kustomizations(), ids=lambda p: str(p.relative_to(ROOT))
)
@pytest.mark.e2e
def test_kustomization_renders_and_validates_strictly(
    directory: Path, tmp_path: Path, crd_schemas: dict[str, Path]
) -> None:
    docs = rendered(directory)
    assert docs
    assert validate(docs, tmp_path, crd_schemas) == []


@pytest.mark.parametrize("path", raw_manifests(), ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.e2e
def test_every_manifest_file_validates_strictly(
    path: Path, tmp_path: Path, crd_schemas: dict[str, Path]
) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert validate(docs, tmp_path, crd_schemas) == []


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"].update(runAsNonRot=True)),
        ("Service", lambda d: d["spec"]["ports"][0].update(port="http")),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="30s")),
        ("ServiceMonitor", lambda d: d["metadata"].update(lables={"a": "b"})),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0].update(interval="5 minutes")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(expression="1")),
    ],
)
@pytest.mark.e2e
def test_validation_rejects_mistakes(
    kind: str, mutate: Any, tmp_path: Path, crd_schemas: dict[str, Path]
) -> None:
    doc = copy.deepcopy(deployfiles.one(rendered(BASE), kind))
    mutate(doc)
    assert validate([doc], tmp_path, crd_schemas) != []


@pytest.mark.e2e
def test_base_is_namespace_agnostic_and_complete() -> None:
    docs = rendered(BASE)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceMonitor"]
    )
    for doc in docs:
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


@pytest.mark.e2e
def test_deployment_runs_hardened_with_limits_probes_and_the_secret() -> None:
    deployment = deployfiles.one(rendered(BASE), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert deployment["spec"]["replicas"] == 1
    # Non-root, as the image's numeric USER.
    user = deployfiles.parse_dockerfile().final.all("USER")[-1].value[0]
    uid, gid = (int(x) for x in user.split(":"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        uid,
        gid,
    )
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}
    # The image is this version of the exporter.
    assert container["image"] == f"ft-exporter:{__version__}", "run scripts/sync_deploy.py"
    # Probes on the exporter's port, by name.
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    # The keys: files of the Secret, which the config file names; no key in env.
    assert "env" not in container
    assert _key_files(deployment) == ("/run/secrets/ft-exporter", "ft-exporter")
    assert pod["securityContext"]["fsGroup"] == gid


@pytest.mark.e2e
def test_base_mounts_a_config_file_of_two_accounts_that_check_config_accepts(
    tmp_path: Path,
) -> None:
    _, _, lines = _check_mounted_config(BASE, "Deployment", tmp_path)
    keys = tmp_path / "keys"
    assert lines == [
        f"sg: https://dashscope-intl.aliyuncs.com, key from file {keys}/sg, "
        "default workspace, all models, quota 20 (!CANCELED,!FAILED), every 60s",
        f"bj: https://dashscope.aliyuncs.com, key from file {keys}/bj, "
        "default workspace, all models, quota 20 (!CANCELED,!FAILED), every 60s",
    ]
    # The ConfigMap is generated: its name carries a hash of the file, so an edit rolls the pods.
    configmap = _configmap(rendered(BASE), "ft-exporter-config")
    assert configmap["metadata"]["name"] != "ft-exporter-config"


def _configmap(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ConfigMap called ``name``, or ``name-<hash>`` when kustomize generated it."""
    (found,) = [
        d
        for d in deployfiles.by_kind(docs, "ConfigMap")
        if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])
    ]
    return found


def _mounted_config(docs: list[dict[str, Any]], workload: dict[str, Any]) -> str:
    """The config file as the pod sees it: the ConfigMap's file at --config.file, read only."""
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    assert f"--config.file={CONFIG_FILE}" in container["args"]
    directory, filename = CONFIG_FILE.rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    names = {d["metadata"]["name"] for d in deployfiles.by_kind(docs, "ConfigMap")}
    assert volume["configMap"]["name"] in names, "kustomize rewrote the generated name"
    (configmap,) = [
        d
        for d in deployfiles.by_kind(docs, "ConfigMap")
        if d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    text: str = configmap["data"][filename]
    return text


def _key_files(workload: dict[str, Any]) -> tuple[str, str]:
    """(mount path, Secret name) of the read-only Secret volume holding the account keys."""
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    for mount in container["volumeMounts"]:
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        if "secret" in volume:
            assert mount["readOnly"] is True
            # Readable by the pod's group only (fsGroup), not by everyone.
            assert volume["secret"]["defaultMode"] == 0o440
            return mount["mountPath"].rstrip("/"), volume["secret"]["secretName"]
    raise AssertionError("no Secret volume")


def _check_config(
    text: str, key_dir: str, tmp_path: Path, **replace: str
) -> subprocess.CompletedProcess[str]:
    """``ft-exporter check-config`` (the console script) on the file, its key files moved
    from the Secret's mount path to files written here."""
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    accounts = yaml.safe_load(text)["accounts"]
    for account in accounts:
        path = account["api_key_file"]
        assert path.startswith(key_dir + "/")
        (keys / path.rsplit("/", 1)[1]).write_text(f"sk-{account['name']}-0123456789\n")
    local = text.replace(key_dir + "/", f"{keys}/")
    for old, new in replace.items():
        local = local.replace(old, new)
    config = tmp_path / "accounts.yml"
    config.write_text(local)
    return deployfiles.run(
        [deployfiles.tool("ft-exporter"), "check-config", str(config)],
        env={"PATH": "/usr/bin:/bin"},
    )


def _check_mounted_config(directory: Path, kind: str, tmp_path: Path) -> tuple[str, str, list[str]]:
    """(file text, Secret name, check-config's lines) for the workload of a kustomization;
    check-config must have accepted the file."""
    docs = rendered(directory)
    workload = deployfiles.one(docs, kind)
    text = _mounted_config(docs, workload)
    key_dir, secret = _key_files(workload)
    result = _check_config(text, key_dir, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    return text, secret, result.stdout.splitlines()


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.e2e
def test_service_and_servicemonitor_reach_the_exporter() -> None:
    docs = rendered(BASE)
    deployment = deployfiles.one(docs, "Deployment")
    service = deployfiles.one(docs, "Service")
    monitor = deployfiles.one(docs, "ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(service["spec"]["selector"], pod_labels)
    (port,) = service["spec"]["ports"]
    assert port["port"] == DEFAULT_PORT
    assert port["targetPort"] == "http"
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    # The alert rules select job="..."; the ServiceMonitor must produce that job label.
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert deployfiles.alert_job_matchers() <= {job}


@pytest.mark.e2e
def test_prometheus_rule_holds_exactly_the_rules_of_alerts_yml() -> None:
    rule = deployfiles.one(rendered(BASE), "PrometheusRule")
    alerts = deployfiles.load_yaml(ROOT / "prometheus" / "alerts.yml")
    assert rule["spec"] == {"groups": alerts["groups"]}


@pytest.mark.e2e
def test_dashboard_configmap_holds_exactly_the_dashboard_files() -> None:
    configmap = _configmap(rendered(BASE), "ft-exporter-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    }
    assert files
    assert configmap["data"] == files
    for text in configmap["data"].values():
        json.loads(text)
    # A ConfigMap holds 1 MiB at most.
    assert sum(len(v.encode()) for v in files.values()) < 1024 * 1024


@pytest.mark.e2e
def test_generated_files_are_up_to_date() -> None:
    result = deployfiles.run([sys.executable, "scripts/sync_deploy.py", "--check"], cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
def test_sync_script_regenerates_from_changed_sources(tmp_path: Path) -> None:
    for rel in (
        "scripts/sync_deploy.py",
        "ft_exporter/__init__.py",
        "ft_exporter/config.py",
        "Dockerfile",
        "docker-compose.yml",
        "prometheus/alerts.yml",
        "deploy/kubernetes",
        "grafana/dashboards",
    ):
        source = ROOT / rel
        if source.is_dir():
            shutil.copytree(source, tmp_path / rel)
        else:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp_path / rel)
    script = [sys.executable, str(tmp_path / "scripts" / "sync_deploy.py")]
    # Change every source: a new rule group, a new dashboard, a new version and port.
    alerts_path = tmp_path / "prometheus" / "alerts.yml"
    alerts = deployfiles.load_yaml(alerts_path)
    alerts["groups"].append(
        {"name": "extra", "rules": [{"alert": "Extra", "expr": "vector(1) > 0\n"}]}
    )
    alerts_path.write_text(yaml.safe_dump(alerts))
    (tmp_path / "grafana" / "dashboards" / "extra.json").write_text('{"title": "x"}')
    init = tmp_path / "ft_exporter" / "__init__.py"
    init.write_text(init.read_text().replace(__version__, "9.8.7"))
    config = tmp_path / "ft_exporter" / "config.py"
    config.write_text(
        config.read_text().replace(f"DEFAULT_PORT = {DEFAULT_PORT}", "DEFAULT_PORT = 10123")
    )

    check = deployfiles.run([*script, "--check"])
    assert check.returncode == 1
    for stale in (
        "prometheusrule.yaml",
        "dashboards.yaml",
        "Dockerfile",
        "docker-compose.yml",
        "kustomization.yaml",
        "deployment.yaml",
        "service.yaml",
        "statefulset.yaml",
        "examples/sharded/kustomization.yaml",
        "examples/sharded/service.yaml",
    ):
        assert stale in check.stderr
    assert deployfiles.run(script).returncode == 0
    assert deployfiles.run([*script, "--check"]).returncode == 0

    rendered_tmp = deployfiles.kustomize(tmp_path / "deploy" / "kubernetes")
    assert deployfiles.one(rendered_tmp, "PrometheusRule")["spec"]["groups"] == alerts["groups"]
    assert (
        _configmap(rendered_tmp, "ft-exporter-dashboards")["data"]["extra.json"] == '{"title": "x"}'
    )
    container = _container(deployfiles.one(rendered_tmp, "Deployment"))
    assert container["image"] == "ft-exporter:9.8.7"
    assert container["ports"][0]["containerPort"] == 10123
    assert deployfiles.one(rendered_tmp, "Service")["spec"]["ports"][0]["port"] == 10123
    sharded_tmp = deployfiles.kustomize(tmp_path / "deploy" / "kubernetes" / "examples" / "sharded")
    sts = _container(deployfiles.one(sharded_tmp, "StatefulSet"))
    assert (sts["image"], sts["ports"][0]["containerPort"]) == ("ft-exporter:9.8.7", 10123)
    assert deployfiles.one(sharded_tmp, "Service")["spec"]["ports"][0]["port"] == 10123
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert "ARG VERSION=9.8.7\n" in dockerfile
    assert "EXPOSE 10123\n" in dockerfile
    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    assert compose["services"]["ft-exporter"]["ports"] == ["127.0.0.1:10123:10123"]
    assert compose["services"]["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]


def test_sync_script_keeps_comments_and_survives_awkward_text() -> None:
    spec = importlib.util.spec_from_file_location("sync_deploy", ROOT / "scripts/sync_deploy.py")
    assert spec
    assert spec.loader
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    alerts = (
        "# preamble about the file\n"
        "groups:\n"
        "  - name: g\n"
        "    rules:\n"
        "      - alert: A  # THRESHOLD kept\n"
        "        expr: |\n"
        "          up == 0\n"
        "\n"
        "          # not a comment: part of the expression text\n"
    )
    out = module.prometheus_rule(alerts)
    assert "# THRESHOLD kept" in out
    assert "preamble" not in out
    assert yaml.safe_load(out)["spec"]["groups"] == yaml.safe_load(alerts)["groups"]
    # Texts a literal block cannot carry as they are fall back to quoting, and still match.
    awkward = {
        "a.json": "{}",
        "b.json": '{\n  "x": 1\n}\n\n\n',
        "c.json": '{"t": "trailing space "}   \n  \n',
        "d.json": "   {}\n",
    }
    configmap = yaml.safe_load(module.dashboards_configmap(awkward))
    assert configmap["data"] == awkward


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _sharded_total() -> int:
    container = _container(deployfiles.one(rendered(SHARDED), "StatefulSet"))
    return int(_env(container)["FT_EXPORTER_TOTAL_SHARDS"]["value"])


@pytest.mark.e2e
def test_sharded_example_gives_each_pod_the_shard_of_its_ordinal() -> None:
    docs = rendered(SHARDED)
    # The shared parts exist once: two copies of a rule would fire every alert twice.
    for kind in ("StatefulSet", "Service", "ServiceMonitor", "PrometheusRule"):
        assert len(deployfiles.by_kind(docs, kind)) == 1, kind
    assert deployfiles.by_kind(docs, "Deployment") == []
    sts = deployfiles.one(docs, "StatefulSet")
    env = _env(_container(sts))
    # As many replicas as shards: one more would duplicate a shard, one fewer lose one.
    assert sts["spec"]["replicas"] == _sharded_total() == 3
    # Pod N is shard N: the pod-index label the StatefulSet controller puts on each pod.
    assert env["FT_EXPORTER_SHARD"] == {
        "name": "FT_EXPORTER_SHARD",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}},
    }
    assert "DASHSCOPE_API_KEY" not in env
    # Prometheus finds each pod: a headless Service (one endpoint per pod, no virtual IP)
    # that governs the StatefulSet, selected by the ServiceMonitor with the alerts' job label.
    service = deployfiles.one(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert _selects(sts["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(service["spec"]["selector"], pod_labels)
    monitor = deployfiles.one(docs, "ServiceMonitor")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "ft-exporter"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    # Hardened as the base's Deployment is.
    base_pod = deployfiles.one(rendered(BASE), "Deployment")["spec"]["template"]["spec"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"] == base_pod["securityContext"]
    assert (
        _container(sts)["securityContext"]
        == _container(deployfiles.one(rendered(BASE), "Deployment"))["securityContext"]
    )


@pytest.mark.e2e
def test_sharded_example_mounts_a_config_file_that_check_config_accepts(tmp_path: Path) -> None:
    text, secret, lines = _check_mounted_config(SHARDED, "StatefulSet", tmp_path)
    assert secret == "ft-exporter-sharded"
    names = [a["name"] for a in yaml.safe_load(text)["accounts"]]
    assert [line.split(":", 1)[0] for line in lines] == names
    # Every shard has work in the example: an empty shard would make a pod that polls nothing.
    assert all(sharding.owned(names, shard, _sharded_total()) for shard in range(3))
    assert _configmap(rendered(SHARDED), "ft-exporter-sharded-config")["metadata"]["name"] != (
        "ft-exporter-sharded-config"
    )


@pytest.mark.e2e
def test_sharded_example_pods_own_disjoint_accounts_that_cover_them_all(
    simulator: Simulator, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    docs = rendered(SHARDED)
    sts = deployfiles.one(docs, "StatefulSet")
    text = _mounted_config(docs, sts)
    key_dir, _ = _key_files(sts)
    names = [a["name"] for a in yaml.safe_load(text)["accounts"]]
    # The example's file as the pods read it, its keys and sites pointed at the simulator.
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in names:
        (keys / name).write_text(simulator.key + "\n")
    local = re.sub(r"site: \w+", f"base_url: {simulator.url}", text)
    config = tmp_path / "accounts.yml"
    config.write_text(local.replace(key_dir + "/", f"{keys}/"))
    total = _sharded_total()
    owned: list[set[str]] = []
    for pod_index in range(sts["spec"]["replicas"]):
        # What the downward API gives pod N: its index as text, and the total as written.
        exp = exporter_factory(
            [f"--config.file={config}"],
            env={"FT_EXPORTER_SHARD": str(pod_index), "FT_EXPORTER_TOTAL_SHARDS": str(total)},
        )
        text_metrics = exp.metrics()
        up = {
            dict(labels)["account"]: v
            for (name, labels), v in samples(text_metrics).items()
            if name == "dashscope_finetune_up"
        }
        assert set(up) == set(sharding.owned(names, pod_index, total))
        assert set(up.values()) == {1.0}
        assert value(text_metrics, "dashscope_finetune_shard_accounts") == len(up)
        owned.append(set(up))
        exp.stop()
    assert set().union(*owned) == set(names)
    assert sum(len(o) for o in owned) == len(names)


@pytest.mark.parametrize(
    ("shard", "line"),
    [
        (
            None,
            "--total-shards=3 needs --shard (or FT_EXPORTER_SHARD): this replica's shard, 0 to 2",
        ),
        ("", "argument --shard: not a whole number: ''"),
        ("-1", "--shard must be between 0 and 2 (--total-shards - 1), got -1"),
        ("3", "--shard must be between 0 and 2 (--total-shards - 1), got 3"),
        ("x", "argument --shard: not a whole number: 'x'"),
        ("1.0", "argument --shard: not a whole number: '1.0'"),
    ],
)
@pytest.mark.e2e
def test_a_pod_without_a_usable_shard_stops_with_exit_2_and_one_line(
    shard: str | None, line: str, tmp_path: Path
) -> None:
    # "" is what a pod gets when the pod-index label is missing (Kubernetes before 1.28).
    config = tmp_path / "accounts.yml"
    config.write_text("accounts:\n  - name: a\n    site: intl\n    api_key_env: K\n")
    env = {"PATH": "/usr/bin:/bin", "K": "sk-0123456789", "FT_EXPORTER_TOTAL_SHARDS": "3"}
    if shard is not None:
        env["FT_EXPORTER_SHARD"] = shard
    result = deployfiles.run(
        [deployfiles.tool("ft-exporter"), f"--config.file={config}"], env=env, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"ft-exporter: error: {line}"]
