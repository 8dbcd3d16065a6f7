"""The Prometheus rules and the Grafana dashboard in deploy/ against the metrics a gateway really exports.

Alert rules rot quietly: a renamed metric makes an alert that can never fire, and nothing complains.
So every metric named in an expression is checked against the `/metrics` of a running gateway,
and the rules against promtool. unit/test_deploy.py checks the files themselves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from support import LABEL_VALUES, RULES, all_exprs, load_dashboard, load_rules, metric_names, start_gateway


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


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


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
        for name in LABEL_VALUES.findall(variable.get("definition", "")):
            used.add((f"variable {variable['name']}", name))
    unknown = sorted(f"{where}: {name}" for where, name in used if name not in exported | recorded)
    assert not unknown, "names no gateway exports:\n" + "\n".join(unknown)
