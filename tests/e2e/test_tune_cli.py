"""`python -m gateway tune --json`: the JSON it promises, its exit codes, and that `sluice sim`
with the tuned (batch size, timeout, memory) attains the percentile on the same arrivals.

The subprocesses are started side by side (each spends a second importing) and shared by
the tests of this module. unit/test_tune_cli.py runs `sluice tune` in process (bad input,
--no-verify); unit/test_sim_cli.py covers `sluice sim` itself.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import REPO, TRACES, TUNE_SLO, TUNE_TRACE_ARRIVALS, needs_traces

SYNTHETIC = ("--arrivals", "poisson:rate=100", "--duration", "600", "--seed", "3")
SYNTHETIC_REQUESTS = 60_012  # poisson:rate=100 for 600 s, seed 3


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def finish(process: subprocess.Popen) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    doc = json.loads(out) if out.strip() else None
    if doc is not None:
        assert out.count("\n") == 1, "--json prints exactly one line: one JSON object"
    return {"code": process.returncode, "json": doc, "out": out, "err": err}


@pytest.fixture(scope="module")
def runs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every tune run at once, then `sim` with each feasible choice, also at once."""
    profile = ("--profile", files["profile"])
    sources = {"synthetic": SYNTHETIC, "trace": ("--trace", files["trace"])}
    started = {name: start("tune", *source, *profile, *TUNE_SLO, "--json") for name, source in sources.items()}
    started["infeasible"] = start("tune", "--arrivals", "poisson:rate=100", "--duration", "60", *profile,
                                  "--slo-ms", "20", "--percentile", "99", "--json")  # fmt: skip
    started["bad"] = start("tune", "--arrivals", "gauss:rate=5", "--duration", "10", *profile, *TUNE_SLO, "--json")
    results = {name: finish(process) for name, process in started.items()}
    sims = {}
    for name, source in sources.items():
        tuned = results[name]["json"]
        if results[name]["code"] == 0:
            sims[f"sim-{name}"] = start("sim", *source, *profile, *TUNE_SLO, "--batch-size", str(tuned["batch_size"]),
                                        "--timeout-ms", str(tuned["timeout_ms"]), "--memory-mb", str(tuned["memory_mb"]), "--json")  # fmt: skip
    results.update({name: finish(process) for name, process in sims.items()})
    return results


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_tune_json(doc: dict[str, Any], rate: float) -> None:
    assert doc["feasible"] is True
    assert isinstance(doc["batch_size"], int) and 1 <= doc["batch_size"] <= 64
    assert number(doc["timeout_ms"]) and 0 <= doc["timeout_ms"] <= 200
    assert isinstance(doc["memory_mb"], int) and doc["memory_mb"] in (1024, 2048)
    assert number(doc["predicted_latency_ms"]) and 0 < doc["predicted_latency_ms"] <= 200
    assert number(doc["predicted_cost_per_million_usd"]) and 0 < doc["predicted_cost_per_million_usd"] < 10
    assert isinstance(doc["configs_evaluated"], int) and doc["configs_evaluated"] > 64
    assert number(doc["solve_ms"]) and doc["solve_ms"] > 0
    arrivals = doc["arrivals"]
    assert all(number(arrivals[key]) for key in ("rate", "scv", "acf1"))
    assert arrivals["rate"] == pytest.approx(rate, rel=0.05)
    assert arrivals["scv"] == pytest.approx(1.0, abs=0.1) and abs(arrivals["acf1"]) < 0.05
    verified = doc["verified"]  # the choice simulated on the same arrivals, cold starts included
    assert verified["slo_attainment"] >= 0.99 and isinstance(verified["rounds"], int) and verified["rounds"] >= 1
    assert number(verified["latency_ms"]) and verified["latency_ms"] <= 200
    assert isinstance(verified["cold_starts"], int) and number(verified["tuning_slo_ms"])


