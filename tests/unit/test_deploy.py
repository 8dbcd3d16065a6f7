"""The Prometheus rules and the Grafana dashboard in deploy/, read as files: the fields
Prometheus, Alertmanager and Grafana need, labels the annotations can use, PromQL that parses,
and the extractor of metric names itself. e2e/test_deploy.py checks the rules with promtool
and every metric they name against the `/metrics` of a running gateway.
"""

from __future__ import annotations

import re

import pytest

from support import LABEL_VALUES, RULES, all_exprs, graph_panels, grouping_labels, load_dashboard, load_rules, metric_names

SEVERITIES = {"critical", "warning", "info"}
_DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
_LABELS_IN_TEMPLATE = re.compile(r"\$labels\.(\w+)")


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
    assert LABEL_VALUES.search(variables["model"]["definition"])
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
    for panel in graph_panels(dashboard):
        assert panel["targets"], f"{panel['title']!r} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"{panel['title']!r}: refIds repeat"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["legendFormat"].strip(), panel["title"]
            assert '$model' in target["expr"], f"{panel['title']!r} ignores the model variable"


