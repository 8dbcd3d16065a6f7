"""The served run's deadlines: one event at a time standing for all of them gives the same
answers as one event per request (the plain way, kept here as the reference)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import FixedPolicy
from sim.served import DEADLINE, ServedRun, Serving
from support import make_profile


class OneEventPerDeadline(ServedRun):
    """Schedules each admitted request's deadline as an event of its own when it arrives."""

    def _watch(self) -> None:
        i = self._arrived - 1
        self.engine.schedule(self.times[i] + self.serving.timeout_s, self._one, i, priority=DEADLINE)

    def _one(self, i: int) -> None:
        if not self.out.status[i]:
            self._answer(i, 504)


def served(run_type: type[ServedRun], arrivals: np.ndarray, policy: FixedPolicy, serving: Serving) -> tuple:
    run = run_type(arrivals, policy, make_profile(overhead_ms=5.0, cold_ms=100.0, base_ms=20.0, per_item_ms=6.0), serving)
    run.run()
    result = run.result(0.0, 0.2)
    return (run.out.status, result.latency_s.tolist(), result.batch.tolist(), result.start_time.tolist(),
            result.size.tolist(), result.cold.tolist(), result.cost_usd)  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([0.0, 1 / 256, 1 / 64, 1 / 16, 0.3]), min_size=1, max_size=300),
    batch_size=st.integers(1, 8),
    timeout=st.sampled_from([0.0, 1 / 64, 1 / 16]),
    deadline=st.sampled_from([0.0, 1 / 32, 1 / 16, 0.25]),
    place=st.sampled_from(["server", "two-servers", "function"]),
    slo=st.sampled_from([None, 0.125]),
    seed=st.integers(0, 3),
)
def test_one_watching_event_answers_as_one_event_per_request(
    gaps: list[float], batch_size: int, timeout: float, deadline: float, place: str, slo: float | None, seed: int
) -> None:
    arrivals = np.cumsum(gaps)  # on a grid of 1/256 s: deadlines meet arrivals, ends and timers exactly
    where = {"server": {"servers": 1}, "two-servers": {"servers": 2, "fail_probability": 0.2},
             "function": {"servers": 0, "function": True, "concurrency": 1}}[place]  # fmt: skip
    serving = Serving(timeout_s=deadline, slo_s=slo, jitter=0.2, seed=seed, **where)
    policy = FixedPolicy(batch_size, timeout)
    reference = served(OneEventPerDeadline, arrivals, policy, serving)
    assert served(ServedRun, arrivals, policy, serving) == reference


def test_requests_past_their_deadline_get_504_at_it() -> None:
    arrivals = np.array([0.0, 0.0, 0.0, 0.5])
    run = ServedRun(arrivals, FixedPolicy(1, 0.0), make_profile(base_ms=100.0, per_item_ms=0.0), Serving(servers=1, timeout_s=0.15))
    run.run()
    assert run.out.status == [200, 504, 504, 200]  # one server, 100 ms each: the second would end at 0.2 s
