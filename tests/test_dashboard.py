"""The Grafana dashboard and provisioning files, checked against Grafana's own model.

tests/schema/ holds JSON Schemas generated from the TypeScript types of the npm package
@grafana/schema (see scripts/gen-grafana-schema.sh), so no npm is needed here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import promql
import pytest
import yaml
from conftest import ROOT

DASHBOARD = ROOT / "grafana" / "dashboards" / "dashscope-fine-tunes.json"
PROVISIONING = ROOT / "grafana" / "provisioning"
SCHEMAS = ROOT / "tests" / "schema"
SOURCE = json.loads((SCHEMAS / "grafana-schema-source.json").read_text())
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
#: Panel types Grafana has deprecated or removed (auto-migrated on load, or gone).
DEPRECATED_TYPES = {
    "graph",
    "singlestat",
    "table-old",
    "grafana-piechart-panel",
    "grafana-worldmap-panel",
}


def load_dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def schema(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return result


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, also those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def explain(error: jsonschema.ValidationError) -> str:
    """One line per error; for "any of" (a panel is a Panel or a RowPanel) say why each failed."""
    line = f"{list(error.absolute_path)}: {error.message}"
    if error.context:
        line += " [" + "; ".join(explain(sub) for sub in error.context) + "]"
    return line


def schema_errors(dashboard: dict[str, Any]) -> list[str]:
    """Everything Grafana's model says is wrong with a dashboard, as readable lines."""
    validator = jsonschema.Draft7Validator(schema("grafana-dashboard.schema.json"))
    errors = [f"dashboard {explain(e)}" for e in validator.iter_errors(dashboard)]
    dashboard_schema = schema("grafana-dashboard.schema.json")
    for panel in data_panels(dashboard):
        kind = panel["type"]
        where = f"panel {panel.get('id')} ({kind})"
        options_file = SCHEMAS / f"grafana-panel-{kind}-options.schema.json"
        if not options_file.exists():
            errors.append(f"{where}: no schema for panel type {kind!r}")
            continue
        validator = jsonschema.Draft7Validator(schema(options_file.name))
        errors += [
            f"{where} options {list(e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(panel.get("options", {}))
        ]
        custom_file = SCHEMAS / f"grafana-panel-{kind}-fieldconfig.schema.json"
        custom_schema = schema(custom_file.name) if custom_file.exists() else None
        field_config = panel.get("fieldConfig", {})
        custom = field_config.get("defaults", {}).get("custom")
        if custom is not None:
            if custom_schema is None:
                errors.append(f"{where}: fieldConfig.defaults.custom, but {kind} has none")
            else:
                errors += [
                    f"{where} custom {list(e.absolute_path)}: {e.message}"
                    for e in jsonschema.Draft7Validator(custom_schema).iter_errors(custom)
                ]
        for override in field_config.get("overrides", []):
            for prop in override["properties"]:
                errors += override_errors(where, prop, dashboard_schema, custom_schema)
    return errors


def override_errors(
    where: str,
    prop: dict[str, Any],
    dashboard_schema: dict[str, Any],
    custom: dict[str, Any] | None,
) -> list[str]:
    """An override property must name a field option and carry a value of its type."""
    name = prop["id"]
    if name.startswith("custom."):
        key, owner = name.removeprefix("custom."), custom
    else:
        key, owner = name, dashboard_schema
    if owner is None:
        return [f"{where}: override {name!r}, but the panel type has no custom options"]
    field_config = owner["definitions"]["FieldConfig"]["properties"]
    if key not in field_config:
        return [f"{where}: override {name!r} is not a field option"]
    sub = {
        "$ref": f"#/definitions/FieldConfig/properties/{key}",
        "definitions": owner["definitions"],
    }
    return [
        f"{where} override {name!r}: {e.message}"
        for e in jsonschema.Draft7Validator(sub).iter_errors(prop.get("value"))
    ]


def datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``datasource`` value anywhere in the dashboard, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}/{key}", value
            yield from datasource_refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from datasource_refs(value, f"{path}/{i}")


def test_schema_files_are_generated_and_pinned() -> None:
    assert SOURCE["package"] == "@grafana/schema"
    assert SOURCE["version"].count(".") == 2
    for name in [
        "grafana-dashboard.schema.json",
        *[f"grafana-panel-{p}-options.schema.json" for p in SOURCE["panels"]],
    ]:
        generated = schema(name)
        assert "scripts/gen-grafana-schema.sh" in generated["$comment"]
        assert generated["$schema"].startswith("http://json-schema.org/draft-07")
    # The model is strict: unknown keys are errors, not ignored.
    panel = schema("grafana-dashboard.schema.json")["definitions"]["Panel"]
    assert panel["additionalProperties"] is False


