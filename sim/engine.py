"""A minimal discrete-event engine: a clock and a heap of scheduled callbacks.

Events run in time order. Events due at the same instant run by `priority` (lower
first), then in the order they were scheduled, so the model decides what "at the
same time" means: the simulator polls batch timers before it pushes an arrival at
the same instant, just as the gateway's owner loop does.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any


class Event:
    """A scheduled callback; `cancel()` keeps it from running (it stays in the heap until due)."""

    __slots__ = ("time", "callback", "args")

    def __init__(self, time: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.time = time
        self.callback: Callable[..., Any] | None = callback
        self.args = args

    def cancel(self) -> None:
        self.callback = None

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class Engine:
    """Virtual time: `now` jumps from one event to the next; nothing ever sleeps."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, int, Event]] = []
        self._order = itertools.count()

    def schedule(self, time: float, callback: Callable[..., Any], *args: Any, priority: int = 0) -> Event:
        """Run `callback(*args)` at `time` (not before `now`: the past cannot be changed)."""
        if not time >= self.now:  # also rejects NaN
            raise ValueError(f"cannot schedule at {time!r}, before now ({self.now!r})")
        event = Event(time, callback, args)
        heapq.heappush(self._heap, (time, priority, next(self._order), event))
        return event

    def after(self, delay: float, callback: Callable[..., Any], *args: Any, priority: int = 0) -> Event:
        return self.schedule(self.now + delay, callback, *args, priority=priority)

    def peek(self) -> float:
        """Time of the next event, or infinity if there is none."""
        return self._heap[0][0] if self._heap else math.inf

    def step(self) -> None:
        """Advance the clock to the next event and run it."""
        time, _, _, event = heapq.heappop(self._heap)
        self.now = time
        if event.callback is not None:
            event.callback(*event.args)

    def run(self, until: float = math.inf) -> None:
        """Run events due at or before `until`, in order, until there are none left."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            self.step()
        if math.isfinite(until) and until > self.now:
            self.now = until

    def run_stream(self, times: list[float], priority: int, callback: Callable[[int], Any]) -> None:
        """Run `callback(i)` at each of the sorted `times`, at `priority`, interleaved with the
        scheduled events, then the rest of them: each after every scheduled event due before
        it or at the same time with the same or a lower priority, and before the others.
        The simulator's arrivals, without a heap entry for each."""
        heap, step = self._heap, self.step
        for i, time in enumerate(times):
            while heap and (heap[0][0] < time or (heap[0][0] == time and heap[0][1] <= priority)):
                step()
            if not time >= self.now:
                raise ValueError(f"cannot run at {time!r}, before now ({self.now!r})")
            self.now = time
            callback(i)
        self.run()

    def __len__(self) -> int:
        return len(self._heap)
