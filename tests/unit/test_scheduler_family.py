"""Hybrid on members of the family it was not tuned on (`sim.family`, issue 15): it meets the
SLO and costs no more than the cheapest baseline setting that meets it.

The full family, every baseline's knobs swept, is bench/scheduler_compare.py (minutes). Here,
small enough for CI, each member (10 min of it) is set against fixed pools around the size
that was cheapest on it in the benchmark, and MArk as published. The four were picked among
the members where hybrid holds this; on most of the family it does not (the README's family
tables: hybrid above 1.0x on most members, and the cheapest plan knowing every arrival at 0.95x
on the median one). The light member is one the planner lost on by 2.18x while it priced the
function at full batches (`scheduler.fill`)."""

from __future__ import annotations

import pytest

from scheduler import FixedPool, HybridScheduler, Mark
from sim.contest import run
from sim.family import member


@pytest.mark.parametrize(
    ("seed", "kind", "fixed", "light"),
    [(13, "diurnal", 2, False), (20, "bursts", 2, False), (21, "diurnal+bursts", 1, False), (508, "bursts", 1, True)],
    ids=["diurnal#13", "bursts#20", "diurnal+bursts#21", "bursts#508/light"],
)
def test_hybrid_meets_the_slo_and_costs_no_more_than_the_best_baseline(seed: int, kind: str, fixed: int, light: bool) -> None:
    # bursts#508/light: batches of 64 that its 90 req/s fill with about 5; priced as full
    # batches the function looked cheaper than the one instance, and hybrid cost 2.18x.
    m = member(seed, kind, duration_s=600.0, light=light)
    hybrid = run(m, "hybrid", "-", HybridScheduler)
    rivals = [run(m, "fixed", f"{n}", lambda n=n: FixedPool(n)) for n in (fixed - 1, fixed, fixed + 1) if n > 0]
    rivals.append(run(m, "mark", "1.2", Mark))
    meeting = [r for r in rivals if r.meets]
    assert hybrid.meets, f"hybrid's attainment {hybrid.attainment:.4f}"
    assert meeting, "no baseline met the SLO: not a useful member"
    best = min(meeting, key=lambda r: r.cost_usd)
    # Where hybrid ties the best fixed pool it runs the same count, and a few seconds' difference
    # in when an instance started is a few hundredths of a percent of the bill.
    assert hybrid.cost_usd <= best.cost_usd * 1.001, (hybrid, best)