def test_dashboard_matches_grafanas_model() -> None:
    assert schema_errors(load_dashboard()) == []


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda d: d["panels"][1].update(colour="red"), "('colour' was unexpected)"),
        (lambda d: d["panels"][1]["options"].update(shape="donut"), "'donut' is not one of"),
        (lambda d: d["panels"][1]["gridPos"].pop("w"), "'gridPos']: 'w' is a required property"),
        (
            lambda d: d["templating"]["list"][0].update(definition="x"),
            "('definition' was unexpected)",
        ),
        (
            lambda d: d["panels"][1]["fieldConfig"]["defaults"].update(custom={"lineWidth": 1}),
            "but gauge has none",
        ),
        (lambda d: d.update(schemaVersion="42"), "is not of type 'number'"),
        (
            lambda d: d["panels"][1]["fieldConfig"]["overrides"].append(
                {"matcher": {"id": "byName", "options": "x"}, "properties": [{"id": "colour"}]}
            ),
            "is not a field option",
        ),
        (lambda d: d["panels"][1].update(type="graph"), "no schema for panel type 'graph'"),
    ],
)
def test_validation_catches_mistakes(mutation: Any, expected: str) -> None:
    """The checks above are not vacuous: each of these breakages is reported."""
    dashboard = copy.deepcopy(load_dashboard())
    assert dashboard["panels"][1]["type"] == "gauge"
    mutation(dashboard)
    assert any(expected in error for error in schema_errors(dashboard)), schema_errors(dashboard)


def test_current_schema_version_and_panel_types() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == SOURCE["schemaVersion"]
    types = {p["type"] for p in panels(dashboard)}
    assert not types & DEPRECATED_TYPES
    assert types <= {*SOURCE["panels"], "row"}
    assert {"gauge", "stat", "timeseries", "table", "row"} <= types


def test_panel_ids_unique_and_layout_without_overlap() -> None:
    all_panels = list(panels(load_dashboard()))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_every_panel_has_datasource_variable_targets_and_one_line_description() -> None:
    for panel in data_panels(load_dashboard()):
        title = panel["title"]
        assert panel["datasource"] == DS_REF, title
        description = panel.get("description", "")
        assert description.strip(), title
        assert "\n" not in description, title
        assert panel["targets"], title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        for t in panel["targets"]:
            assert t["datasource"] == DS_REF, title
            assert t["expr"].strip(), title
            assert isinstance(t["instant"], bool), title
            assert t["range"] is not t["instant"], title


