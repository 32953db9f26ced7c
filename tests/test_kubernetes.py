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
import sys
from functools import cache
from pathlib import Path
from typing import Any

import deployfiles
import pytest
import yaml
from conftest import ROOT

from ft_exporter import __version__
from ft_exporter.config import DEFAULT_PORT

#: The CRD schemas (a session fixture) take seconds to build: one worker builds them once.
pytestmark = pytest.mark.xdist_group("kubernetes")

CRDS = ("ServiceMonitor", "PrometheusRule")
# The oldest and the newest Kubernetes release kubernetes-validate has schemas for.
K8S_VERSIONS = ("1.25.0", None)

BASE = deployfiles.K8S
SHARDED = deployfiles.K8S / "examples" / "two-accounts"


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
        ["ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceMonitor"]
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
    # The key: a file from the Secret, named by the exporter's own variable; no key in env.
    env = {e["name"]: e for e in container.get("env", [])}
    assert "DASHSCOPE_API_KEY" not in env
    key_file = env["FT_EXPORTER_DASHSCOPE_API_KEY_FILE"]["value"]
    (mount,) = container["volumeMounts"]
    assert mount["readOnly"] is True
    assert key_file.startswith(mount["mountPath"].rstrip("/") + "/")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "ft-exporter"
    assert key_file.rsplit("/", 1)[1] == "api-key"
    # Readable by the pod's group only (fsGroup), not by everyone.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == gid


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
    configmap = deployfiles.one(rendered(BASE), "ConfigMap")
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
    ):
        assert stale in check.stderr
    assert deployfiles.run(script).returncode == 0
    assert deployfiles.run([*script, "--check"]).returncode == 0

    rendered_tmp = deployfiles.kustomize(tmp_path / "deploy" / "kubernetes")
    assert deployfiles.one(rendered_tmp, "PrometheusRule")["spec"]["groups"] == alerts["groups"]
    assert deployfiles.one(rendered_tmp, "ConfigMap")["data"]["extra.json"] == '{"title": "x"}'
    container = _container(deployfiles.one(rendered_tmp, "Deployment"))
    assert container["image"] == "ft-exporter:9.8.7"
    assert container["ports"][0]["containerPort"] == 10123
    assert deployfiles.one(rendered_tmp, "Service")["spec"]["ports"][0]["port"] == 10123
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


@pytest.mark.e2e
def test_sharding_example_gives_each_account_its_own_exporter() -> None:
    docs = rendered(SHARDED)
    deployments = deployfiles.by_kind(docs, "Deployment")
    services = deployfiles.by_kind(docs, "Service")
    assert len(deployments) == len(services) == 2
    # The shared parts exist once: two copies of a rule would fire every alert twice.
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap"):
        assert len(deployfiles.by_kind(docs, kind)) == 1, kind
    accounts = set()
    secrets = set()
    for deployment in deployments:
        container = _container(deployment)
        env = {e["name"]: e.get("value") for e in container["env"]}
        accounts.add(env["FT_EXPORTER_DASHSCOPE_ACCOUNT"])
        (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
        secrets.add(volume["secret"]["secretName"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        # Each Service selects exactly its own exporter's pods.
        selecting = [s for s in services if _selects(s["spec"]["selector"], pod_labels)]
        assert len(selecting) == 1, deployment["metadata"]["name"]
    assert accounts == {"team-a", "team-b"}
    assert secrets == {"ft-exporter-team-a", "ft-exporter-team-b"}
    assert len({d["metadata"]["name"] for d in deployments}) == 2
    # One ServiceMonitor scrapes both, and both get the job label the alerts expect.
    monitor = deployfiles.one(docs, "ServiceMonitor")
    for service in services:
        assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "ft-exporter"
