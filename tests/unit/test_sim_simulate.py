"""simulate(): closed-form checks, cold starts, concurrency, pools, and fast path == event path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import BatchLimits, FixedPolicy, NoBatchingPolicy
from batching.formation import SIZE, TIMEOUT
from sim import ServiceProfile, SimResult, read_trace, simulate
from support import TRACES, make_profile, needs_traces

PATHS = ("fast", "event")


def poisson(rate: float, n: int, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", [NoBatchingPolicy(), FixedPolicy(1, 0.05)], ids=["none", "B=1"])
def test_unbatched_latency_is_overhead_plus_one_item_service(path: str, policy: FixedPolicy) -> None:
    profile = make_profile(overhead_ms=12.0, cold_ms=0.0)
    arrivals = poisson(300.0, 3000)
    result = simulate(arrivals, policy, profile, path=path)
    expected = 0.012 + profile.faas_service_s(1, 1024)
    assert result.latency_s == pytest.approx(np.full(3000, expected), rel=1e-12, abs=0)
    assert result.batches == 3000 and (result.size == 1).all() and (result.reason == SIZE).all()
    assert result.path == path


@pytest.mark.parametrize("path", PATHS)
def test_equally_spaced_arrivals_fill_batches_by_size(path: str) -> None:
    # One arrival per ms, B=10, T=1 s: batch k closes at its tenth arrival, so the j-th
    # request of a batch waits (9 - j) ms; the last 5 requests wait for the 1 s timer.
    profile = make_profile(overhead_ms=5.0)
    arrivals = np.arange(1005) * 0.001
    result = simulate(arrivals, FixedPolicy(10, 1.0), profile, path=path)
    assert result.size.tolist() == [10] * 100 + [5]
    assert result.reasons() == ["size"] * 100 + ["timeout"]
    waits = np.concatenate([np.tile((9 - np.arange(10)) * 0.001, 100), 1.0 - np.arange(5) * 0.001])
    service = np.where(np.arange(1005) < 1000, profile.faas_service_s(10, 1024), profile.faas_service_s(5, 1024))
    assert result.latency_s == pytest.approx(waits + 0.005 + service, abs=1e-9)


@pytest.mark.parametrize("path", PATHS)
def test_equally_spaced_arrivals_close_batches_by_timeout(path: str) -> None:
    # Gaps of 1/128 s and T = 20 ms: each batch holds 3 requests (3/128 s > 20 ms) and
    # closes 20 ms after its first; the others wait 20 ms less 1/128 s per place.
    profile = make_profile()
    arrivals = np.arange(300) / 128
    result = simulate(arrivals, FixedPolicy(64, 0.020), profile, path=path)
    assert (result.size == 3).all() and (result.reason == TIMEOUT).all()
    assert result.close_time == pytest.approx(np.arange(100) * 3 / 128 + 0.020, abs=1e-12)
    waits = np.tile(0.020 - np.arange(3) / 128, 100)
    assert result.latency_s == pytest.approx(waits + profile.faas_service_s(3, 1024), abs=1e-12)


# --------------------------------------------------------------------------- FaaS environments


@pytest.mark.parametrize("path", PATHS)
def test_cold_starts_follow_keep_alive_expiry(path: str) -> None:
    profile = make_profile(base_ms=0.0, per_item_ms=250.0, cold_ms=500.0)  # warm 0.25 s, cold 0.75 s
    arrivals = np.array([0.0, 1.0, 1.125, 5.25, 9.5, 14.0])
    # A: cold at 0, free at 0.75; warm at 1.0 (free 1.25). 1.125: A busy -> B, cold, free 1.875.
    # 5.25: A idle exactly 4 s -> reclaimed; B idle 3.375 s -> warm (free 5.5).
    # 9.5: B idle exactly 4 s -> reclaimed, cold (C, free 10.25). 14.0: C idle 3.75 s -> warm.
    result = simulate(arrivals, NoBatchingPolicy(), profile, keep_alive_s=4.0, path=path)
    assert result.cold.tolist() == [True, False, True, False, True, False]
    assert result.latency_s.tolist() == [0.75, 0.25, 0.75, 0.25, 0.75, 0.25]
    assert result.summary()["cold_starts"] == 3
    # With the default 10-minute keep-alive, 9.5 reuses A (idle longest) and nothing else starts cold.
    long = simulate(arrivals, NoBatchingPolicy(), profile, path=path)
    assert long.cold.tolist() == [True, False, True, False, False, False]


def test_cost_bills_service_time_only_rounded_up_per_batch() -> None:
    profile = make_profile(base_ms=0.0, per_item_ms=250.0, cold_ms=500.0, overhead_ms=20.0)
    arrivals = np.array([0.0, 0.5, 3.0, 3.0])
    result = simulate(arrivals, FixedPolicy(2, 0.1), profile)
    assert result.size.tolist() == [1, 1, 2]
    expected = 2 * profile.faas_batch_cost(0.25, 1024) + profile.faas_batch_cost(0.5, 1024)
    assert result.cost_usd == pytest.approx(expected, rel=1e-12)
    assert result.summary()["cost_per_million_usd"] == pytest.approx(expected / 4 * 1e6, rel=1e-12)


def test_concurrency_limit_queues_batches_fifo() -> None:
    profile = make_profile(base_ms=0.0, per_item_ms=250.0, cold_ms=500.0, overhead_ms=10.0)
    arrivals = np.zeros(3)
    one = simulate(arrivals, NoBatchingPolicy(), profile, concurrency_limit=1)
    assert one.path == "fast"
    assert_same(one, simulate(arrivals, NoBatchingPolicy(), profile, concurrency_limit=1, path="event"))
    assert one.start_time == pytest.approx([0.0, 0.76, 1.02])
    assert one.cold.tolist() == [True, False, False]
    assert one.latency_s == pytest.approx([0.76, 1.02, 1.28])
    two = simulate(arrivals, NoBatchingPolicy(), profile, concurrency_limit=2)
    assert two.start_time == pytest.approx([0.0, 0.0, 0.76])
    assert two.cold.tolist() == [True, True, False]
    unlimited = simulate(arrivals, NoBatchingPolicy(), profile)
    assert unlimited.cold.all() and unlimited.latency_s == pytest.approx([0.76] * 3)


# --------------------------------------------------------------------------- pool


def test_pool_batches_wait_fifo_for_the_first_free_instance() -> None:
    profile = make_profile(base_ms=0.0, per_item_ms=250.0, cold_ms=500.0, overhead_ms=10.0)
    arrivals = np.array([0.0, 0.0, 0.0, 0.0, 0.1])
    result = simulate(arrivals, NoBatchingPolicy(), profile, target="pool", instances=2)
    assert result.start_time == pytest.approx([0.0, 0.0, 0.25, 0.25, 0.5])
    assert result.latency_s == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.65])  # no overhead, no cold starts
    assert not result.cold.any()
    assert result.cost_usd == pytest.approx(2 * 0.75 * 0.36 / 3600)
    batched = simulate(np.zeros(4), FixedPolicy(2, 0.05), profile, target="pool", instances=1)
    assert batched.size.tolist() == [2, 2] and batched.latency_s == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_pool_rejects_batches_larger_than_it_takes() -> None:
    with pytest.raises(ValueError, match="exceeds the pool's max_batch_size 16"):
        simulate(np.zeros(4), FixedPolicy(32, 0.01), make_profile(), target="pool")


# --------------------------------------------------------------------------- fast path == event path


def assert_same(fast: SimResult, event: SimResult) -> None:
    assert (fast.path, event.path) == ("fast", "event")
    for name in ("latency_s", "batch", "close_time", "start_time", "size", "reason", "cold", "service_s"):
        assert np.array_equal(getattr(fast, name), getattr(event, name)), name
    # The same bills, summed in another order (numpy's pairwise sum against the ledger's running one).
    assert fast.cost_usd == pytest.approx(event.cost_usd, rel=1e-12, abs=0.0)


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    gaps = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.02), st.floats(0.0, 3.0)), min_size=1, max_size=150))
    timeout = draw(st.one_of(st.just(0.0), st.just(float("inf")), st.floats(0.0, 0.2)))
    return {
        "arrivals": np.cumsum(gaps),
        "policy": FixedPolicy(draw(st.integers(1, 16)), timeout),
        "keep_alive_s": draw(st.sampled_from([0.0, 0.5, 2.0, 600.0])),
        "jitter": draw(st.sampled_from([0.0, 0.3])),
        "seed": draw(st.integers(0, 3)),
        "cold": draw(st.sampled_from([0.0, 300.0])),
        "table": draw(st.booleans()),
        "concurrency_limit": draw(st.sampled_from([None, None, 1, 2, 3])),
    }


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_fast_path_equals_event_path_on_random_inputs(w: dict[str, Any]) -> None:
    table = {"1": 4.1, "2": 4.9, "4": 6.5, "8": 9.7} if w["table"] else None
    profile = make_profile(overhead_ms=7.0, cold_ms=w["cold"], table=table)
    kwargs = {k: w[k] for k in ("keep_alive_s", "jitter", "seed", "concurrency_limit")}
    fast = simulate(w["arrivals"], w["policy"], profile, path="fast", **kwargs)
    event = simulate(w["arrivals"], w["policy"], profile, path="event", **kwargs)
    assert_same(fast, event)


@needs_traces
@pytest.mark.parametrize(("batch_size", "timeout"), [(32, 0.010), (8, 0.050), (1, 0.0)])
def test_fast_path_equals_event_path_on_the_bursty_azure_trace(batch_size: int, timeout: float) -> None:
    arrivals = read_trace(TRACES / "azure_llm_2023_code.csv")
    profile = make_profile(overhead_ms=15.0, cold_ms=900.0)
    args = (arrivals, FixedPolicy(batch_size, timeout), profile)
    fast = simulate(*args, keep_alive_s=60.0, jitter=0.2, seed=7)
    assert_same(fast, simulate(*args, keep_alive_s=60.0, jitter=0.2, seed=7, path="event"))
    assert fast.summary()["cold_starts"] > 1


# --------------------------------------------------------------------------- policies, jitter, summary


class StepPolicy(FixedPolicy):
    """B = 1 before t = 10 s, B = 4 from then on: only the event path can run it."""

    name = "step"

    def limits(self, now: float) -> BatchLimits:
        return BatchLimits(1 if now < 10.0 else 4, 1.0)


def test_a_policy_that_changes_its_limits_runs_on_the_event_path() -> None:
    arrivals = np.concatenate([np.arange(5) * 0.01, 20.0 + np.arange(8) * 0.01])
    result = simulate(arrivals, StepPolicy(4, 1.0), make_profile())
    assert result.path == "event"
    assert result.size.tolist() == [1, 1, 1, 1, 1, 4, 4]
    with pytest.raises(ValueError, match="fast path needs"):
        simulate(arrivals, StepPolicy(4, 1.0), make_profile(), path="fast")
    with pytest.raises(ValueError, match="fast path needs"):
        simulate(arrivals, NoBatchingPolicy(), make_profile(), target="pool", path="fast")


def test_jitter_is_mean_one_lognormal_and_seeded() -> None:
    profile = make_profile()
    arrivals = np.arange(20_000) * 0.01
    a = simulate(arrivals, NoBatchingPolicy(), profile, jitter=0.5, seed=1)
    factors = a.service_s / profile.faas_service_s(1, 1024)
    assert factors.mean() == pytest.approx(1.0, abs=0.02)
    assert np.log(factors).std() == pytest.approx(0.5, abs=0.02)
    assert np.array_equal(a.latency_s, simulate(arrivals, NoBatchingPolicy(), profile, jitter=0.5, seed=1).latency_s)
    assert not np.array_equal(a.latency_s, simulate(arrivals, NoBatchingPolicy(), profile, jitter=0.5, seed=2).latency_s)


def test_summary_keys_and_values() -> None:
    profile = make_profile(cold_ms=900.0)
    arrivals = poisson(200.0, 4000, seed=3)
    result = simulate(arrivals, FixedPolicy(16, 0.02), profile, slo_s=0.1)
    summary = result.summary()
    expected_keys = {"requests", "completed", "latency_ms", "slo_attainment", "cost_usd", "cost_per_million_usd",
                     "batches", "mean_batch_size", "cold_starts", "wall_s"}  # fmt: skip
    assert expected_keys <= set(summary)
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99", "max", "mean"}
    assert summary["requests"] == summary["completed"] == 4000
    assert summary["batches"] == result.batches and summary["mean_batch_size"] == pytest.approx(4000 / result.batches)
    assert summary["slo_attainment"] == pytest.approx(np.mean(result.latency_s <= 0.1))
    assert summary["latency_ms"]["p99"] == pytest.approx(np.percentile(result.latency_s, 99) * 1000)
    assert summary["latency_ms"]["max"] >= 900.0  # the first batch starts cold
    assert summary["cold_starts"] == int(result.cold.sum()) >= 1
    assert result.summary(slo_s=10.0)["slo_attainment"] == 1.0
    assert simulate(arrivals, FixedPolicy(16, 0.02), profile).summary()["slo_attainment"] is None


def test_no_arrivals_give_an_empty_result() -> None:
    for path in PATHS:
        summary = simulate(np.array([]), FixedPolicy(4, 0.01), make_profile(), path=path).summary(0.1)
        assert summary["requests"] == 0 and summary["batches"] == 0 and summary["cost_usd"] == 0.0
        assert summary["latency_ms"]["p99"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "gpu"}, "target must be one of"),
        ({"memory_mb": 512}, "no FaaS memory size 512"),
        ({"target": "pool", "instances": 0}, "at least one instance"),
        ({"concurrency_limit": 0}, "concurrency limit must be at least 1"),
        ({"keep_alive_s": -1.0}, "keep-alive must be non-negative"),
        ({"jitter": -0.1}, "jitter must be non-negative"),
        ({"path": "slow"}, "path must be one of"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(np.arange(3.0), FixedPolicy(2, 0.01), make_profile(), **kwargs)


def test_unsorted_arrivals_and_ambiguous_memory_are_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        simulate(np.array([1.0, 0.0]), NoBatchingPolicy(), make_profile())
    two_sizes = ServiceProfile.from_dict({"faas": {"memory_mb": {"512": {"base_ms": 1, "per_item_ms": 1},
        "1024": {"base_ms": 1, "per_item_ms": 1}}, "price_per_gb_s": 1e-5}})  # fmt: skip
    with pytest.raises(ValueError, match=r"memory sizes \[512, 1024\]; choose one"):
        simulate(np.arange(3.0), NoBatchingPolicy(), two_sizes)
