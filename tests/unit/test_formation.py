"""`form_batches` must give exactly the batches `BatchQueue` forms under its owner's event loop."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import BatchQueue, FixedPolicy, Request
from batching.formation import DRAIN, REASONS, SIZE, TIMEOUT, form_batches


def queue_batches(arrivals: list[float], batch_size: int, timeout: float) -> list[tuple[int, int, float, str]]:
    """(first index, size, closed_at, reason) per batch, from a queue driven like the owner does:
    poll at every due next_wakeup(), at exactly that time, before pushing each arrival."""
    queue = BatchQueue(FixedPolicy(batch_size, timeout))
    released = []
    for i, t in enumerate(arrivals):
        while (wakeup := queue.next_wakeup()) is not None and wakeup <= t:
            released += queue.poll(wakeup)
        released += queue.push(Request(id=str(i), arrival=t, payload=i), t)
    while (wakeup := queue.next_wakeup()) is not None and math.isfinite(wakeup):
        released += queue.poll(wakeup)
    released += queue.drain(arrivals[-1] if arrivals else 0.0)
    return [(b.requests[0].payload, len(b.requests), b.closed_at, b.reason) for b in released]


def formation_batches(arrivals: list[float], batch_size: int, timeout: float) -> list[tuple[int, int, float, str]]:
    f = form_batches(np.array(arrivals, dtype=float), batch_size, timeout)
    return list(zip(f.start.tolist(), f.size.tolist(), f.close_time.tolist(), f.reasons()))


def gaps(timeout: float) -> st.SearchStrategy[float]:
    """Zero gaps (ties), gaps of exactly T (arrival at the timeout instant), short and long gaps."""
    return st.one_of(
        st.just(0.0),
        st.just(timeout),
        st.floats(0.0, timeout) if timeout > 0 else st.just(0.0),
        st.floats(0.0, timeout / 8) if timeout > 0 else st.just(0.0),
        st.floats(0.0, 0.3),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[float], int, float]:
    batch_size = draw(st.integers(1, 64), label="B")
    timeout = draw(st.one_of(st.just(0.0), st.just(0.1), st.floats(0.0, 0.1)), label="T")
    now = draw(st.one_of(st.just(0.0), st.floats(0.0, 1e4)), label="start")
    arrivals = []
    for gap in draw(st.lists(gaps(timeout), max_size=200), label="gaps"):
        now += gap
        arrivals.append(now)
    return arrivals, batch_size, timeout


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_equals_batch_queue_driven_by_its_owner(scenario: tuple[list[float], int, float]) -> None:
    arrivals, batch_size, timeout = scenario
    assert formation_batches(arrivals, batch_size, timeout) == queue_batches(arrivals, batch_size, timeout)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), max_size=100), st.integers(1, 16))
def test_infinite_timeout_drains_the_last_batch_at_the_last_arrival(gaps: list[float], batch_size: int) -> None:
    arrivals = np.cumsum(gaps).tolist()
    assert formation_batches(arrivals, batch_size, math.inf) == queue_batches(arrivals, batch_size, math.inf)


def test_hand_worked_example_with_a_tie_at_the_timeout() -> None:
    # B=3, T=1: [0, 0.5] times out at 1.0, and the arrival at exactly 1.0 opens the next batch;
    # [1.0, 1.2, 1.3] fills by size at 1.3; [5.0] times out at 6.0.
    f = form_batches(np.array([0.0, 0.5, 1.0, 1.2, 1.3, 5.0]), 3, 1.0)
    assert f.start.tolist() == [0, 2, 5]
    assert f.size.tolist() == [2, 3, 1]
    assert f.close_time.tolist() == [1.0, 1.3, 6.0]
    assert f.reason.tolist() == [TIMEOUT, SIZE, TIMEOUT]
    assert f.batch_of_request().tolist() == [0, 0, 1, 1, 1, 2]
    assert REASONS[DRAIN] == "drain"


def test_empty_arrivals_give_no_batches() -> None:
    f = form_batches(np.array([]), 4, 0.01)
    assert len(f) == 0 and f.size.dtype == np.int64


@pytest.mark.parametrize(
    ("arrivals", "batch_size", "timeout", "message"),
    [
        ([1.0, 0.5], 2, 0.1, "sorted"),
        ([0.0, math.nan], 2, 0.1, "finite"),
        ([0.0], 0, 0.1, "positive integer"),
        ([0.0], 2.5, 0.1, "positive integer"),
        ([0.0], 2, -0.1, "negative"),
        ([[0.0]], 2, 0.1, "one-dimensional"),
    ],
)
def test_rejects_bad_input(arrivals: list, batch_size: float, timeout: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        form_batches(np.array(arrivals), batch_size, timeout)  # type: ignore[arg-type]


def test_forms_a_million_arrivals_well_within_a_second() -> None:
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1 / 2000.0, 1_000_000))
    began = time.perf_counter()
    f = form_batches(arrivals, 32, 0.010)
    elapsed = time.perf_counter() - began
    assert int(f.size.sum()) == len(arrivals)
    assert elapsed < 0.5, f"form_batches took {elapsed:.3f} s for 1M arrivals"
