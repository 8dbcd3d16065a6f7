"""scheduler.hindsight: what a plan, as it was decided, would have cost over the last minutes."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler import PoolModel, replay_costs
from scheduler.hindsight import PlanHistory, moving_cost

MODEL = PoolModel(service_s=0.01, batch_size=1, slack_s=0.05)  # 100 requests/s an instance
PRICES = {"instance_per_s": 0.001, "per_request": 0.0001}
COUNTS = np.random.default_rng(3).poisson(np.repeat([80.0, 150.0, 60.0], 200)).astype(float)
TIMES = np.arange(len(COUNTS), dtype=float)


def cost(history: PlanHistory, startup_s: float = 60.0, weights: np.ndarray | None = None, seconds: int = len(COUNTS)) -> float:
    return moving_cost(COUNTS[:seconds], TIMES[:seconds], history, MODEL, startup_s=startup_s, hold_s=60.0, weights=weights, **PRICES)


@pytest.mark.parametrize("weights", [None, np.exp((TIMES - TIMES[-1]) / 300.0)], ids=["alike", "recent"])
def test_a_plan_that_held_one_count_costs_what_that_fixed_count_costs(weights) -> None:
    # Its first plan came a minute in: the pool it began with was there already, not starting.
    history = PlanHistory()
    for t in range(60, 600, 10):
        history.add(float(t), 2)
    fixed = replay_costs(COUNTS, MODEL, 4, PRICES["instance_per_s"], PRICES["per_request"], weights)
    assert cost(history, weights=weights) == pytest.approx(fixed[2], rel=1e-12)


def test_a_start_is_charged_when_its_instance_begins_to_serve() -> None:
    history = PlanHistory()
    history.add(0.0, 1)
    history.add(500.0, 2)  # ahead of a ramp still to come: ready at 560
    one = PlanHistory()
    one.add(0.0, 1)
    # Before the instance serves, the plan is judged as the one that had not started it.
    assert cost(history, seconds=555) == pytest.approx(cost(one, seconds=555), rel=1e-12)
    # After, it pays its start-up (60 s billed, serving nothing) and serves.
    share = MODEL.turned_away(3, COUNTS)
    served_from = 560
    expected = (
        PRICES["instance_per_s"] * (len(COUNTS) + (len(COUNTS) - served_from) + 60.0)
        + PRICES["per_request"] * (share[1, :served_from] @ COUNTS[:served_from] + share[2, served_from:] @ COUNTS[served_from:])
    ) / len(COUNTS)
    assert cost(history) == pytest.approx(expected, rel=1e-12)
