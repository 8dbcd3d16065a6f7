"""scheduler.fill: how full the policy's batches are at a rate, what a request costs on the
function then, the pool model's load in part-full batches, and hybrid on a light model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batching import FixedPolicy
from scheduler import FaasOnly, FixedPool, HybridScheduler, PoolModel, batch_fill, function_price
from sim import ServiceProfile
from sim.scheduled import simulate_scheduled

from support import DEMO_FAAS_PROFILE, poisson

PROFILE = ServiceProfile.from_dict(json.loads(DEMO_FAAS_PROFILE.read_text()))  # pool 3 + 0.8 b ms, function 25 + 4 b ms at 2 GB


def faas_only(arrivals: np.ndarray, batch_size: int, wait_s: float):
    return simulate_scheduled(arrivals, FixedPolicy(batch_size, wait_s), PROFILE, FaasOnly(), slo_s=1.0, memory_mb=2048)


@pytest.mark.parametrize("rate", [5.0, 60.0, 150.0, 900.0])
def test_the_mean_fill_is_the_simulated_batches_mean_size(rate: float) -> None:
    # Batches of at most 64 closed 100 ms after their first request: 1.5 to 64 requests.
    result = faas_only(poisson(rate, 400.0 if rate < 100 else 120.0, seed=3), 64, 0.1)
    assert float(batch_fill(np.array([rate]), 64, 0.1)[0]) == pytest.approx(float(result.size.mean()), rel=0.03)


def test_the_fill_at_its_limits() -> None:
    rates = np.array([0.0, 1e-3, 30.0, 1e4, 1e6])
    assert batch_fill(rates, 1, 0.5).tolist() == [1.0] * 5  # no batching
    assert batch_fill(rates, 16, 0.0).tolist() == [1.0] * 5  # closed at once
    fill = batch_fill(rates, 16, 0.05)
    assert fill[0] == 1.0 and fill[-2:].tolist() == pytest.approx([16.0, 16.0])
    assert (np.diff(fill) >= 0).all() and fill[2] == pytest.approx(1 + 1.5, rel=0.01)  # far from 16: 1 + rate x T


def test_a_request_on_the_function_costs_its_share_of_a_part_full_batch() -> None:
    prices = PROFILE.prices(2048)

    def bill(b: int) -> float:
        return float(prices.faas_batch_cost(PROFILE.faas_service_s(b, 2048)))

    price = function_price(np.array([0.0, 150.0, 1e5]), 64, 0.1, bill)
    assert price[0] == pytest.approx(bill(1)) and price[2] == pytest.approx(bill(64) / 64)
    assert price[1] > 1.2 * bill(64) / 64  # 16 a batch, not 64: the invocation's base shared by fewer
    # The price times the requests is what the simulated function billed.
    arrivals = poisson(150.0, 300.0, seed=3)
    result = faas_only(arrivals, 64, 0.1)
    assert float(price[1]) * len(arrivals) == pytest.approx(result.cost_usd, rel=0.03)


def test_part_full_batches_load_an_instance_more() -> None:
    # A full batch of 64 takes 400 ms, a quarter of it fixed; at 40 requests/s and 50 ms
    # batches hold 3 and take 115 ms each: an instance is busy 1.5 s a second, not 0.3.
    def service(b: int) -> float:
        return 0.1 + 0.3 * b / 64

    full = PoolModel(service(64), 64, slack_s=1.0)
    part = PoolModel(service(64), 64, slack_s=1.0, wait_s=0.05, service=service)
    rate = np.array([40.0])
    assert full.load(rate)[0] == pytest.approx(40 / 64 * 0.4)
    fill = batch_fill(rate, 64, 0.05)[0]
    assert part.load(rate)[0] == pytest.approx(40 / fill * service(fill), rel=0.02)
    steady = np.full(600, 40.0)
    assert full.turned_away(2, steady)[1].mean() < 0.01  # full batches: one instance takes it all
    assert part.turned_away(2, steady)[1].mean() > 0.2  # part-full ones: it cannot
    assert part.turned_away(3, steady)[2].mean() < 0.05


def test_hybrid_keeps_an_instance_that_costs_less_than_the_functions_part_full_batches() -> None:
    # 150 requests/s, batches of at most 64 closed after 100 ms: about 16 a batch. Priced at
    # full batches the function cost $0.149 a million, under one instance's $0.157, and
    # hybrid sent everything there; at the batches it gets, $0.198 (issue 15's own scenario).
    arrivals = poisson(150.0, 900.0, seed=3)
    policy = FixedPolicy(64, 0.1)

    def run(scheduler):
        return simulate_scheduled(arrivals, policy, PROFILE, scheduler, slo_s=0.3, memory_mb=2048).summary()

    hybrid, one, faas = run(HybridScheduler()), run(FixedPool(1)), run(FaasOnly())
    assert one["cost_usd"] < 0.9 * faas["cost_usd"]
    assert hybrid["cost_usd"] <= 1.03 * one["cost_usd"]
    assert hybrid["instance_hours"] > 0.9 * 900 / 3600 and hybrid["slo_attainment"] >= 0.99

