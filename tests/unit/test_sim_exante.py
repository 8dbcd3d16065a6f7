"""Other draws of a member's traffic, and the fixed count chosen knowing its law (`sim.exante`)."""

from __future__ import annotations

import numpy as np

from sim.exante import exante, fixed_costs
from sim.family import member


def test_draw_zero_is_the_member_and_another_draw_is_the_same_law() -> None:
    for kind in ("diurnal", "bursts", "mmpp"):
        m = member(3, kind, duration_s=600.0)
        assert np.array_equal(m.arrivals(0), m.arrivals())
        other = m.arrivals(1)
        assert not np.array_equal(np.sort(other)[:100], np.sort(m.arrivals())[:100])
        if kind == "diurnal":  # the curve is fixed; only the arrivals differ
            assert np.array_equal(m.rates(1), m.rates())
            assert abs(len(other) / len(m.arrivals()) - 1.0) < 0.05
        else:  # the bursts or phases move; the levels they take are the law's
            assert not np.array_equal(m.levels(1), m.levels())
        if kind == "mmpp":
            assert set(np.unique(m.levels(1))) <= set(np.unique(m.levels()))
        if kind == "bursts":  # bursts of another draw scaled as the member's are: the base level is the same
            base = m.rates()[m.levels() == 1.0]
            assert np.allclose(m.rates(1)[m.levels(1) == 1.0], base[0])


def test_the_count_knowing_the_law_is_the_cheapest_on_average_over_the_other_draws() -> None:
    m = member(2, "bursts", duration_s=600.0)
    costs = fixed_costs(m, draws=4)
    relative = costs / costs.min(axis=1, keepdims=True)
    found = exante(m, draws=4)
    assert found.count == int(np.argmin(relative[1:].mean(axis=0)))
    assert found.best == int(np.argmin(costs[0]))
    assert found.ratio == relative[0, found.count] >= 1.0
    assert found.typical >= 1.0


def test_on_a_fixed_curve_the_law_gives_the_best_count() -> None:
    # A diurnal member's draws differ only in their Poisson arrivals: every draw prices each
    # count within a few percent of the member, and the law's count is the member's own best.
    m = member(1, "diurnal", duration_s=600.0)
    costs = fixed_costs(m, draws=3)
    best = int(np.argmin(costs[0]))
    assert np.allclose(costs[1:, best], costs[0, best], rtol=0.05)
    found = exante(m, draws=3)
    assert (found.count, found.ratio) == (best, 1.0)
