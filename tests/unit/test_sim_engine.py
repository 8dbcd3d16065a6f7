"""The discrete-event engine: time order, same-instant priorities, cancellation."""

from __future__ import annotations

import math

import pytest

from sim.engine import Engine


def test_events_run_in_time_then_priority_then_scheduling_order() -> None:
    engine = Engine()
    seen: list[tuple[float, str]] = []
    log = lambda name: seen.append((engine.now, name))  # noqa: E731
    engine.schedule(2.0, log, "late")
    engine.schedule(1.0, log, "arrival", priority=2)
    engine.schedule(1.0, log, "timer", priority=0)
    engine.schedule(1.0, log, "second arrival", priority=2)
    engine.schedule(0.5, log, "early")
    engine.run()
    assert seen == [(0.5, "early"), (1.0, "timer"), (1.0, "arrival"), (1.0, "second arrival"), (2.0, "late")]


def test_callbacks_schedule_more_events_and_cancelled_ones_never_run() -> None:
    engine = Engine()
    seen: list[float] = []

    def tick(left: int) -> None:
        seen.append(engine.now)
        if left:
            engine.after(0.25, tick, left - 1)

    engine.schedule(0.0, tick, 3)
    doomed = engine.schedule(0.3, seen.append, -1.0)
    doomed.cancel()
    assert doomed.cancelled
    engine.run()
    assert seen == [0.0, 0.25, 0.5, 0.75]
    assert len(engine) == 0 and engine.peek() == math.inf


def test_run_until_stops_the_clock_there() -> None:
    engine = Engine()
    seen: list[float] = []
    for t in (1.0, 2.0, 3.0):
        engine.schedule(t, seen.append, t)
    engine.run(until=2.0)
    assert seen == [1.0, 2.0] and engine.now == 2.0
    engine.run(until=2.5)
    assert engine.now == 2.5 and engine.peek() == 3.0


def test_the_past_cannot_be_scheduled() -> None:
    engine = Engine(start=5.0)
    with pytest.raises(ValueError, match="before now"):
        engine.schedule(4.0, print)
    with pytest.raises(ValueError, match="before now"):
        engine.schedule(math.nan, print)


def test_a_stream_runs_between_the_scheduled_events_by_time_then_priority() -> None:
    engine = Engine()
    seen: list[tuple[str, float]] = []

    def arrive(i: int) -> None:
        seen.append((f"a{i}", engine.now))
        if i == 0:  # what an arrival schedules runs in its turn, even at its own instant
            engine.schedule(engine.now, lambda: seen.append(("timer", engine.now)), priority=0)
            engine.schedule(engine.now, lambda: seen.append(("late", engine.now)), priority=9)

    engine.schedule(1.0, lambda: seen.append(("before", engine.now)), priority=4)
    engine.schedule(2.0, lambda: seen.append(("after", engine.now)), priority=6)
    engine.schedule(5.0, lambda: seen.append(("end", engine.now)), priority=0)
    engine.run_stream([1.0, 1.0, 2.0], 5, arrive)
    assert seen == [("before", 1.0), ("a0", 1.0), ("timer", 1.0), ("a1", 1.0), ("late", 1.0), ("a2", 2.0),
                    ("after", 2.0), ("end", 5.0)]  # fmt: skip
