"""A model served at virtual time: the dispatch core (`scheduler.Dispatcher`) driven by events.

The core is the gateway's own: it admits or refuses each arrival, closes batches, keeps
the backlog, places each batch (on a server, or on the function, as the scheduler
says), retries a batch whose instance failed, and keeps the pool's state and bill. This
module only turns its decisions into events, with simulated backends built from a
service profile:
- a server runs a batch in s(b) (times the jitter); with `fail_probability` a batch
  fails as if the server were unreachable, and the core retries it elsewhere;
- the function runs a batch in its invocation overhead, a cold start when no
  environment is warm (the provider's truth: `WarmEnvironments`), and s(b); each
  invocation bills its duration in whole milliseconds;
- a server the plan starts serves `startup_s` later, and bills from its start request;
  one the plan stops takes no new batch, finishes what it runs, and then stops;
- each request has a deadline (`timeout_s` after it arrives); one not answered by
  then gets 504, and its batch goes without it, as the gateway's handler does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from batching import BatchPolicy, Request
from batching.formation import REASONS
from scheduler import Actions, CoreTimer, Dispatcher, Fleet, FunctionSettings, KeepWarmPolicy, Prices, Scheduler, Send
from scheduler import WarmEnvironments
from scheduler.types import billed_ms

from .engine import Engine, Event
from .profiles import ServiceProfile, resolved_memory
from .results import SimResult

# Order at one instant: the core's timer, then batches ending, then plans and servers
# becoming ready, then deadlines, then arrivals (the gateway's loop polls first).
TIMER, DONE, PLAN, READY, DEADLINE, ARRIVAL = 0, 1, 2, 3, 4, 5
_REASON_CODE = {name: code for code, name in enumerate(REASONS)}


@dataclass(eq=False)
class SimInstance:
    """A simulated server, or the function (`Seat`, as the core needs it)."""

    name: str
    max_inflight: int = 1
    healthy: bool = True
    inflight: int = 0
    last_dispatch: float = -math.inf
    dispatched: int = 0
    high_water: int = 0


def _tabled(curve: Callable, largest: int = 1024, monotone: bool = False) -> Callable[[int], float]:
    """s(b) looked up in a table for b up to `largest` (the profile's curve interpolates on
    each call). `monotone`: never decreasing in b, as the gateway builds the curve its core
    uses from what it measures (`backends.profiling.service_curve`)."""
    values = np.asarray(curve(np.arange(1, largest + 1)), dtype=float)
    table = [float(x) for x in (np.maximum.accumulate(values) if monotone else values)]
    return lambda b: table[b - 1] if 0 < b <= largest else float(curve(b))


class EngineClock:
    """The engine's virtual clock, as the core's timer wants it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def now(self) -> float:
        return self.engine.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Event:
        return self.engine.schedule(max(when, self.engine.now), callback, priority=TIMER)


@dataclass
class Serving:
    """How the model is served: what `sluice serve` would run, reduced to what a simulation needs."""

    servers: int = 1  # ready at the start
    server_slots: int = 1  # batches a server runs at once
    max_servers: int = 64
    function: bool = False
    concurrency: int | None = None  # the function's (None: unlimited)
    memory_mb: int | None = None
    keep_alive_s: float = 600.0
    keep_warm: bool | KeepWarmPolicy = False  # ping environments warm (a policy of one's own, or the default's)
    warm_environments: int = 0  # the gateway's startup measurement leaves one warm
    function_belief: FunctionSettings | None = None  # what the core expects of the function (default: the profile)
    as_measured: bool = False  # the core's s(b) on the function is the round trip, overhead included (as the gateway measures it)
    timeout_s: float = 30.0  # each request's deadline
    edge_s: float = 0.0  # what the gateway adds to each answer outside the core (reading the request, writing its answer)
    slo_s: float | None = None  # the model's SLO: the scheduler's view, and admission's budget
    admit_on_slo: bool = True  # admission refuses what the backlog would keep past the SLO (as with slo_ms)
    max_pending: int = 4096
    max_attempts: int = 3
    outage_grace_s: float = 5.0
    instance_min_billed_s: float = 60.0
    prices: Prices | None = None  # instead of the profile's (a config's prices)
    fail_probability: float = 0.0  # of a batch on a server failing as unreachable
    jitter: float = 0.0
    seed: int = 0
    progress: Callable[[float], None] | None = None  # told the share of arrivals done, now and then
    provision_at_start: bool = False  # ask the scheduler for the first minute's pool, ready at once


@dataclass
class _Outcome:
    """Per request (lists while the run goes: a list item is set several times faster than an array's)."""

    status: list[int]
    latency: list[float]
    batch: list[int]
    sends: list[tuple[Send, float, bool, float]] = field(default_factory=list)  # send, service, cold, done


