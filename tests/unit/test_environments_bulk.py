"""WarmEnvironments.run_all (the simulator's fast path) equals acquire + release_at, one batch at a time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import KeepWarmPolicy, WarmEnvironments


def one_by_one(environments: WarmEnvironments, starts: list[float], warm: list[float], cold: list[float]) -> list[bool]:
    colds = []
    for now, w, c in zip(starts, warm, cold):
        was_cold = environments.acquire(now)
        environments.release_at(now + (c if was_cold else w))
        colds.append(was_cold)
    return colds


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.5), st.floats(0.0, 30.0)), min_size=1, max_size=120),
    busy=st.lists(st.floats(0.001, 3.0), min_size=120, max_size=120),
    keep_alive=st.sampled_from([0.0, 0.5, 5.0, 600.0]),
    preload=st.integers(0, 3),
    keep_warm=st.booleans(),
)
def test_run_all_equals_acquire_and_release(gaps: list[float], busy: list[float], keep_alive: float, preload: int, keep_warm: bool) -> None:
    starts = np.cumsum(gaps).tolist()
    warm = busy[: len(starts)]
    cold = [b + 0.9 for b in warm]
    runs = []
    for bulk in (False, True):
        policy = KeepWarmPolicy(keep_alive, 0.9) if keep_warm and keep_alive > 0 else None
        environments = WarmEnvironments(keep_alive, policy, cold_start_s=0.9)
        environments.preload(preload, starts[0])
        colds = environments.run_all(starts, warm, cold) if bulk else one_by_one(environments, starts, warm, cold)
        environments.advance(float("inf"))
        runs.append((colds, environments.idle_count(starts[-1] + 1.0), environments.pings))
    assert runs[0] == runs[1]
    assert runs[0][0][0] == (preload == 0 or keep_alive == 0)  # cold unless an environment was warm
