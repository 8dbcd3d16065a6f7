"""One timer for the dispatch core, on whichever clock its driver has.

The core says when it next wants to be asked (`Dispatcher.next_wakeup`); `CoreTimer`
keeps exactly one timer there, on a `Clock` the driver injects: the event loop's
(`time.monotonic()` and `call_later`, in the gateway) or the simulator's virtual one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle: ...


class CoreTimer:
    """Calls `fire(now, planned)` at `next_wakeup()`; `rearm()` after anything that may move it.
    A clock's timers may fire a little early (they round to its tick): `now` is never
    before the time the timer was armed for, so a batch is never found not yet due."""

    def __init__(self, clock: Clock, next_wakeup: Callable[[], float | None], fire: Callable[[float, float], None]) -> None:
        self.clock, self.next_wakeup, self.fire = clock, next_wakeup, fire
        self._handle: Handle | None = None
        self.due: float | None = None

    def rearm(self) -> None:
        due = self.next_wakeup()
        if due is not None and not math.isfinite(due):
            due = None
        if due == self.due:
            return
        self.cancel()
        self.due = due
        if due is not None:
            self._handle = self.clock.call_at(due, self._fired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self.due = None, None

    def _fired(self) -> None:
        planned, self._handle, self.due = self.due, None, None
        assert planned is not None
        self.fire(max(self.clock.now(), planned), planned)
        self.rearm()