class ServedRun:
    def __init__(self, times: np.ndarray, policy: BatchPolicy, profile: ServiceProfile, serving: Serving,
                 scheduler: Scheduler | None = None, priorities: np.ndarray | None = None) -> None:  # fmt: skip
        self.times, self.profile, self.serving, self.scheduler = times.tolist(), profile, serving, scheduler
        self.priorities = priorities.tolist() if priorities is not None else None
        self.engine = Engine(start=self.times[0] if self.times else 0.0)
        self.rng = np.random.default_rng(serving.seed)
        self.servers: list[SimInstance] = [SimInstance(f"i{n}", serving.server_slots) for n in range(serving.servers)]
        self._names = serving.servers
        self.function: SimInstance | None = None
        self.memory = None
        self.environments: WarmEnvironments | None = None
        faas = profile.faas
        if serving.function:
            if faas is None:
                raise ValueError(f"profile {profile.name!r} has no 'faas' section")
            self.memory = resolved_memory(profile, serving.memory_mb)
            self.function = SimInstance("function", serving.concurrency or 1 << 30)
            keep_warm = serving.keep_warm if isinstance(serving.keep_warm, KeepWarmPolicy) else (
                KeepWarmPolicy(serving.keep_alive_s, faas.cold_start_ms / 1e3) if serving.keep_warm else None)  # fmt: skip
            self.environments = WarmEnvironments(serving.keep_alive_s, keep_warm, cold_start_s=faas.cold_start_ms / 1e3)
            if self.times:
                self.environments.preload(serving.warm_environments, self.times[0])
        elif serving.servers < 1 and not (scheduler and profile.iaas):
            raise ValueError("a model needs at least one server or the function")
        belief = serving.function_belief or FunctionSettings(
            serving.keep_alive_s, faas.invoke_overhead_ms / 1e3 if faas else 0.0, faas.cold_start_ms / 1e3 if faas else 1.0
        )  # fmt: skip
        self.fleet = Fleet(
            lambda: self.servers, lambda: self.function,
            prices=serving.prices or profile.prices(self.memory, serving.instance_min_billed_s),
            function_settings=belief, startup_s=profile.iaas.startup_s if profile.iaas else 0.0,
            max_instances=serving.max_servers,
        )  # fmt: skip
        if self.function is not None:
            self.fleet.environments.preload(serving.warm_environments, self.engine.now)
        extra = faas.invoke_overhead_ms / 1e3 if faas and serving.as_measured else 0.0
        # The simulated backends run the profile's s(b); the core predicts with the curve the gateway would build.
        self._faas_s = _tabled(lambda b: profile.faas_service_s(b, self.memory)) if self.function is not None else None
        self._pool_s = _tabled(profile.iaas_service_s, profile.iaas.max_batch_size or 1024) if profile.iaas else None
        self.core = Dispatcher(
            policy, self.fleet, scheduler=scheduler, slo_s=serving.slo_s,
            pool_service=_tabled(profile.iaas_service_s, profile.iaas.max_batch_size or 1024, True) if profile.iaas else None,
            faas_service=(_tabled(lambda b: profile.faas_service_s(b, self.memory) + extra, monotone=True)
                          if self.function is not None else None),
            answered=self._answered, max_attempts=serving.max_attempts, max_pending=serving.max_pending,
            outage_grace_s=serving.outage_grace_s,
        )  # fmt: skip
        self.timer = CoreTimer(EngineClock(self.engine), self.core.next_wakeup, self._due)
        n = len(self.times)
        self.out = _Outcome([0] * n, [math.inf] * n, [-1] * n)
        self.requests: list[Request | None] = [None] * n
        self.admissions: dict[int, tuple] = {}
        self._index: dict[int, int] = {}  # id(send) -> its row in out.sends
        self._last_answer = -math.inf
        self.end = self.engine.now
        self._arrived = 0  # requests that have arrived
        self._watched = 0  # no request before this one waits for its deadline
        self._watching = False  # a deadline event is scheduled

    # -- the run -----------------------------------------------------------------------

    def run(self) -> None:
        if not self.times:
            return
        first = self.times[0]
        self.fleet.sync(first)
        if self.serving.provision_at_start and self.scheduler is not None:
            self._provision(first)
        if self.scheduler is not None:
            self.engine.schedule(first + self.scheduler.plan_interval_s, self._plan, priority=PLAN)
        self.engine.run_stream(self.times, ARRIVAL, self._arrive)
        # The run ends with its last answer (not with a deadline event that found its request answered).
        self.end = max(self.times[-1], self._last_answer)
        self.fleet.ledger.close_all(self.end)
        if self.environments is not None and self.environments.keep_warm is not None:
            self.environments.advance(math.inf)  # the pings after the last batch are paid for too

    def _provision(self, first: float) -> None:
        """The first minute's traffic is known (yesterday's): its plan, ready at once."""
        window = [t for t in self.times if t < first + 60.0]
        for t in window:
            self.fleet.arrived(t)
        plan = self.scheduler.plan(self.core.view(first + 60.0), first)  # type: ignore[union-attr]
        self.fleet.arrivals.clear()
        start, _ = self.fleet.apply(plan, first)
        for _ in range(start):
            self.fleet.start_ended(self.fleet.start_requested(first), self._new_server(), first, timed=False)

    def _new_server(self) -> SimInstance:
        server = SimInstance(f"i{self._names}", self.serving.server_slots)
        self._names += 1
        self.servers.append(server)
        return server

    def _arrive(self, i: int) -> None:
        now = self.engine.now
        self._arrived = i + 1
        if self.serving.progress is not None and i % 65536 == 0:
            self.serving.progress(i / len(self.times))
        deadline = now + self.serving.timeout_s if math.isfinite(self.serving.timeout_s) else None
        priority = self.priorities[i] if self.priorities is not None else 0
        request = Request(str(i), now, deadline=deadline, priority=priority, payload=i)
        corrections = self.core.corrections
        admission, actions = self.core.submit(request, now, self.serving.slo_s if self.serving.admit_on_slo else None)
        if not admission.admitted:
            self.out.status[i] = 429
            return
        self.requests[i] = request
        self.admissions[i] = (admission, corrections)
        if deadline is not None and not self._watching:
            self._watch()
        self._act(actions)
        if i + 1 == len(self.times) and len(self.core.queue):
            due = self.core.next_wakeup()
            if due is None or not math.isfinite(due):
                self._act(self.core.drain(now))  # no timer will ever close the last batch (B not reached, no T)

    # Deadlines come in arrival order (each `timeout_s` after its request), so one event
    # at a time stands for all of them: at the deadline of the oldest request not yet
    # answered. When it fires it answers 504 to every request whose deadline it is, then
    # waits for the next one still unanswered. The same answers at the same instants as
    # one event per request, without a heap entry for each.

    def _watch(self) -> None:
        """Schedule the deadline of the oldest request that has arrived and is not answered, if any."""
        status, p = self.out.status, self._watched
        while p < self._arrived and status[p]:
            p += 1
        self._watched = p
        self._watching = p < self._arrived
        if self._watching:
            self.engine.schedule(self.times[p] + self.serving.timeout_s, self._deadlines, priority=DEADLINE)

    def _deadlines(self) -> None:
        now, status, timeout = self.engine.now, self.out.status, self.serving.timeout_s
        p = self._watched
        while p < self._arrived and (status[p] or self.times[p] + timeout <= now):
            if not status[p]:
                self._answer(p, 504)
            p += 1
        self._watched = p
        self._watch()

    def _answered(self, request: Request) -> bool:
        return bool(self.out.status[request.payload])

    def _answer(self, i: int, status: int, latency: float = math.inf) -> None:
        now = self.engine.now
        self._last_answer = now
        self.out.status[i] = status
        request = self.requests[i]
        admission, corrections = self.admissions.pop(i)
        if status == 200:
            self.out.latency[i] = latency + self.serving.edge_s if self.serving.edge_s else latency
        self.core.answer(request, now, admission, corrections, served=status == 200)  # type: ignore[arg-type]

    def _due(self, now: float, planned: float) -> None:
        self._act(self.core.due(now, planned))

    def _act(self, actions: Actions) -> None:
        for send in actions.sends:
            self._begin(send)
        for failure in actions.failures:
            for r in failure.requests:
                if not self.out.status[r.payload]:
                    self._answer(r.payload, failure.status)
        self.timer.rearm()

    # -- simulated backends ------------------------------------------------------------

    def _begin(self, send: Send) -> None:
        now, s = self.engine.now, self.serving
        factor = float(self.rng.lognormal(-s.jitter**2 / 2, s.jitter)) if s.jitter > 0 else 1.0
        cold, failed = False, False
        if send.on_function:
            faas, environments = self.profile.faas, self.environments
            assert faas is not None and environments is not None
            service = self._faas_s(send.rows) * factor  # type: ignore[misc]
            cold = environments.acquire(now)
            delay = faas.invoke_overhead_ms / 1e3 + (faas.cold_start_ms / 1e3 if cold else 0.0) + service
            environments.release_at(now + delay)
            self.fleet.faas_billed(billed_ms(service))
        else:
            service = self._pool_s(send.rows) * factor  # type: ignore[misc]
            delay = service
            failed = s.fail_probability > 0 and self.rng.random() < s.fail_probability
        self._index[id(send)] = len(self.out.sends)
        self.out.sends.append((send, service, cold, now + delay))
        self.engine.schedule(now + delay, self._end, send, failed, delay, priority=DONE)

    def _end(self, send: Send, failed: bool, delay: float) -> None:
        now = self.engine.now
        if failed:
            self._index.pop(id(send))
            self._act(self.core.unavailable(send, now, "the simulated server failed"))
        else:
            k = self._index.pop(id(send))
            for r in send.requests:
                if not self.out.status[r.payload]:
                    self.out.batch[r.payload] = k
                    self._answer(r.payload, 200, (send.started - r.arrival) + delay)
            self._act(self.core.succeeded(send, now))
        self._stop_idle(now)

    # -- the plan ----------------------------------------------------------------------

    def _plan(self) -> None:
        now = self.engine.now
        start, _stop = self.fleet.apply(self.core.plan(now), now)
        if self.profile.iaas is not None:
            for _ in range(start):
                token = self.fleet.start_requested(now)
                self.engine.schedule(now + self.profile.iaas.startup_s, self._ready, token, priority=READY)
        self._stop_idle(now)
        if now < self.times[-1] or not self.core.idle:
            self.engine.schedule(now + self.scheduler.plan_interval_s, self._plan, priority=PLAN)  # type: ignore[union-attr]

    def _ready(self, token: int) -> None:
        now = self.engine.now
        self.fleet.start_ended(token, self._new_server(), now)
        self._act(self.core.dispatch(now))

    def _stop_idle(self, now: float) -> None:
        """Servers told to stop leave once their batches are done."""
        for server in [s for s in self.servers if s.name in self.fleet.stopping and s.inflight == 0]:
            self.servers.remove(server)
            self.fleet.stop_ended(server, now)

    # -- the result --------------------------------------------------------------------

    def result(self, began: float, slo_s: float | None) -> SimResult:
        sends = self.out.sends
        start = np.array([s.started for s, *_ in sends], dtype=float)
        pings = 0
        environments = self.environments
        if environments is not None and environments.keep_warm is not None:
            pings = environments.pings
            for _ in range(pings):  # billed as invocations, as their REPORT lines are live
                self.fleet.faas_billed(billed_ms(environments.ping_s))
        cost = self.fleet.ledger.faas_usd + self.fleet.ledger.instance_seconds(self.end) * self.fleet.prices.instance_per_s
        status = np.array(self.out.status, dtype=np.int16)
        return SimResult(
            arrival=np.asarray(self.times, dtype=float), latency_s=np.array(self.out.latency, dtype=float),
            batch=np.array(self.out.batch, dtype=np.int64),
            close_time=np.array([s.batch.closed_at for s, *_ in sends], dtype=float), start_time=start,
            size=np.array([s.rows for s, *_ in sends], dtype=np.int64),
            reason=np.array([_REASON_CODE[s.batch.reason] for s, *_ in sends], dtype=np.int8),
            cold=np.array([c for _s, _v, c, _d in sends], dtype=bool),
            service_s=np.array([v for _s, v, _c, _d in sends], dtype=float), cost_usd=cost,
            wall_s=time.perf_counter() - began, target="hybrid" if self.scheduler else "served", memory_mb=self.memory,
            path="event", slo_s=slo_s, pings=pings,
            instance_hours=self.fleet.ledger.instance_seconds(self.end) / 3600.0,
            faas_batches=sum(1 for s, *_ in sends if s.on_function), rejected_batches=0,
            instances_started=self.fleet.started, refused=int(np.count_nonzero(status == 429)),
            timed_out=int(np.count_nonzero(status == 504)),
            failed=int(np.count_nonzero((status >= 500) & (status != 504))),
        )  # fmt: skip


def simulate_served(
    arrivals: np.ndarray, policy: BatchPolicy, profile: ServiceProfile, serving: Serving,
    scheduler: Scheduler | None = None, *, slo_s: float | None = None, priorities: np.ndarray | None = None,
) -> SimResult:  # fmt: skip
    """Serve sorted `arrivals` at virtual time as the gateway would: `policy` batching,
    the core admitting and placing, `scheduler` (if any) placing and planning. `slo_s`:
    what the result's attainment is judged against (None: not judged). `priorities`: each
    request's (higher goes first), as a client's `parameters.priority` sets it live."""
    began = time.perf_counter()
    times = np.asarray(arrivals, dtype=float)
    if times.ndim != 1 or (len(times) > 1 and (np.diff(times) < 0).any()):
        raise ValueError("arrivals must be a sorted one-dimensional array")
    if priorities is not None and len(priorities) != len(times):
        raise ValueError("priorities must give one priority per arrival")
    run = ServedRun(times, policy, profile, serving, scheduler, priorities)
    run.run()
    if len(times) and not all(run.out.status):
        raise RuntimeError("a request was left without an answer")
    return run.result(began, slo_s)
