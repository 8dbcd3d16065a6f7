"""The dispatch core: what happens to one model's requests from admission to their answer.

Written once, run by two drivers: the gateway's runner (on the event loop's clock, with
real backends) and the simulator (at virtual time, with simulated ones). Every method
takes `now` and returns what to do (`Actions`): batches to send to an instance, and
requests to answer with an error. The driver does it and reports back how each batch
ended (`succeeded`, `unavailable`, `refused`, `crashed`).

What it decides:
- admission: refuse at once a request that could not be answered within its budget
  (`batching.admission`), with corrections learnt from the answers;
- closing: the policy's `BatchQueue`; closed batches wait in a `Backlog`, highest
  priority first;
- placement, under one rule: a batch goes only to a place that can take it now
  (healthy, a slot free, its circuit breaker closed, not stopping), and otherwise waits
  in the backlog, to be placed again when anything changes (a batch ends, an instance
  joins, a timer fires). Nothing is dropped by placement; a request that waits past its
  deadline is answered 504 by its driver. Without a scheduler the freest instance takes
  the first batch waiting (`pick_instance`), and none goes while it cannot. With one,
  every waiting batch is offered, in order, to the scheduler, which names an instance or
  the function from the `View`: a batch it gives to a busy instance waits for it, and
  holds it (the batches after it see that instance busy for its service time too), so
  a later batch may go to the function meanwhile; a batch it rejects waits;
- retries and bisection: a batch that fails because its instance could not run it goes
  again, first in line (up to `max_attempts`); one refused for its content is split in
  halves until the request at fault is alone;
- the outage grace: with no healthy instance, waiting batches get `outage_grace_s`, then 503.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from batching import Batch, BatchPolicy, BatchQueue, Request
from batching.admission import Admission, Corrections, ServiceMeter, admit
from batching.overrun import OverrunTracker

from .actions import Actions, Failure, Send
from .backlog import Backlog
from .fleet import Fleet, Seat
from .placement import pick_instance
from .rounds import Round
from .types import PoolPlan, Scheduler, ServiceTime, View

_UNBOUNDED = Admission(True, 0.0)
# What a call that decided nothing returns (most arrivals): one shared value, with tuples
# for lists so that no driver can add to it.
_NOTHING = Actions((), (), (), ())  # type: ignore[arg-type]
_OFFERED = 16  # waiting batches the scheduler may leave without a place per round: the rest wait their turn
_HELD = 64  # and batches it may hold for busy instances (as many as their queues take within the SLO)


class Dispatcher:
    def __init__(
        self,
        policy: BatchPolicy,
        fleet: Fleet,
        *,
        name: str = "model",
        scheduler: Scheduler | None = None,
        slo_s: float | None = None,
        pool_service: ServiceTime | None = None,
        faas_service: ServiceTime | None = None,
        answered: Callable[[Request], bool] = lambda _r: False,
        max_attempts: int = 3,
        max_pending: int = 4096,
        outage_grace_s: float = 5.0,
    ) -> None:
        self.name = name
        self.queue = BatchQueue(policy)
        self.backlog = Backlog()
        self.fleet, self.scheduler, self.slo_s = fleet, scheduler, slo_s
        self.pool_service, self.faas_service = pool_service, faas_service
        self.answered = answered  # a driver's: already answered (a 504, a client gone), so not sent
        self.max_attempts, self.max_pending, self.outage_grace_s = max_attempts, max_pending, outage_grace_s
        self.pending = 0  # admitted and not yet answered
        self.arrivals = 0  # offered, admitted or refused
        self.meter = ServiceMeter()  # s(rows) on a slot: admission's prediction
        self.learnt = Corrections()  # how far off admission's predictions run (see `answer`)
        self.running_batches = self.running_rows = 0
        self._failed_at = -math.inf  # when an instance last failed a batch
        self.grace_until: float | None = None
        self.draining = False
        # Deadline-aware closing allows for how late batches really are. Not on a function:
        # its cold starts are a probability the tuner weighs, not lateness.
        on_function = fleet.function() is not None
        self._overruns = OverrunTracker() if hasattr(policy, "allow") and not on_function else None
        self._recorded = 0
        self._out = Actions()

    @property
    def policy(self) -> BatchPolicy:
        return self.queue.policy

    @property
    def waiting(self) -> int:
        """Requests in the open batch plus those in closed batches not yet sent."""
        return len(self.queue) + sum(len(b.requests) for b in self.backlog)

    @property
    def idle(self) -> bool:
        return not self.backlog and not len(self.queue) and self.running_batches == 0

    # -- requests ----------------------------------------------------------------------

    def admission(
        self, now: float, rows: int, priority: int, deadline: float | None, slo_s: float | None, edge_s: float = 0.0
    ) -> Admission:
        """Would a request be answered within its budget? (Pure: nothing changes.)"""
        if deadline is None and slo_s is None and self.pending < self.max_pending:
            return _UNBOUNDED  # no budget to judge against (a comparison of schedulers): nothing to predict
        slots = sum(s.max_inflight for s in self.fleet.seats() if s.healthy)
        limits = self.policy.limits(now)
        due = self.queue.next_wakeup()  # the open batch closes by then; else a new one waits up to T
        max_wait = max(0.0, due - now) if due is not None else limits.max_wait
        if limits.work_conserving:  # the open batch goes as soon as the work ahead (the drain) is done
            max_wait = 0.0
        left = deadline - now if deadline is not None else math.inf
        if slo_s is not None:  # a loop lagging half the SLO answers no one in time: refuse until it catches up
            slo_s = max(0.0, slo_s - edge_s)
        slo_binds = slo_s is not None and slo_s < left
        return admit(
            # Ahead: the closed batches waiting, and those running (counted whole: a bias
            # to the safe side, which the corrections learn the rest of).
            ahead_rows=self.backlog.rows_ahead(priority) + self.running_rows,
            ahead_batches=self.backlog.batches_ahead(priority) + self.running_batches,
            rows=rows, pending=self.pending, max_pending=self.max_pending, slots=slots, meter=self.meter,
            max_wait_s=max_wait, budget_s=slo_s if slo_binds else left, margin=self.admission_margin,
            allowance_s=self.admission_allowance_s, budget_is_slo=slo_binds,
        )  # fmt: skip

    def screen(self, now: float, deadline: float | None, slo_s: float | None, edge_s: float = 0.0) -> Admission:
        """Admission for a request whose body is not read yet, at its most favourable (one
        row, the highest priority waiting): a refusal here is one whatever the body holds."""
        admission = self.admission(now, 1, self.backlog.top_priority(), deadline, slo_s, edge_s)
        if not admission.admitted:
            self.arrivals += 1
        return admission

    @property
    def corrections(self) -> tuple[float, float]:
        """(margin, allowance) as admission uses them now; `answer` learns against these."""
        return self.learnt.now

    @property
    def admission_margin(self) -> float:
        return self.learnt.margin

    @property
    def admission_allowance_s(self) -> float:
        return self.learnt.allowance_s

    def submit(self, request: Request, now: float, slo_s: float | None, edge_s: float = 0.0) -> tuple[Admission, Actions]:
        """A request arrives: refused, or admitted into the open batch."""
        self.arrivals += 1
        admission = self.admission(now, request.size, request.priority, request.deadline, slo_s, edge_s)
        if not admission.admitted:
            return admission, _NOTHING
        if self.scheduler is not None:
            self.scheduler.observe(1, now)
        self.fleet.arrived(now)
        self.pending += 1
        self.backlog.arrived(request)
        closed = self.queue.push(request, now)
        if closed:
            self._enqueue(closed)
            self._dispatch(now)
        elif not self.backlog and self.queue.work_conserving:
            self._dispatch(now)  # an idle instance takes it now
        return admission, self._flush()

    def answer(self, request: Request, now: float, admission: Admission, corrections: tuple[float, float], served: bool) -> None:
        """`request` was answered at `now`. Served ones teach admission how far off its
        predictions run (`Corrections`); answers delayed by an instance failing teach
        nothing, a fault, not noise: every request that arrived before the last failure
        (those retried, and those that waited behind them on fewer instances than predicted)."""
        self.pending -= 1
        if served and request.arrival > self._failed_at:
            self.learnt.learn(admission, corrections, now - request.arrival, now)

    def withdraw(self, request: Request, now: float) -> str:
        """The request's answer is no longer wanted (its client went, or its deadline
        passed): it leaves the open batch or its closed one ("queued"), or its answer will
        be dropped when its batch returns ("running")."""
        if self.queue.withdraw(request):
            self.backlog.left([request])
            return "queued"
        return "queued" if self.backlog.withdraw(request) else "running"

    # -- time --------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """When the core wants `due` called: the open batch's closing, the outage grace's end."""
        due = self.queue.next_wakeup()
        if self.grace_until is not None:
            due = self.grace_until if due is None else min(due, self.grace_until)
        return due

    def due(self, now: float, planned: float | None = None) -> Actions:
        """A timer fired at `now`, armed for `planned`: close what is due, send what can go."""
        batches = self.queue.poll(now)
        for batch in batches:
            batch.tags["planned"] = planned  # its lateness counts as overrun
        self._enqueue(batches)
        if self.grace_until is not None and now >= self.grace_until:
            self._end_of_grace(now)
        self._dispatch(now, at=now)  # and a hold may have run out while an instance is free
        return self._flush()

    def dispatch(self, now: float) -> Actions:
        """Capacity may have changed (an instance joined, a breaker's cooldown ended)."""
        self._dispatch(now)
        return self._flush()

    def limits_changed(self, now: float) -> Actions:
        """The policy's limits moved (a re-tune, a new allowance): the open batch may be due."""
        self._enqueue(self.queue.poll(now))
        self._dispatch(now)
        return self._flush()

    def drain(self, now: float) -> Actions:
        """Close every pending batch now and send it; refuse new work from here on."""
        self.draining = True
        self._enqueue(self.queue.drain(now))
        self._dispatch(now)
        return self._flush()

    def fail_pending(self, now: float, status: int, message: str) -> list[Failure]:
        """Answer everything still waiting with an error (the last step of a forced stop)."""
        failures = [Failure(b.requests, status, message) for b in self.backlog.clear()]
        for batch in self.queue.drain(now):
            self.backlog.left(batch.requests)
            failures.append(Failure(batch.requests, status, message))
        return failures

    # -- plans -------------------------------------------------------------------------

    def view(self, now: float, held: dict[str, tuple[float, int]] | None = None) -> View:
        """What the scheduler sees now (`Fleet.view`); `held`: instances held by waiting batches."""
        limits = self.policy.limits(now)
        return self.fleet.view(
            now, pool_service=self.pool_service, faas_service=self.faas_service, batch_size=int(limits.max_size),
            slo_s=self.slo_s or 1.0, batch_wait_s=limits.max_wait, held=held,
        )  # fmt: skip

    def plan(self, now: float) -> PoolPlan:
        assert self.scheduler is not None, "planning needs a scheduler"
        return self.scheduler.plan(self.view(now), now)

    # -- batches ending ----------------------------------------------------------------

    def succeeded(self, send: Send, now: float) -> Actions:
        self._ended(send, now)
        self.fleet.breaker(send.seat).success()
        self.meter.record(send.rows, now - send.started)
        if self._overruns is not None and send.batch.attempts == 0:
            self._record_overrun(send, now)
        self._dispatch(now)
        return self._flush()

    def unavailable(self, send: Send, now: float, error: str) -> Actions:
        """The instance could not run the batch (unreachable, timed out, overloaded): try
        another, first in line, unless it has had `max_attempts`."""
        self._ended(send, now)
        self._failed_at = now
        if self.fleet.breaker(send.seat).failure(now):
            self._out.events.append("breaker-opened")
        batch = send.batch
        batch.attempts += 1
        if batch.attempts < self.max_attempts:
            self._out.events.append("retried")
            batch.requests = send.requests
            self.backlog.retry(batch)
        else:
            self._out.failures.append(Failure(send.requests, 503, f"no backend could run the batch: {error}", 1.0))
        self._dispatch(now)
        return self._flush()

    def refused(self, send: Send, now: float, status: int, message: str) -> Actions:
        """The instance answered, refusing the batch's content: bisect it, so that only
        the requests at fault get the error (at most 2 log2(n) more batches for one)."""
        self._ended(send, now)
        self.fleet.breaker(send.seat).success()  # it answered: the instance works, the batch did not
        live = send.requests
        if len(live) > 1:
            self._out.events.append("bisected")
            half = len(live) // 2
            for part in (live[half:], live[:half]):  # retry() puts each first: the earlier half goes first
                self.backlog.retry(Batch(part, now, send.batch.reason, attempts=send.batch.attempts, tags={"bisected": True}))
        else:
            self._out.failures.append(Failure(live, status, message))
        self._dispatch(now)
        return self._flush()

    def crashed(self, send: Send, now: float, message: str) -> Actions:
        self._ended(send, now)
        self._out.failures.append(Failure(send.requests, 500, message))
        self._dispatch(now)
        return self._flush()

    # -- inside ------------------------------------------------------------------------

    def _flush(self) -> Actions:
        out = self._out
        if not (out.sends or out.failures or out.closed or out.events):
            return _NOTHING
        self._out = Actions()
        return out

    def _enqueue(self, batches: list[Batch]) -> None:
        for batch in batches:
            self._out.closed.append(batch)
            self.backlog.add(batch)

    def _ended(self, send: Send, now: float) -> None:
        self.running_batches -= 1
        self.running_rows -= send.rows
        self.fleet.ended(send.seat, now, send.predicted_end)

    def _service(self, seat: Seat, rows: int, on_function: bool) -> float:
        curve = self.faas_service if on_function else self.pool_service
        return curve(rows) if curve is not None else self.meter.seconds(rows)

    def _dispatch_scheduled(self, now: float) -> None:
        """Offer each waiting batch, in order, to the scheduler (see the module's docstring)."""
        # A round stops after `_OFFERED` batches left without a place (or `_HELD` held), not
        # after `_OFFERED` offered: when a burst closed dozens of batches at once, the first
        # sixteen, held for busy instances, kept every later one (the function's, in time)
        # waiting for a server to finish, past the SLO (issue 15, azure-code#17).
        if not self.backlog:
            return
        here = Round(self.fleet, now, lambda: self.view(now))
        left = holding = 0
        for batch in self.backlog.ordered() if here.open else ():
            if left >= _OFFERED or holding >= _HELD:
                break
            if not self._alive(batch):
                continue
            placement = self.scheduler.place(batch, here.view(), now)  # type: ignore[union-attr]
            seat = here.seat(placement)
            if seat is None:  # rejected, or its place is gone: it waits for a place
                left += 1
            elif placement.kind == "instance" and not here.accepts(seat):
                if self.pool_service is not None:  # it waits for this instance, and holds it
                    here.hold(seat, self.pool_service(batch.size))
                holding += 1
            elif not here.accepts(seat):
                left += 1
            else:
                self._send(batch, self._live(batch), seat, now)
                here.sent()
                if not here.open:
                    break  # nothing can go anywhere now: the rest wait

    def _alive(self, batch: Batch) -> bool:
        """Has the batch a request not yet answered? One with none (all 504s) leaves the backlog."""
        for r in batch.requests:
            if not self.answered(r):
                return True
        self.backlog.pop(batch)
        return False

    def _live(self, batch: Batch) -> list[Request]:
        """The batch's requests not yet answered; a batch with none (all 504s) leaves the backlog."""
        live = [r for r in batch.requests if not self.answered(r)]
        if not live:
            self.backlog.pop(batch)
        return live

    def _send(self, batch: Batch, live: list[Request], seat: Seat, now: float) -> None:
        self.backlog.pop(batch)
        rows = sum(r.size for r in live)
        on_function = self.fleet.is_function(seat)
        end = now + self._service(seat, rows, on_function)
        self.fleet.began(seat, now, end - now)
        if on_function:
            self.fleet.function_began(now)
        self.running_batches += 1
        self.running_rows += rows
        self._out.sends.append(Send(batch, seat, live, rows, now, end, on_function))

    def _dispatch(self, now: float, at: float = 0.0) -> None:
        """Send closed batches to the places that take them now, and the open batch too
        when the policy is work-conserving and nothing closed waits (`BatchQueue.idle`);
        `at`: a timer's due time (it may fire a little early, and must not then find the
        hold still running)."""
        fleet = self.fleet
        if self.scheduler is not None:
            self._dispatch_scheduled(now)
        while self.scheduler is None:
            batch = self.backlog.peek()
            if batch is None:
                if not len(self.queue) or not self.queue.work_conserving:
                    break
                if not any(fleet.accepts(s, now) for s in fleet.seats()):
                    break
                idle = self.queue.idle(max(now, at))
                if not idle:
                    break
                self._enqueue(idle)
                continue
            live = self._live(batch)
            if not live:
                continue
            usable = [s for s in fleet.seats() if s.name not in fleet.stopping and fleet.breaker(s).allows(now, s.inflight)]
            index = pick_instance(usable, now)
            if index is None:
                break
            self._send(batch, live, usable[index], now)
        if self.backlog and self.grace_until is None and not any(s.healthy for s in fleet.seats()):
            # Nothing can run these batches now. A worker restarts in about a second;
            # past the grace, answer rather than let clients wait out their deadlines.
            self.grace_until = now + self.outage_grace_s

    def _end_of_grace(self, now: float) -> None:
        self.grace_until = None
        if any(s.healthy for s in self.fleet.seats()):
            return
        self._out.events.append("grace-ended")
        for batch in self.backlog.clear():
            self._out.failures.append(
                Failure(batch.requests, 503, f"no instance of model {self.name!r} is available", self.outage_grace_s)
            )

    def _record_overrun(self, send: Send, now: float) -> None:
        """Answered later than predicted by: the timer's lateness plus the service time
        beyond s(b). Waiting for a free instance is not counted: that is load, not noise.
        Nothing to measure against until the policy has made its first choice."""
        policy = self.policy
        if getattr(policy, "choice", None) is None:
            return
        batch = send.batch
        planned = batch.tags.get("planned")
        planned = batch.closed_at if planned is None else planned
        overrun = (batch.closed_at - planned) + (now - send.started - policy.base_service(send.rows))  # type: ignore[attr-defined]
        tracker = self._overruns
        tracker.record(overrun, len(batch.requests))  # type: ignore[union-attr]
        self._recorded += 1
        if self._recorded % 32 == 0:
            policy.allow(tracker.allowance())  # type: ignore[attr-defined]
            self._enqueue(self.queue.poll(now))
