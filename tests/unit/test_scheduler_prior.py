"""scheduler.prior: recorded traffic as hybrid's first pool and as weight on its fixed count,
read from the run's time of day when it carries date-times, set aside when the traffic does not
agree with it."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from batching import FixedPolicy
from scheduler import ArrivalView, FaasView, FixedPool, HybridScheduler, PoolModel, Prices, Prior, View, same_time_of_day
from scheduler.lookback import priced
from sim import ServiceProfile, cli
from sim.scheduled import simulate_scheduled
from sim.sources import read_prior, read_trace

from support import poisson

# A model heavy enough that 200 requests/s want a few instances: s(b) = 10 + 10 b ms on an
# instance (8 in 90 ms), 20 + 20 b ms on a 1 GB function; an instance 5x cheaper per request.
PROFILE_DICT = {
    "name": "prior-test",
    "faas": {"memory_mb": {"1024": {"base_ms": 20.0, "per_item_ms": 20.0}}, "cold_start_ms": 500.0,
             "invoke_overhead_ms": 10.0, "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
    "iaas": {"base_ms": 10.0, "per_item_ms": 10.0, "max_batch_size": 8, "price_per_hour": 0.10, "startup_s": 60.0},
}  # fmt: skip
PROFILE = ServiceProfile.from_dict(PROFILE_DICT)
POLICY = FixedPolicy(8, 0.05)


def simulate(arrivals: np.ndarray, scheduler) -> dict:
    return simulate_scheduled(arrivals, POLICY, PROFILE, scheduler, slo_s=0.5, memory_mb=1024).summary()


def test_a_prior_is_arrivals_per_second_and_agrees_with_rates_inside_its_minutes() -> None:
    for bad in ([], [1.0, -1.0]):
        with pytest.raises(ValueError):
            Prior(bad)
    with pytest.raises(ValueError):
        Prior([1.0], weight_s=-1.0)
    with pytest.raises(ValueError):
        Prior.from_times([])
    assert Prior.from_times([5.1, 5.5, 7.2, 7.9, 8.0]).counts.tolist() == [2.0, 0.0, 2.0, 1.0]
    prior = Prior(np.repeat([10.0, 30.0, 20.0], 60))  # three minutes at 10, 30 and 20 requests/s
    assert prior.agrees(10.0, 3600) and prior.agrees(25.0, 3600) and prior.agrees(30.0, 3600)
    assert not prior.agrees(9.0, 3600) and not prior.agrees(31.0, 3600)
    assert prior.agrees(9.0, 60) and prior.agrees(31.0, 60)  # a minute's mean is that noisy
    assert not prior.agrees(40.0, 60) and not prior.agrees(120.0, 60)


def test_the_record_is_read_in_step_with_the_run_and_priced_once_per_model() -> None:
    counts = np.random.default_rng(1).poisson(50.0, 600).astype(float)
    prior = Prior(counts, weight_s=200.0)
    model, other = PoolModel(0.05, 4, 0.2), PoolModel(0.08, 4, 0.2)
    whole: list[int] = []  # the whole record priced: one call of the price over all its seconds

    def flat(rates: np.ndarray) -> np.ndarray:
        whole.extend([len(rates)] if len(rates) == len(counts) else [])
        return np.full(len(rates), 1e-6)

    costs, seconds = prior.fixed_costs(model, 6, 1e-4, flat, elapsed_s=100.0)
    assert seconds == 200  # the next `weight_s` seconds of the record, 100 s into the run
    ahead = priced(model.turned_away(6, counts)[:, 100:300], counts[100:300], 1e-4, flat(model.smoothed(counts))[100:300])
    assert np.allclose(costs, ahead)
    assert prior.fixed_costs(model, 6, 1e-4, flat, elapsed_s=500.0)[1] == 100  # the record ends 100 s later
    assert prior.fixed_costs(model, 6, 1e-4, flat, elapsed_s=650.0)[1] == 0  # past it
    assert len(whole) == 2  # once for the pricing, once above; not again at 500 or 650 s
    prior.fixed_costs(other, 6, 1e-4, flat)  # another model: priced again (3)
    prior.fixed_costs(model, 6, 1e-4, lambda rates: np.full(len(rates), 2e-6))  # other prices (not counted)
    assert prior.fixed_costs(model, 6, 1e-4, flat)[1] == 200 and len(whole) == 4  # and back: priced again (4)


def test_the_traffic_agrees_with_the_record_of_the_same_time() -> None:
    prior = Prior(np.repeat([10.0, 40.0], 600), weight_s=300.0)  # 10 minutes at 10 requests/s, then 10 at 40
    assert prior.agrees(10.0, 60, elapsed_s=60.0) and not prior.agrees(40.0, 60, elapsed_s=60.0)
    assert prior.agrees(40.0, 60, elapsed_s=700.0) and not prior.agrees(10.0, 60, elapsed_s=700.0)
    assert prior.agrees(40.0, 60, elapsed_s=400.0)  # the rise is in the record's next five minutes
    assert not prior.agrees(40.0, 60, elapsed_s=1300.0)  # past the record's end


def test_the_first_pool_is_the_best_fixed_pool_over_the_record_and_today_costs_what_it_does() -> None:
    record, today = poisson(200.0, 300.0, seed=1), poisson(200.0, 300.0, seed=2)  # two draws of one law
    best = min(range(1, 4), key=lambda n: simulate(record, FixedPool(n))["cost_usd"])
    prior = Prior.from_times(record)
    first_seconds = simulate(today[today < 20.0], HybridScheduler(prior=prior))
    assert first_seconds["instances_started"] == best  # provisioned before any traffic; nothing starts in 20 s
    told, untold, fixed = (simulate(today, s) for s in (HybridScheduler(prior=prior), HybridScheduler(), FixedPool(best)))
    assert told["slo_attainment"] >= 0.99 and told["completed"] == told["requests"]
    assert told["cost_usd"] <= 1.03 * fixed["cost_usd"]
    assert told["cost_usd"] < untold["cost_usd"]  # the planner alone learns the count from the run, and pays for it


def test_a_prior_the_traffic_does_not_agree_with_is_set_aside() -> None:
    today = poisson(200.0, 300.0, seed=2)
    wrong = Prior.from_times(poisson(800.0, 120.0, seed=3))  # recorded at 4x the rate
    told, untold = simulate(today, HybridScheduler(prior=wrong)), simulate(today, HybridScheduler())
    for key in ("cost_usd", "instance_hours", "instances_started", "faas_share", "slo_attainment"):
        assert told[key] == untold[key], key


def test_live_the_first_plan_reads_the_seconds_seen_not_the_view_s_30_s_rate() -> None:
    # Served, requests may come a few seconds before the first plan; the view's rate (the last
    # 30 s) then reads low: 5 s at 200 requests/s shows as 33, outside the record's range.
    prior = Prior.from_times(poisson(200.0, 300.0, seed=1))

    def first_plan(scheduler: HybridScheduler, per_second: float | None):
        for t in range(5 if per_second is not None else 0):
            scheduler.observe(int(per_second), float(t))
        rate = 5 * per_second / 30.0 if per_second is not None else 0.0
        view = View([], FaasView(0, None, 1, 0.01, 0.5), ArrivalView(rate, lambda _h: rate), Prices(),
                    lambda b: 0.01 + 0.01 * b, lambda b: 0.02 + 0.02 * b, 8, 0.5, 60.0, batch_wait_s=0.05)  # fmt: skip
        return scheduler.plan(view, 5.0 if per_second is not None else 0.0)

    provisioned = first_plan(HybridScheduler(prior=prior), None).start  # before any traffic: the record's count
    assert provisioned >= 1
    assert first_plan(HybridScheduler(prior=prior), 200.0).start == provisioned
    told, untold = first_plan(HybridScheduler(prior=prior), 800.0), first_plan(HybridScheduler(), 800.0)
    assert told.start == untold.start  # 4x the record's rate: set aside


def test_sluice_sim_compare_gives_hybrid_the_recorded_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record, today = tmp_path / "record.txt", tmp_path / "today.txt"
    record.write_text("\n".join(f"{t:.6f}" for t in poisson(200.0, 300.0, seed=1)))
    today.write_text("\n".join(f"{t:.6f}" for t in poisson(200.0, 300.0, seed=2)))
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE_DICT))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--trace", str(today), "--profile", str(tmp_path / "profile.json"), "--slo-ms", "500", "--batch-size", "8",
            "--timeout-ms", "50", "--memory-mb", "1024", "--json"]  # fmt: skip
    assert cli.run(parser.parse_args([*argv, "--compare", "hybrid,fixed:2", "--prior-trace", str(record)])) == 0
    compared = json.loads(capsys.readouterr().out)
    arrivals = read_trace(today)
    told = simulate(arrivals, HybridScheduler(prior=Prior.from_times(read_trace(record))))
    untold = simulate(arrivals, HybridScheduler())
    assert compared["hybrid"]["cost_usd"] == pytest.approx(told["cost_usd"], rel=1e-12)
    assert compared["hybrid"]["cost_usd"] != pytest.approx(untold["cost_usd"], rel=1e-3)
    assert compared["fixed:2"]["instances_started"] == 2  # only hybrid is given the record
    for extra, message in ((["--compare", "mark,fixed:2", "--prior-trace", str(record)], "--prior-trace is for the hybrid scheduler"),
                           (["--scheduler", "hybrid", "--prior-trace", str(tmp_path / "missing.csv")], "No such file"),
                           (["--scheduler", "hybrid", "--prior-trace", str(record), "--prior-weight-s", "-1"], "--prior-weight-s must be 0 or more")):  # fmt: skip
        assert cli.run(parser.parse_args([*argv, *extra])) == 2
        assert message in capsys.readouterr().err


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=timezone.utc)


def test_a_record_is_read_from_the_time_of_day_the_run_starts() -> None:
    assert same_time_of_day(at(6, 14), at(7, 14, 30), 3600.0) == 1800.0  # yesterday 14:00-15:00; today 14:30
    assert same_time_of_day(at(6, 14), at(7, 15, 30), 3600.0) is None  # after its hours
    assert same_time_of_day(at(6, 14), at(7, 13, 50), 3600.0) is None  # before them
    assert same_time_of_day(at(4, 14), at(7, 14, 30), 3 * 86400.0) == 2 * 86400.0 + 1800.0  # the last day that holds it
    assert same_time_of_day(at(4, 14), at(7, 14, 30), 2 * 86400.0 + 1800.0) == 86400.0 + 1800.0
    assert same_time_of_day(at(6, 22), at(7, 1), 6 * 3600.0) == 3 * 3600.0  # across midnight
    prior = Prior(np.repeat([40.0, 10.0], 600), weight_s=300.0, start_s=600.0)  # the run starts where 40 gives way to 10
    assert prior.ahead(0.0) == (600, 900) and prior.ahead(450.0) == (1050, 1200) and prior.ahead(700.0) == (1200, 1200)
    assert prior.agrees(10.0, 60, elapsed_s=60.0) and not prior.agrees(40.0, 60, elapsed_s=60.0)
    for bad in (-1.0, 1200.0):
        with pytest.raises(ValueError):
            Prior([1.0] * 1200, start_s=bad)


def test_a_stamped_record_is_aligned_by_time_of_day_and_set_aside_outside_its_hours(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stamped, plain = tmp_path / "yesterday.csv", tmp_path / "seconds.txt"
    times = np.arange(0.0, 7200.0, 0.5)  # 14:00 to 16:00, 2 requests/s
    stamped.write_text("".join(f"{at(6, 14) + timedelta(seconds=t):%Y-%m-%d %H:%M:%S.%f}\n" for t in times))
    plain.write_text("".join(f"{t}\n" for t in times))
    assert read_prior(stamped, 600.0, at(7, 15, 10)).start_s == 4200.0
    assert read_prior(stamped, 600.0, None).start_s == 0.0  # the run's time unknown: from the record's first second
    assert read_prior(plain, 600.0, at(7, 15, 10)).start_s == 0.0  # a record of plain seconds: the same
    with caplog.at_level(logging.WARNING, logger="sluice.prior"):
        assert read_prior(stamped, 600.0, datetime(2026, 12, 7, 18, tzinfo=timezone(timedelta(hours=1)))) is None  # 17:00 UTC
    assert "holds 14:00:00-16:00:00 UTC, not 17:00:00 UTC" in caplog.text
    assert read_prior(stamped, 600.0, datetime(2026, 12, 7, 16, 10, tzinfo=timezone(timedelta(hours=1)))).start_s == 4200.0


def test_sluice_sim_reads_a_stamped_record_from_the_trace_s_time_of_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Yesterday from 13:55: five minutes at 600 requests/s, then five at 200; today from 14:00 at
    # 200. Each plan weighs the record's next 300 s: read from 14:00, they agree with today.
    recorded = np.concatenate([poisson(600.0, 300.0, seed=1), 300.0 + poisson(200.0, 300.0, seed=3)])
    arrivals = poisson(200.0, 300.0, seed=2)
    record, today = tmp_path / "yesterday.csv", tmp_path / "today.csv"
    for path, times, first in ((record, recorded, at(6, 13, 55)), (today, arrivals, at(7, 14))):
        path.write_text("".join(f"{first + timedelta(seconds=float(t)):%Y-%m-%d %H:%M:%S.%f}\n" for t in times))
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE_DICT))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--trace", str(today), "--profile", str(tmp_path / "profile.json"), "--slo-ms", "500", "--batch-size", "8",
            "--timeout-ms", "50", "--memory-mb", "1024", "--json", "--scheduler", "hybrid", "--prior-trace", str(record),
            "--prior-weight-s", "300"]  # fmt: skip
    assert cli.run(parser.parse_args(argv)) == 0
    served = json.loads(capsys.readouterr().out)
    today_times, record_times = read_trace(today), read_trace(record)
    aligned = simulate(today_times, HybridScheduler(prior=Prior.from_times(record_times, 300.0, start_s=300.0)))
    from_first = simulate(today_times, HybridScheduler(prior=Prior.from_times(record_times, 300.0)))
    untold = simulate(today_times, HybridScheduler())
    assert served["cost_usd"] == pytest.approx(aligned["cost_usd"], rel=1e-12)
    assert from_first["cost_usd"] == pytest.approx(untold["cost_usd"], rel=1e-12)  # 600 against 200: set aside
    assert aligned["cost_usd"] < 0.9 * untold["cost_usd"]


def periodic(periods: int, period_s: float = 600.0) -> np.ndarray:
    """A cycle of `period_s`: 300 s at 50 requests/s, 200 s at 400, 100 s at 50."""
    parts = []
    for k in range(periods):
        begins = k * period_s
        parts += [poisson(50.0, 300.0, seed=20 + k, start=begins), poisson(400.0, 200.0, seed=10 + k, start=begins + 300.0),
                  poisson(50.0, 100.0, seed=30 + k, start=begins + 500.0)]  # fmt: skip
    return np.sort(np.concatenate(parts))


def test_its_own_traffic_becomes_the_record_once_it_has_seen_that_much() -> None:
    """`own_record_s`: with no record, none until that long has been seen, then the last
    `own_record_s` seconds, read from their first (renewed each time it runs out); the planner
    then plans on it (other counts than without)."""
    traffic = periodic(2)
    young = HybridScheduler(own_record_s=600.0)
    simulate(traffic[traffic < 590.0], young)
    assert young.prior is None
    own, untold = HybridScheduler(own_record_s=600.0), HybridScheduler()
    told, alone = simulate(traffic, own), simulate(traffic, untold)
    assert own.prior is not None and len(own.prior.counts) == 600 and own.prior.start_s == 0.0
    assert own.prior.counts.mean() == pytest.approx((50 * 400 + 400 * 200) / 600, rel=0.05)  # a whole cycle
    assert untold.prior is None and told["instance_hours"] != alone["instance_hours"]
    assert told["completed"] == told["requests"] and told["slo_attainment"] >= 0.99


def test_a_given_record_is_kept_while_it_has_seconds_ahead_then_its_own_traffic_follows() -> None:
    traffic = periodic(2)
    given = Prior(np.full(900, 166.0))
    scheduler = HybridScheduler(prior=given, own_record_s=600.0)
    simulate(traffic[traffic < 880.0], scheduler)
    assert scheduler.prior is given  # 600 s seen, but the record still has seconds ahead
    simulate(traffic, scheduler := HybridScheduler(prior=given, own_record_s=600.0))
    assert scheduler.prior is not given and len(scheduler.prior.counts) == 600
