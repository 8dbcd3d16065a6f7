"""`sluice sim --config`: a model simulated as `sluice serve --config` would serve it, by the same core."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from batching import FixedPolicy
from gateway.config import load as load_config
from gateway.simulated import pick_model, run, serving_of, simulate_config
from scheduler.types import billed_ms
from sim import ServiceProfile
from sim.cli import add_arguments
from sim.served import Serving, simulate_served

from support import REPO, poisson

PROFILE = ServiceProfile.from_dict({
    "name": "demo",
    "faas": {"memory_mb": {"1024": {"base_ms": 8, "per_item_ms": 0.5}}, "cold_start_ms": 300, "invoke_overhead_ms": 3,
             "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
    "iaas": {"base_ms": 2.0, "per_item_ms": 0.25, "max_batch_size": 64, "price_per_hour": 0.085, "startup_s": 1.5},
})  # fmt: skip


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(body)
    return path


def test_the_deploy_hybrid_config_spills_a_burst_to_the_function_and_grows_the_pool() -> None:
    config = load_config(str(REPO / "deploy" / "sluice-hybrid.toml"))
    model = pick_model(config, None)
    base = poisson(100.0, 60.0, seed=1)
    burst = poisson(4000.0, 15.0, seed=2, start=20.0)
    times = np.sort(np.concatenate([base, burst]))
    result = simulate_config(config, model, PROFILE, times)
    summary = result.summary()
    assert result.timed_out == result.failed == 0
    assert summary["completed"] + result.refused == len(times)  # refused: past max_pending, as live
    assert 0 < summary["faas_share"] < 1 and result.instances_started >= 1
    # One bill: the servers' seconds at the config's price (not the profile's), the rest the function's.
    servers_usd = result.instance_hours * model.instance_price_per_hour
    assert 0 < servers_usd < result.cost_usd
    assert result.instance_hours * 3600.0 >= 60.0  # one worker from the first arrival to the last answer


def test_admission_refuses_what_the_backlog_would_keep_past_the_slo(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[models.m]\npath = "/m.onnx"\nworkers = 1\nslo_ms = 40\n')
    config = load_config(str(path))
    model = pick_model(config, "m")
    # One worker serves at most 64 / 18 ms ~ 3500 req/s: offer three times that.
    times = poisson(10_000.0, 4.0)
    result = simulate_config(config, model, PROFILE, times)
    assert result.refused > 0.3 * len(times)
    served = result.latency_s[np.isfinite(result.latency_s)]
    assert len(served) + result.refused + result.timed_out + result.failed == len(times)
    assert np.percentile(served, 99) <= 0.040


def test_requests_past_their_deadline_get_504_and_are_not_answered_twice() -> None:
    """Admission refuses what it can predict will miss; a batch retried after its server
    failed cannot be predicted, and its requests may pass their deadline: 504."""
    times = poisson(1000.0, 5.0)
    result = simulate_served(times, FixedPolicy(8, 0.002), PROFILE,
                             Serving(servers=2, fail_probability=0.3, timeout_s=0.05, seed=1))  # fmt: skip
    assert result.timed_out > 0
    served = np.isfinite(result.latency_s)
    assert (result.latency_s[served] <= 0.05 + 1e-9).all()
    assert served.sum() + result.refused + result.timed_out + result.failed == len(times)


def test_a_failed_server_batch_is_retried_and_max_attempts_bounds_it() -> None:
    times = poisson(200.0, 5.0)
    retried = simulate_served(times, FixedPolicy(8, 0.005), PROFILE, Serving(servers=2, fail_probability=0.1, seed=3))
    assert retried.failed <= 2 and retried.timed_out == 0
    assert retried.batches > int(np.ceil(len(times) / 8)) + 10  # the failed sends are there too
    once = simulate_served(times, FixedPolicy(8, 0.005), PROFILE,
                           Serving(servers=2, fail_probability=0.1, seed=3, max_attempts=1))  # fmt: skip
    assert once.failed > 5 * max(1, retried.failed)


def test_priorities_go_first_in_the_simulated_backlog_too() -> None:
    times = poisson(6000.0, 2.0)  # more than one worker takes: a backlog forms
    priorities = ((np.arange(len(times)) // 8) % 10 == 0).astype(int)  # whole batches of high priority
    result = simulate_served(times, FixedPolicy(8, 0.002), PROFILE, Serving(servers=1, max_pending=1 << 30),
                             priorities=priorities)  # fmt: skip
    high, low = result.latency_s[priorities == 1], result.latency_s[priorities == 0]
    assert np.median(high) < 0.5 * np.median(low)


def test_keep_warm_on_a_scheduled_model_pings_in_simulation(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "sluice-hybrid.toml").read_text().replace('memory_mb = 1024', 'memory_mb = 1024\nkeep_warm = true\nkeep_alive_s = 10')
    config = load_config(str(config_file(tmp_path, text)))
    # A sparse base the function serves (a worker costs more than its bill there) between
    # bursts that start workers: the function goes idle in between, and is pinged.
    bursts = [poisson(4000.0, 3.0, seed=k, start=20.0 + 25.0 * k) for k in range(6)]
    times = np.sort(np.concatenate([poisson(5.0, 180.0), *bursts]))
    serving = serving_of(config, pick_model(config, None), PROFILE)
    assert serving.keep_warm is True and serving.keep_alive_s == 10
    result = simulate_config(config, pick_model(config, None), PROFILE, times)
    assert result.pings > 0


def test_the_cli_prints_refusals_faas_share_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"name": "demo", "iaas": {"base_ms": 2.0, "per_item_ms": 0.25, "startup_s": 1, "price_per_hour": 0.085},
                                   "faas": {"memory_mb": {"1024": {"base_ms": 8, "per_item_ms": 0.5}},
                                            "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002}}))  # fmt: skip
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(REPO / "deploy" / "sluice-hybrid.toml"), "--profile", str(profile),
                              "--arrivals", "poisson:rate=200", "--duration", "5", "--json"])  # fmt: skip
    assert run(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("refused", "faas_share", "cost_usd", "timed_out", "instance_hours"):
        assert key in out
    assert out["requests"] == out["completed"] + out["refused"] + out["timed_out"] + out["failed"]
    assert out["settings"]["model"] == "demo" and out["settings"]["scheduler"] == "hybrid"


def test_the_cli_says_which_model_when_the_config_has_several(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(tmp_path, '[models.a]\npath = "/a.onnx"\n[models.b]\npath = "/b.onnx"\n')
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--profile", str(REPO / "bench" / "profiles" / "demo_faas.json"),
                              "--arrivals", "poisson:rate=10", "--duration", "1"])  # fmt: skip
    assert run(args) == 2
    assert "--model" in capsys.readouterr().err


def test_billed_ms_rounds_float_noise_away_then_up() -> None:
    assert billed_ms(0.007) == 7.0 and billed_ms(0.0070001) == 8.0 and billed_ms(0.0) == 1.0
    assert billed_ms(np.array([0.007, 0.0000001])).tolist() == [7.0, 1.0]


def test_a_logged_day_replays_under_the_config_its_prior_the_days_before_it(tmp_path: Path, capsys, caplog) -> None:
    """`sluice sim --config --trace <traffic_log>/demo/<day>.csv`: the day is the trace, and the
    model's log up to its first arrival is the prior (yesterday from the same time of day), as
    the gateway would have read it had it started then; the first day logged has none before it."""
    from datetime import datetime, timedelta, timezone

    from sim.counts import HEADER, day_file, row

    logs = tmp_path / "traffic"
    (logs / "demo").mkdir(parents=True)
    for day in (6, 7):
        first = datetime(2026, 12, day, 10, tzinfo=timezone.utc)
        rows = "".join(row(first + timedelta(seconds=t), 40) + "\n" for t in range(120))
        day_file(logs / "demo", first.date()).write_text(HEADER + "\n" + rows)
    deploy = (REPO / "deploy" / "sluice-hybrid.toml").read_text()
    config = config_file(tmp_path, deploy.replace("[models.demo.faas]", f'traffic_log = "{logs}"\n[models.demo.faas]'))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for day in ("2026-12-07", "2026-12-06"):
        args = parser.parse_args(["--config", str(config), "--profile", str(REPO / "bench" / "profiles" / "demo_faas.json"),
                                  "--trace", str(logs / "demo" / f"{day}.csv"), "--json"])  # fmt: skip
        with caplog.at_level("INFO", logger="sluice.prior"):
            assert run(args) == 0
        assert json.loads(capsys.readouterr().out)["requests"] == 40 * 120
    read = [r for r in caplog.records if r.getMessage() == "prior trace read"]
    assert len(read) == 1 and read[0].path == str(logs / "demo") and read[0].from_second == 0.0  # the 6th, from 10:00
    assert any("holds no second before the start" in r.getMessage() for r in caplog.records)  # the 6th: nothing before
