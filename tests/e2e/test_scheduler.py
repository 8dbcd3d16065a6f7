"""Schedulers in `sluice sim`, a subprocess: every scheduler compared in one run, a user's one
loaded by module path, and a clear error for a name that is none (the schedulers themselves are
tested in unit/test_scheduler.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import DEMO_FAAS_PROFILE, REPO


def sim(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "gateway", "sim", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compare_json_holds_every_scheduler_and_a_custom_one_loads_by_path() -> None:
    common = ("--arrivals", "poisson:rate=300", "--duration", "120", "--profile", str(DEMO_FAAS_PROFILE), "--slo-ms", "500",
              "--memory-mb", "1024", "--batch-size", "16", "--timeout-ms", "50", "--json")  # fmt: skip
    names = ["hybrid", "faas-only", "pool-only", "mark", "fixed:3", "tests.custom_scheduler:TwoInstancesFirstReady"]
    compared = sim(*common, "--compare", ",".join(names))
    assert list(compared) == names
    for name, summary in compared.items():
        for key in ("requests", "completed", "latency_ms", "slo_attainment", "cost_usd", "cost_per_million_usd", "batches",
                    "mean_batch_size", "cold_starts", "wall_s", "instance_hours", "faas_share"):  # fmt: skip
            assert key in summary, (name, key)
        assert summary["completed"] == summary["requests"] > 0
    assert compared["faas-only"]["faas_share"] == 1.0 and compared["faas-only"]["instance_hours"] == 0.0
    assert compared["fixed:3"]["instances_started"] == 3  # a built-in's setting after the colon
    custom = compared["tests.custom_scheduler:TwoInstancesFirstReady"]
    assert custom["faas_share"] == 0.0 and custom["instances_started"] == 2
    single = sim(*common, "--scheduler", "tests.custom_scheduler:TwoInstancesFirstReady")
    assert single["instances_started"] == 2 and single["requests"] == custom["requests"]


def test_a_bad_scheduler_name_is_a_clear_error() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway", "sim", "--arrivals", "poisson:rate=10", "--duration", "5",
                           "--profile", str(DEMO_FAAS_PROFILE), "--slo-ms", "500", "--memory-mb", "1024", "--scheduler", "nosuch"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "sluice sim: scheduler 'nosuch'" in done.stderr
