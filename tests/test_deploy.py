"""The Prometheus rules and the Grafana dashboard in deploy/ against the metrics a gateway really exports.

Alert rules rot quietly: a renamed metric makes an alert that can never fire, and nothing complains.
So every metric named in an expression is checked against the `/metrics` of a running gateway.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import start_gateway

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "sluice-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "sluice-dashboard.json"

SEVERITIES = {"critical", "warning", "info"}
_DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")

# What to blank out of a PromQL expression before reading metric names: string literals (label
# values, regexes), label matchers, range and subquery brackets, grouping clauses (their label
# names look like metric names), and Grafana variables.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_GRAFANA_VARS = re.compile(r"\$\{?\w+\}?")
# A name not inside a number (1e-3, 5m) and not a function call.
_NAME = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "group_left", "group_right"}
_LABELS_IN_TEMPLATE = re.compile(r"\$labels\.(\w+)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names a PromQL expression selects."""
    for pattern in (_STRINGS, _MATCHERS, _BRACKETS, _GROUPING, _GRAFANA_VARS):
        expr = pattern.sub(" ", expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in _KEYWORDS}


def grouping_labels(expr: str) -> set[str]:
    """Labels named in the `by (...)` clauses of an expression."""
    found = re.findall(r"\bby\s*\(([^()]*)\)", _STRINGS.sub(" ", expr), re.IGNORECASE)
    return {label.strip() for group in found for label in group.split(",") if label.strip()}


def load_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def graph_panels(dashboard: dict) -> list[dict]:
    """Panels that query something (rows only lay the others out)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def all_exprs() -> Iterator[tuple[str, str]]:
    """(where, expression) for every rule and every dashboard query."""
    for rule in load_rules():
        yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]
    for panel in graph_panels(load_dashboard()):
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]


def exported_sample_names(exposition: str) -> set[str]:
    """Sample names a gateway can export, from the `# TYPE` lines of its exposition.

    prometheus_client prints those lines even for a labelled metric that has no child yet (FaaS and
    placement metrics on a model without a function), so one plain gateway shows every family.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        name, kind = parts[2], parts[3]
        if kind == "counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def test_metric_names_skips_functions_labels_and_literals() -> None:
    """The extractor itself: a false name would fail the real check, a missed one would hide a typo."""
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{code=~"5..", x="}{"}[$__rate_interval])))'
        " > 1e-3 and on (model) group_left b:c:d unless sum without (kind) (e_total offset 1h) * 3600"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:d", "e_total"}
    assert grouping_labels(expr) == {"model", "le"}


def test_rules_have_the_fields_prometheus_and_alertmanager_need() -> None:
    rules = load_rules()
    assert rules, f"no rules in {RULES}"
    for rule in rules:
        assert ("alert" in rule) != ("record" in rule), f"a rule is an alert or a record: {rule}"
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), rule
        if "record" in rule:
            assert ":" in rule["record"], f"recorded names are level:metric:operations: {rule['record']}"
            continue
        name = rule["alert"]
        assert _DURATION.match(str(rule.get("for", ""))), f"{name}: `for` must be a duration"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity one of {SEVERITIES}"
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), f"{name}: summary and description"
    alerts = [rule["alert"] for rule in rules if "alert" in rule]
    records = [rule["record"] for rule in rules if "record" in rule]
    assert len(set(alerts)) == len(alerts) and len(set(records)) == len(records), "names repeat"


def test_alert_annotations_use_labels_the_expr_keeps() -> None:
    """`{{ $labels.function }}` on an alert aggregated `by (model)` would be empty in every notification."""
    rules = load_rules()
    recorded = {rule["record"]: grouping_labels(rule["expr"]) for rule in rules if "record" in rule}
    for rule in (rule for rule in rules if "alert" in rule):
        kept = grouping_labels(rule["expr"])
        for name in metric_names(rule["expr"]) & recorded.keys():
            kept |= recorded[name]
        used = set(_LABELS_IN_TEMPLATE.findall(" ".join(rule["annotations"].values())))
        if kept:  # an expression without aggregation keeps every label of its series
            assert used <= kept, f"{rule['alert']}: annotations use {used - kept}, the expression keeps {kept}"


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_expression_parses_as_promql() -> None:
    """Catches a syntax error in a dashboard query too, which promtool never sees."""
    promql_parser = pytest.importorskip("promql_parser", reason="the promql-parser package is not installed")
    for where, expr in all_exprs():
        try:
            promql_parser.parse(expr.replace("$__rate_interval", "5m"))
        except ValueError as exc:
            pytest.fail(f"{where}: {exc}\n{expr}")


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert _LABEL_VALUES.search(variables["model"]["definition"])
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
    for panel in graph_panels(dashboard):
        assert panel["targets"], f"{panel['title']!r} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"{panel['title']!r}: refIds repeat"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["legendFormat"].strip(), panel["title"]
            assert '$model' in target["expr"], f"{panel['title']!r} ignores the model variable"


@pytest.mark.e2e
def test_every_metric_named_in_deploy_is_exported(tmp_path: Path, demo_path: Path) -> None:
    """Compares the names in every rule, dashboard query and variable with a live gateway's /metrics."""
    gateway = start_gateway(tmp_path, "--model", f"demo={demo_path}", "--workers", "1", "--no-access-log")
    try:
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.1] * 256}]})
        for _ in range(3):
            request = urllib.request.Request(
                f"{gateway.url}/v2/models/demo/infer", body.encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as response:
            exported = exported_sample_names(response.read().decode())
    finally:
        gateway.stop()
    assert "sluice_requests_total" in exported and "sluice_faas_throttles_total" in exported, sorted(exported)

    recorded = {rule["record"] for rule in load_rules() if "record" in rule}
    used = {(where, name) for where, expr in all_exprs() for name in metric_names(expr)}
    for variable in load_dashboard()["templating"]["list"]:
        for name in _LABEL_VALUES.findall(variable.get("definition", "")):
            used.add((f"variable {variable['name']}", name))
    unknown = sorted(f"{where}: {name}" for where, name in used if name not in exported | recorded)
    assert not unknown, "names no gateway exports:\n" + "\n".join(unknown)
