"""Placement as a pure function of the pool's state (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import pick_instance


@dataclass
class State:
    healthy: bool
    inflight: int
    max_inflight: int
    last_dispatch: float


states = st.builds(
    State,
    healthy=st.booleans(),
    inflight=st.integers(0, 4),
    max_inflight=st.integers(1, 4),
    last_dispatch=st.floats(-1e3, 1e3) | st.just(float("-inf")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(states, max_size=8))
def test_picks_a_free_instance_with_fewest_in_flight_most_recent_first(pool: list[State]) -> None:
    free = [i for i, s in enumerate(pool) if s.healthy and s.inflight < s.max_inflight]
    chosen = pick_instance(pool, now=0.0)
    if not free:
        assert chosen is None
        return
    assert chosen in free, "picked an instance that is down or full"
    fewest = min(pool[i].inflight for i in free)
    assert pool[chosen].inflight == fewest
    latest = max(pool[i].last_dispatch for i in free if pool[i].inflight == fewest)
    assert pool[chosen].last_dispatch == latest


def test_low_load_keeps_reusing_the_same_warm_instance() -> None:
    pool = [State(True, 0, 1, float("-inf")) for _ in range(3)]
    used = []
    for t in range(5):  # one batch at a time, each finished before the next
        index = pick_instance(pool, float(t))
        pool[index].last_dispatch = float(t)
        used.append(index)
    assert len(set(used)) == 1


def test_busy_instances_spread_the_load() -> None:
    pool = [State(True, 0, 1, float("-inf")) for _ in range(3)]
    used = []
    for t in range(3):  # batches overlap: nothing finishes
        index = pick_instance(pool, float(t))
        pool[index].inflight += 1
        pool[index].last_dispatch = float(t)
        used.append(index)
    assert sorted(used) == [0, 1, 2]
    assert pick_instance(pool, 3.0) is None