def test_tune_json_on_a_synthetic_spec(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["synthetic"]
    assert run["code"] == 0, run["err"]
    check_tune_json(run["json"], rate=100.0)
    assert run["json"]["percentile"] == 99.0 and run["json"]["slo_ms"] == 200.0


def test_tune_json_on_a_trace_file(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["trace"]
    assert run["code"] == 0, run["err"]
    check_tune_json(run["json"], rate=40.0)
    assert run["json"]["arrivals"]["count"] == TUNE_TRACE_ARRIVALS


@pytest.mark.parametrize("name", ["synthetic", "trace"])
def test_sim_with_the_tuned_choice_attains_the_percentile(runs: dict[str, dict[str, Any]], name: str) -> None:
    """Same arrivals, the demo profile's cold starts included: `sim` agrees with the
    verification `tune` ran itself."""
    run = runs[f"sim-{name}"]
    assert run["code"] == 0, run["err"]
    report = run["json"]
    assert report["slo_attainment"] >= 0.99, report
    assert report["slo_attainment"] == pytest.approx(runs[name]["json"]["verified"]["slo_attainment"])
    expected = SYNTHETIC_REQUESTS if name == "synthetic" else TUNE_TRACE_ARRIVALS
    assert isinstance(report["requests"], int) and report["requests"] == report["completed"] == expected
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max", "mean"}
    assert all(number(v) for v in report["latency_ms"].values())
    for key in ("slo_attainment", "cost_usd", "cost_per_million_usd", "mean_batch_size", "wall_s"):
        assert number(report[key]), key
    assert isinstance(report["batches"], int) and isinstance(report["cold_starts"], int)
    settings, tuned = report["settings"], runs[name]["json"]
    assert (settings["batch_size"], settings["timeout_ms"], settings["memory_mb"]) == (
        tuned["batch_size"], pytest.approx(tuned["timeout_ms"]), tuned["memory_mb"])  # fmt: skip


def test_an_slo_below_the_service_time_exits_1(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["infeasible"]
    assert run["code"] == 1, run["err"]
    doc = run["json"]
    assert doc["feasible"] is False and doc["notes"]
    # The closest configuration is still reported: no batching, slower than the SLO.
    assert doc["batch_size"] == 1 and doc["predicted_latency_ms"] > 20


def test_bad_input_exits_2_in_a_subprocess(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["bad"]
    assert run["code"] == 2 and run["out"] == ""
    assert run["err"].startswith("sluice tune: ") and "unknown arrival process" in run["err"]


def test_a_choice_that_misses_in_simulation_is_tuned_again(tmp_path: Path) -> None:
    """Twenty minutes of one deep diurnal cycle (40 req/s on average, +-90%), which one
    stationary fitted process cannot show: the first choice for p99 <= 500 ms meets it in
    the model but not on the arrivals, and the verified choice, tuned again for a tighter
    SLO, does. (The Azure code trace, once this test's example, is now met at the first
    choice: its 3-phase fit holds its bursts.)"""
    profile = REPO / "bench" / "profiles" / "demo_faas.json"
    argv = ("--arrivals", "diurnal:rate=40,amplitude=0.9,period=1200", "--duration", "1200", "--profile", str(profile),
            "--slo-ms", "500", "--percentile", "99")  # fmt: skip
    done = finish(start("tune", *argv, "--json"))
    assert done["code"] == 0, done["err"]
    verified = done["json"]["verified"]
    assert verified["rounds"] > 1 and verified["tuning_slo_ms"] < 500
    assert verified["slo_attainment"] >= 0.99
    replay = finish(start("sim", *argv, "--batch-size", str(done["json"]["batch_size"]), "--timeout-ms",
                          str(done["json"]["timeout_ms"]), "--memory-mb", str(done["json"]["memory_mb"]), "--json"))  # fmt: skip
    assert replay["json"]["slo_attainment"] == pytest.approx(verified["slo_attainment"])