def test_no_hard_coded_datasource() -> None:
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard
    refs = list(datasource_refs(dashboard))
    assert len(refs) > 20
    for where, ref in refs:
        if where.startswith("/annotations/list/0/"):
            # Grafana's own built-in annotation source, the same in every Grafana.
            assert ref == {"type": "grafana", "uid": "-- Grafana --"}
        else:
            assert ref == DS_REF, where


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("account", "model"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DS_REF
        assert var["includeAll"] is True
        assert var["multi"] is True
        assert var["allValue"] == ".*"
        assert promql.variable_query_names(var["query"]).labels >= {name}
    expressions = [t["expr"] for p in data_panels(load_dashboard()) for t in p["targets"]]
    per_account = [e for e in expressions if "dashscope_finetune_" in e and "build_info" not in e]
    assert len(per_account) > 20
    assert all('account=~"$account"' in e for e in per_account)
    assert any('model=~"$model"' in e for e in expressions)


def test_issue_panels_are_present() -> None:
    by_title = {p["title"]: p for p in data_panels(load_dashboard())}
    gauge = by_title["Quota used"]
    assert gauge["type"] == "gauge"
    steps = gauge["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.8, 1]
    assert gauge["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert by_title["Quota headroom"]["type"] == "timeseries"
    assert by_title["Jobs by status"]["type"] == "stat"
    stacked = by_title["Jobs by status over time"]["fieldConfig"]["defaults"]["custom"]["stacking"]
    assert stacked["mode"] == "normal"
    active = by_title["Active jobs"]
    assert active["type"] == "table"
    columns = active["transformations"][-1]["options"]["renameByName"].values()
    assert {"Name", "Model", "Training type", "Status", "Age"} <= set(columns)
    assert "dashscope_finetune_job_created_timestamp_seconds" in active["targets"][0]["expr"]
    ended = by_title["Recently ended jobs"]
    columns = ended["transformations"][-1]["options"]["renameByName"].values()
    assert {"Status", "Duration", "Tokens"} <= set(columns)
    assert (
        "dashscope_finetune_usage_tokens"
        in by_title["Tokens used by model and training type"]["targets"][0]["expr"]
    )
    errors = by_title["API errors by code"]
    [throttling] = [
        o["matcher"]
        for o in errors["fieldConfig"]["overrides"]
        if "Throttling" in str(o["matcher"])
    ]
    # Series are named "<code> <endpoint>": Throttling is highlighted on both endpoints, and
    # only Throttling (Grafana anchors a regexp not written as /.../ at both ends).
    assert errors["targets"][0]["legendFormat"] == "{{code}} {{endpoint}}"
    assert throttling["id"] == "byRegexp"
    pattern = re.compile(throttling["options"])
    assert all(pattern.fullmatch(f"Throttling {e}") for e in ("list", "logs"))
    assert not pattern.fullmatch("InternalError logs")
    latency = " ".join(t["expr"] for t in by_title["API request latency"]["targets"])
    assert latency.count("histogram_quantile(") == 3
    assert "_bucket" in latency
    age = by_title["Data age"]["targets"][0]["expr"]
    assert "time() -" in age
    assert "last_success_timestamp_seconds" in age
    up = " ".join(t["expr"] for t in by_title["Up"]["targets"])
    assert "up{" in up
    assert "dashscope_finetune_up{" in up
    assert "sweep_duration_seconds" in by_title["Sweep duration"]["targets"][0]["expr"]
    assert "api_requests_total" in by_title["API request rate"]["targets"][0]["expr"]


COST_QUERY = (
    "sum by (account, model, currency) (dashscope_finetune_estimated_cost"
    '{job=~"$job", account=~"$account", model=~"$model"})'
)


def test_cost_panel_in_the_tokens_row_says_when_no_prices_are_configured() -> None:
    """Without `prices` the cost series is absent: the panel says why, not "No data"."""
    layout = dict(rows(load_dashboard()))
    [cost] = [p for p in layout["Tokens"] if "estimated_cost" in str(p["targets"])]
    assert cost["title"] == "Estimated cost by model and account"
    assert cost["type"] == "table"
    [target] = cost["targets"]
    assert target["expr"] == COST_QUERY
    assert (target["instant"], target["range"], target["format"]) == (True, False, "table")
    defaults = cost["fieldConfig"]["defaults"]
    assert defaults["noValue"] == "no prices configured"
    # The currency is a column of its own, next to the figure (no unit: it is the label's).
    organize = cost["transformations"][-1]["options"]
    assert organize["renameByName"] == {
        "account": "Account",
        "model": "Model",
        "Value": "Cost",
        "currency": "Currency",
    }
    assert organize["indexByName"] == {"account": 0, "model": 1, "Value": 2, "currency": 3}
    assert "{{currency}}" in target["legendFormat"]


def test_a_no_value_text_of_the_wrong_type_is_refused() -> None:
    """The schema types noValue as a string: the check above is backed by Grafana's model."""
    dashboard = copy.deepcopy(load_dashboard())
    [cost] = [p for p in data_panels(dashboard) if p.get("id") == 32]
    cost["fieldConfig"]["defaults"]["noValue"] = 0
    assert any("noValue" in e and "is not of type 'string'" in e for e in schema_errors(dashboard))


#: The Training row's table: column title -> the metric behind it.
TRAINING_COLUMNS = {
    "Progress": "dashscope_finetune_job_progress_ratio",
    "Epoch": "dashscope_finetune_job_epoch",
    "Epochs": "dashscope_finetune_job_epochs",
    "Train loss": "dashscope_finetune_job_train_loss",
    "Eval loss": "dashscope_finetune_job_eval_loss",
    "Eval loss min": "dashscope_finetune_job_eval_loss_min",
    "Learning rate": "dashscope_finetune_job_learning_rate",
    "Estimated end": "dashscope_finetune_job_estimated_end_timestamp_seconds",
    "Log last grew": "dashscope_finetune_job_log_last_growth_timestamp_seconds",
}
RUNNING_JOIN = (
    "* on (job, instance, account, job_id) group_left (job_name, model)\n"
    '    dashscope_finetune_job_info{job=~"$job", account=~"$account", model=~"$model", '
    'status="RUNNING"}'
)


def rows(dashboard: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each row's title with the panels below it, in order (the rows are not collapsed)."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            assert not panel["collapsed"], panel["title"]
            out.append((panel["title"], []))
        else:
            out[-1][1].append(panel)
    return out


def test_training_row_follows_jobs_and_shows_running_jobs_only() -> None:
    layout = rows(load_dashboard())
    titles = [title for title, _ in layout]
    assert titles == ["Quota", "Jobs", "Training", "Tokens", "Exporter and API health"]
    training = {p["title"]: p for p in dict(layout)["Training"]}
    assert set(training) == {"Train loss", "Eval loss", "Progress", "Running jobs: training"}
    # Every query of the row: one job's series, named by job_info of a RUNNING job, which
    # also applies the Model variable.
    for panel in training.values():
        for t in panel["targets"]:
            assert t["expr"].count(RUNNING_JOIN) == 1, (panel["title"], t["expr"])
            assert 'account=~"$account"' in t["expr"].split(RUNNING_JOIN)[0], panel["title"]
    for title, metric in (
        ("Train loss", "dashscope_finetune_job_train_loss"),
        ("Eval loss", "dashscope_finetune_job_eval_loss"),
    ):
        [t] = training[title]["targets"]
        assert training[title]["type"] == "timeseries"
        assert t["range"] is True
        assert t["legendFormat"] == "{{job_name}}"
        assert t["expr"].startswith(metric + "{")
    progress = training["Progress"]
    assert progress["type"] == "bargauge"
    [t] = progress["targets"]
    assert t["expr"].startswith("dashscope_finetune_job_progress_ratio{")
    assert t["legendFormat"] == "{{job_name}}"
    defaults = progress["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)


def test_training_table_columns() -> None:
    table = next(p for p in data_panels(load_dashboard()) if p["title"] == "Running jobs: training")
    assert table["type"] == "table"
    by_ref = {t["refId"]: t for t in table["targets"]}
    assert all(t["format"] == "table" and t["instant"] for t in by_ref.values())
    merge, organize = table["transformations"]
    assert merge["id"] == "merge"
    rename = organize["options"]["renameByName"]
    column_metric = {
        rename[f"Value #{ref}"]: promql.names(t["expr"]).metrics - {"dashscope_finetune_job_info"}
        for ref, t in by_ref.items()
    }
    assert column_metric == {title: {metric} for title, metric in TRAINING_COLUMNS.items()}
    assert {"Name", "Model", "Job ID", "Account"} <= set(rename.values())
    order = organize["options"]["indexByName"]
    assert sorted(order.values()) == list(range(len(order)))
    units = {
        o["matcher"]["options"]: p["value"]
        for o in table["fieldConfig"]["overrides"]
        for p in o["properties"]
        if p["id"] == "unit"
    }
    assert units["Progress"] == "percentunit"
    # A date needs milliseconds; an age is now minus the timestamp, in seconds.
    assert units["Estimated end"] == "dateTimeAsIso"
    assert " * 1000\n" in by_ref["H"]["expr"]
    assert units["Log last grew"] == "dtdurations"
    assert by_ref["I"]["expr"].startswith("(time() - dashscope_finetune_job_log_last_growth")
    # Red from the stalled alert's threshold on.
    [grew] = [
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Log last grew"
    ]
    steps = next(p["value"]["steps"] for p in grew["properties"] if p["id"] == "thresholds")
    assert [s["value"] for s in steps] == [None, 30 * 60]
    # A NaN loss shows in red, not as an empty cell.
    for name in ("Train loss", "Eval loss"):
        [loss] = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == name]
        mapping = next(p["value"][0] for p in loss["properties"] if p["id"] == "mappings")
        assert mapping["options"]["match"] == "nan"
        assert mapping["options"]["result"]["color"] == "red"


def test_api_panels_split_by_endpoint() -> None:
    by_title = {p["title"]: p for p in data_panels(load_dashboard())}
    for title in ("API request rate", "API errors by code", "API request latency"):
        for t in by_title[title]["targets"]:
            assert promql.names(t["expr"]).labels >= {"endpoint"}, title
            assert "{{endpoint}}" in t["legendFormat"], title


def test_every_expression_reads() -> None:
    """Each query tokenises and names at least one metric (the e2e test runs them all)."""
    for panel in data_panels(load_dashboard()):
        for t in panel["targets"]:
            assert promql.names(t["expr"]).metrics, (panel["title"], t["expr"])


def provisioning(path: str) -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load((PROVISIONING / path).read_text())
    return result


def test_datasource_provisioning() -> None:
    config = provisioning("datasources/prometheus.yml")
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["name"] == "Prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    # The $datasource variable starts at the default datasource.
    assert source["isDefault"] is True
    assert source["access"] == "proxy"


def test_dashboard_provisioning_points_at_the_mounted_folder() -> None:
    config = provisioning("dashboards/ft-exporter.yml")
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    # Compose mounts grafana/dashboards there: the dashboard file sits at its top.
    assert DASHBOARD.parent == ROOT / "grafana" / "dashboards"
    assert sorted(p.name for p in Path(DASHBOARD.parent).glob("*.json")) == [DASHBOARD.name]


def test_provisioned_dashboard_has_a_stable_uid_and_no_instance_id() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "dashscope-fine-tunes"
    assert dashboard.get("id") is None
    assert dashboard["title"]
