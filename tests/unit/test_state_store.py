"""The split of a function's concurrency among replicas (the store's contract, held by the
in-memory store and by a real Redis alike, and replicas sharing it, are in e2e/test_state_store.py)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from scheduler.budget import faas_demand, split_budget


@given(st.integers(1, 64), st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.integers(0, 80), min_size=1))
def test_the_budget_split_stays_within_the_limit_and_is_fair(limit: int, demands: dict[str, int]) -> None:
    share = split_budget(limit, demands)
    assert set(share) == set(demands)
    assert sum(share.values()) == limit  # all of it, none twice
    if sum(demands.values()) <= limit:
        assert all(share[r] >= demands[r] for r in demands)
    fair = limit // len(demands)
    for r, d in demands.items():  # nobody who wants their fair part gets less than it
        assert share[r] >= min(d, fair)
    assert split_budget(limit, dict(reversed(list(demands.items())))) == share  # the same on every replica


def test_demand_doubles_when_the_share_was_used_up() -> None:
    assert faas_demand(0, 5, 16) == 1
    assert faas_demand(3, 5, 16) == 4
    assert faas_demand(5, 5, 16) == 10
    assert faas_demand(12, 12, 16) == 16
