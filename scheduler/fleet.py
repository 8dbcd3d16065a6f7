"""The places a model's batches run, as the dispatch core sees them: one owner for the pool's state.

A driver (the gateway's runner, or the simulator) hands the core its instances: server
instances, and at most one function. They are its own objects; the core reads what the
provider owns (`name`, `healthy`, `max_inflight`) and is the only writer of the rest
(`inflight`, `last_dispatch`, `dispatched`, `high_water`). The fleet keeps what a
scheduler decides from: the batches running on each instance (so an instance is busy
until the last of them is predicted done), the instances starting and stopping, the
function's environments believed warm, the recent arrivals, and the bill. `view(now)`
builds the scheduler's `View` from it: the one view both sides give a scheduler.

Billing, once for both sides: an instance bills from the moment it is asked for until
it has stopped, at least the provider's minimum (`Prices.instance_min_billed_s`); each
function invocation bills its duration in whole milliseconds (`Prices.faas_bill`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary
from typing import Protocol

from .breaker import CircuitBreaker
from .environments import WarmEnvironments
from .types import ArrivalView, FaasView, InstanceView, PoolPlan, Prices, ServiceTime, View

RATE_WINDOW_S = 30.0  # the arrival rate a scheduler sees: requests in the last 30 s


class Seat(Protocol):
    """An instance as the core needs it (the live `backends.Instance`, the simulator's own)."""

    name: str
    healthy: bool
    max_inflight: int
    inflight: int
    last_dispatch: float
    dispatched: int
    high_water: int


@dataclass
class FunctionSettings:
    """What the core knows of a function beyond its instance: for the view and the bill."""

    keep_alive_s: float = 600.0
    overhead_s: float = 0.0
    cold_start_s: float = 1.0


@dataclass
class Ledger:
    """Instance-seconds and the function's bill, from start requests, stops and invocations."""

    minimum_s: float = 0.0
    closed_s: float = 0.0
    faas_usd: float = 0.0
    invocations: int = 0
    open: dict[str, float] = field(default_factory=dict)  # instance name -> billed since

    def opened(self, name: str, since: float) -> None:
        self.open.setdefault(name, since)

    def closed(self, name: str, now: float) -> None:
        since = self.open.pop(name, None)
        if since is not None:
            self.closed_s += max(self.minimum_s, now - since)

    def instance_seconds(self, now: float) -> float:
        """Billed so far: stopped instances in full, running ones up to `now` (the minimum
        counts once they stop, or at the end of a run: `close_all`)."""
        return self.closed_s + sum(max(0.0, now - since) for since in self.open.values())

    def close_all(self, now: float) -> None:
        for name in list(self.open):
            self.closed(name, now)


class Fleet:
    def __init__(
        self,
        servers: Callable[[], Sequence[Seat]],
        function: Callable[[], Seat | None] = lambda: None,
        *,
        prices: Prices | None = None,
        function_settings: FunctionSettings | None = None,
        startup_s: float = 1.0,
        max_instances: int = 64,
        breaker: Callable[[], CircuitBreaker] = CircuitBreaker,
    ) -> None:
        self.servers, self.function = servers, function
        self.prices = prices or Prices()
        self.function_settings = function_settings or FunctionSettings()
        self.startup_s, self.max_instances = startup_s, max_instances
        self._new_breaker = breaker
        # Per instance, as long as it lives (weakly held: one that left takes its state along).
        self.breakers: WeakKeyDictionary[Seat, CircuitBreaker] = WeakKeyDictionary()
        self.running: WeakKeyDictionary[Seat, list[float]] = WeakKeyDictionary()  # predicted end of each batch on it
        self.starting: dict[int, float] = {}  # start requests not ready yet: token -> asked at
        self._tokens = 0
        self.stopping: set[str] = set()
        self.environments = WarmEnvironments(self.function_settings.keep_alive_s)
        self.arrivals: deque[float] = deque()
        self.cluster_rate: float | None = None  # every replica's arrivals, for a shared pool (gateway.replicas)
        self.ledger = Ledger(self.prices.instance_min_billed_s)
        self.started = self.stopped = 0

    # -- instances ---------------------------------------------------------------------

    def seats(self) -> list[Seat]:
        """Every place a batch can go: the servers, then the function."""
        function = self.function()
        return [*self.servers(), function] if function is not None else list(self.servers())

    def is_function(self, seat: Seat) -> bool:
        return seat is self.function()

    def breaker(self, seat: Seat) -> CircuitBreaker:
        found = self.breakers.get(seat)
        if found is None:
            found = self.breakers[seat] = self._new_breaker()
        return found

    def accepts(self, seat: Seat, now: float) -> bool:
        """Healthy, with room, not stopping, and not shut off by its circuit breaker."""
        return (
            seat.healthy and seat.inflight < seat.max_inflight and seat.name not in self.stopping
            and self.breaker(seat).allows(now, seat.inflight)
        )  # fmt: skip

    def began(self, seat: Seat, now: float, predicted_s: float) -> None:
        seat.inflight += 1
        seat.high_water = max(seat.high_water, seat.inflight)
        seat.dispatched += 1
        seat.last_dispatch = now
        self.running.setdefault(seat, []).append(now + predicted_s)

    def ended(self, seat: Seat, now: float, predicted_end: float) -> None:
        seat.inflight -= 1
        ends = self.running.get(seat)
        if ends is not None and predicted_end in ends:
            ends.remove(predicted_end)
        if self.is_function(seat):
            self.environments.release_at(now)

    def take_peak(self, seat: Seat) -> int:
        """The most batches in flight on `seat` at once since the last look (a replica's
        demand for the function's concurrency); the next look starts from now."""
        peak, seat.high_water = seat.high_water, seat.inflight
        return peak

    def function_began(self, now: float) -> None:
        """A batch invoked the function: it takes an environment (warm if one is believed idle)."""
        self.environments.acquire(now)

    # -- the pool's plan ---------------------------------------------------------------

    def apply(self, plan: PoolPlan, now: float) -> tuple[int, list[Seat]]:
        """Carry out `plan` as far as the bounds allow: how many servers to start (each
        billed from now), and which to stop (no new batches from now; billed until stopped)."""
        live = len(self.servers()) + len(self.starting)  # a stopping server still runs (and bills) until it has drained
        start = max(0, min(plan.start, self.max_instances - live))
        stop = [s for s in self.servers() if s.name in plan.stop and s.name not in self.stopping]
        self.stopping.update(s.name for s in stop)
        return start, stop

    def start_requested(self, now: float) -> int:
        """A server is being started; returns the token its start is reported with."""
        self._tokens += 1
        self.starting[self._tokens] = now
        self.ledger.opened(f"starting-{self._tokens}", now)
        return self._tokens

    def start_ended(self, token: int, seat: Seat | None, now: float, *, timed: bool = True) -> None:
        """The server asked for with `token` serves (`seat`), or failed to start (None).
        `timed=False`: a server there from the beginning (the simulator's first plan, ready
        at once), whose start says nothing of how long one takes."""
        asked = self.starting.pop(token, now)
        self.ledger.open.pop(f"starting-{token}", None)
        if seat is None:
            self.ledger.closed_s += now - asked  # it billed while it tried
            return
        self.ledger.open[seat.name] = min(asked, self.ledger.open.get(seat.name, asked))
        if timed:
            self.startup_s = now - asked
        self.started += 1

    def sync(self, now: float) -> None:
        """Bill the servers the core did not start (there from the beginning, registered)
        from now, and stop billing those gone without a stop (a registration expired)."""
        names = {s.name for s in self.servers()}
        for name in names:
            self.ledger.opened(name, now)
        for name in [n for n in self.ledger.open if n not in names and not n.startswith("starting-")]:
            self.ledger.closed(name, now)

    def stop_ended(self, seat: Seat, now: float) -> None:
        self.stopping.discard(seat.name)
        self.running.pop(seat, None)
        self.breakers.pop(seat, None)
        self.ledger.closed(seat.name, now)
        self.stopped += 1

    def faas_billed(self, billed_ms: float) -> float:
        """One invocation's bill, added to the ledger; returns it."""
        cost = self.prices.faas_bill(billed_ms)
        self.ledger.faas_usd += cost
        self.ledger.invocations += 1
        return cost

    # -- what a scheduler sees ---------------------------------------------------------

    def arrived(self, now: float) -> None:
        self.arrivals.append(now)
        if len(self.arrivals) > 4096:  # keep the window, whether or not a view is built
            self._forget(now)

    def _forget(self, now: float) -> None:
        while self.arrivals and self.arrivals[0] < now - RATE_WINDOW_S:
            self.arrivals.popleft()

    def rate(self, now: float) -> float:
        self._forget(now)
        return len(self.arrivals) / RATE_WINDOW_S if self.cluster_rate is None else self.cluster_rate

    def busy_until(self, seat: Seat, now: float) -> float:
        """When the instance can take another batch: now with a slot free, else when the
        first batch on it is predicted done."""
        if seat.inflight < seat.max_inflight:
            return now
        ends = self.running.get(seat)
        return max(now, min(ends)) if ends else now

    def view(
        self, now: float, *, pool_service: ServiceTime | None, faas_service: ServiceTime | None,
        batch_size: int, slo_s: float, batch_wait_s: float = 0.0, held: dict[str, tuple[float, int]] | None = None,
    ) -> View:  # fmt: skip
        """`held`: per instance, until when and by how many batches it is held by batches
        waiting for it (placed there by the scheduler while it was busy)."""
        instances = []
        for seat in self.servers():
            up = seat.healthy and self.breaker(seat).allows(now, seat.inflight)
            state = "stopping" if seat.name in self.stopping else "ready" if up else "starting"
            since = self.ledger.open.get(seat.name, now)
            entry = InstanceView(seat.name, state, self.busy_until(seat, now), seat.inflight, now, since)
            instances.append(holding(entry, *held[seat.name]) if held and seat.name in held else entry)
        for token, asked in self.starting.items():
            instances.append(InstanceView(f"starting-{token}", "starting", now, 0, asked + self.startup_s, asked))
        faas = None
        function = self.function()
        if function is not None and function.healthy:
            f = self.function_settings
            faas = FaasView(function.inflight, function.max_inflight, self.environments.idle_count(now),
                            f.overhead_s, f.cold_start_s)  # fmt: skip
        rate = self.rate(now)
        return View(
            instances, faas, ArrivalView(rate, lambda _h: rate), self.prices, pool_service, faas_service,
            max(1, batch_size), slo_s, self.startup_s, self.max_instances, batch_wait_s,
        )  # fmt: skip


def holding(entry: InstanceView, until: float, count: int) -> InstanceView:
    """An instance's entry in a view, held by `count` batches waiting for it until `until`."""
    busy, queued = max(entry.busy_until, until), entry.queued + count
    return InstanceView(entry.id, entry.state, busy, queued, entry.ready_at, entry.billed_since)


def idle_past_minimum(live: Sequence[InstanceView], view: View, now: float) -> list[InstanceView]:
    """The instances a plan may stop now: ready, idle, past their minimum bill; oldest first."""
    return sorted(
        (i for i in live if i.ready and i.busy_until <= now and now - i.billed_since >= view.prices.instance_min_billed_s),
        key=lambda i: i.billed_since,
    )  # fmt: skip
