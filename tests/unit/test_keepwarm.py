"""Keeping FaaS environments warm: the idle-time histogram, the policy's decisions, and the
cold starts it saves in simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import FixedPolicy
from scheduler.keepwarm import IdleTimes, KeepWarmPolicy
from sim import ServiceProfile, read_trace, simulate

from support import DEMO_FAAS_PROFILE, TRACES, needs_traces

PROFILE = ServiceProfile.from_dict(json.loads(DEMO_FAAS_PROFILE.read_text()))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1000), min_size=1, max_size=200), st.floats(0, 1000), st.floats(0, 500), st.floats(0.01, 1))
def test_idle_time_counts_match_a_plain_count(values, low, width, p) -> None:
    idle = IdleTimes(limit=150)
    for v in values:
        idle.record(v)
    kept = np.array(values[-150:])
    assert len(idle) == len(kept)
    assert idle.above(low) == int(np.sum(kept > low))
    assert idle.between(low, low + width) == int(np.sum((kept > low) & (kept <= low + width)))
    assert idle.percentile(p) == float(np.quantile(kept, p, method="inverted_cdf"))


def drive(policy: KeepWarmPolicy, gaps: list[float], service_s: float = 0.05) -> list[tuple[float, int]]:
    """Batches one after another with these idle gaps between them; the pings sent, with times.
    The next batch would start at `policy.next_arrival`."""
    now, sent = 0.0, []
    for gap in gaps:
        policy.started(now)
        now += service_s
        policy.ended(now)
        arrival = now + gap
        while (due := policy.next_wakeup()) is not None and due < arrival:
            count = policy.due(due)
            if count:
                sent.append((due, count))
            elif policy.next_wakeup() == due:
                break
        now = arrival
    policy.next_arrival = now  # type: ignore[attr-defined]
    return sent


def test_gaps_the_provider_already_covers_need_no_pings() -> None:
    policy = KeepWarmPolicy(keep_alive_s=60.0, cold_start_s=0.9)
    assert drive(policy, [5.0, 20.0, 40.0] * 20) == []


def test_gaps_just_past_the_keep_alive_are_bridged_with_pings() -> None:
    policy = KeepWarmPolicy(keep_alive_s=60.0, cold_start_s=0.9)
    sent = drive(policy, [10.0] * 20 + [75.0] * 10)
    assert len(sent) >= 9, "each 75 s gap needs one ping before the 60 s keep-alive runs out"
    idle_start = 0.05 + 10.0
    assert all(count == 1 for _, count in sent)
    assert policy.in_flight == 0 and policy.pings == sum(count for _, count in sent)
    assert sent[0][0] > idle_start + 20 * 10.0 - 1  # only once the histogram has seen enough gaps


def test_long_regular_gaps_are_prewarmed_a_cold_start_ahead() -> None:
    policy = KeepWarmPolicy(keep_alive_s=60.0, cold_start_s=0.9)
    drive(policy, [300.0] * 15)
    policy.started(10_000.0)
    policy.ended(10_000.1)
    assert policy.next_wakeup() == pytest.approx(10_000.1 + 300.0 - 0.9 - 6.0)  # a cold start and the margin ahead


def test_no_ping_while_a_batch_runs_nor_past_the_longest_gap_seen() -> None:
    policy = KeepWarmPolicy(keep_alive_s=10.0, cold_start_s=0.5)
    drive(policy, [10.2] * 20)  # just past the keep-alive: keep warm (not worth letting go)
    start = policy.next_arrival  # type: ignore[attr-defined]
    policy.started(start)
    assert policy.due(start + 9.0) == 0 and policy.next_wakeup() is None
    policy.ended(start + 0.1)
    assert policy.next_wakeup() == pytest.approx(start + 0.1 + 9.0)
    assert policy.due(start + 0.1 + 9.0) == 1  # 9 s idle: the 10.2 s gaps say the next batch is near
    assert policy.due(start + 0.1 + 18.0) == 0  # past every gap seen
    assert policy.next_wakeup() is None


@needs_traces
def test_keep_warm_saves_most_cold_starts_on_the_bursty_code_trace_for_a_sliver_of_cost() -> None:
    times = read_trace(TRACES / "azure_llm_2023_code.csv")
    runs = {}
    for keep_warm in (None, KeepWarmPolicy(60.0, PROFILE.faas.cold_start_ms / 1e3)):
        result = simulate(times, FixedPolicy(8, 0.1), PROFILE, memory_mb=1024, keep_alive_s=60.0, keep_warm=keep_warm, slo_s=0.5)
        runs[keep_warm is not None] = result.summary()
    plain, warm = runs[False], runs[True]
    assert warm["cold_starts"] <= plain["cold_starts"] / 2
    assert 0 < warm["keep_warm_pings"] < plain["cold_starts"]
    assert warm["cost_usd"] <= plain["cost_usd"] * 1.01
    assert warm["slo_attainment"] >= plain["slo_attainment"]
    assert warm["latency_ms"]["p99"] < plain["latency_ms"]["p99"]
