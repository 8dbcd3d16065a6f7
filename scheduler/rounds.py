"""What one round of placement knows, kept from one send to the next rather than rebuilt for each batch.

A round (`Dispatcher._dispatch_scheduled`) offers the waiting batches one by one, each
with the view of the fleet as it is then: the fleet as at the round's start or its last
send, plus the instances held by the batches placed on them while busy (`Fleet.view`'s
`held`). Within a round `now` stands still and only a send changes the fleet: the places
that can take a batch and the fleet's part of the view stay the same from one send to
the next, and a hold changes the held instance's entry alone. A round offers dozens of
batches when many wait (up to `_HELD` held and `_OFFERED` left without a place, besides
those sent), and building the whole view for each (every instance's predicted end, the
rate, the warm environments) was most of a busy simulation's time. Here it is built once
per send, and a hold replaces one entry: the same answers and the same views, field for
field, as `Fleet.accepts` and `Fleet.view(now, held=...)` give, so the same placements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .fleet import Fleet, Seat, holding
from .types import Placement, View



class Round:
    """One round's state at `now`: the places open, the holds, and the scheduler's view."""

    def __init__(self, fleet: Fleet, now: float, build: Callable[[], View]) -> None:
        self.fleet, self.now = fleet, now
        self._build = build  # the fleet's view now, without holds
        self.held: dict[str, tuple[float, int]] = {}  # instance -> (held until, by how many batches)
        self._servers: dict[str, Seat] = {}
        for server in fleet.servers():
            self._servers.setdefault(server.name, server)  # the first of a name, as a search would find
        self.sent()

    @property
    def open(self) -> bool:
        """Can any place take a batch now?"""
        return bool(self._accepting)

    def accepts(self, seat: Seat) -> bool:
        return seat in self._accepting

    def seat(self, placement: Placement) -> Seat | None:
        """The place `placement` names: the function, a server; None for a rejection, or a place gone."""
        if placement.kind == "faas":
            return self.fleet.function()
        return self._servers.get(placement.instance) if placement.kind == "instance" else None  # type: ignore[arg-type]

    def sent(self) -> None:
        """A batch was sent (or none yet): the fleet changed, so look at it afresh."""
        self._accepting = {s for s in self.fleet.seats() if self.fleet.accepts(s, self.now)}
        self._base: View | None = None  # the fleet's view since the last send
        self._view: View | None = None  # the same with the holds

    def view(self) -> View:
        """What the scheduler sees now."""
        if self._view is None:
            self._base = self._view = self._build()
            for name in self.held:
                self._held(name)
        return self._view

    def hold(self, seat: Seat, service_s: float) -> None:
        """A batch waits for `seat`, busy: it holds it for `service_s` more, so that the
        batches after it see the instance busy until then too."""
        held = self.held.get(seat.name)
        until, count = held if held is not None else (self.fleet.busy_until(seat, self.now), 0)
        self.held[seat.name] = (max(self.now, until) + service_s, count + 1)
        if self._view is not None:
            self._held(seat.name)

    def _held(self, name: str) -> None:
        """The view with `name`'s entry held, from its entry in the fleet's view (a hold
        counts from the fleet's state, not from the hold before it)."""
        base, view = self._base.instances, self._view  # type: ignore[union-attr]
        instances = list(view.instances)  # type: ignore[union-attr]
        for k, entry in enumerate(base):
            if entry.id == name:
                instances[k] = holding(entry, *self.held[name])
        self._view = replace(view, instances=instances)  # type: ignore[arg-type]
