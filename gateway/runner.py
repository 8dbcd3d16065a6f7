"""One model's live loop: its BatchQueue on the event loop's clock, feeding a pool.

The queue decides when batches close; `scheduler.pick_instance` (or a scheduler's
placer) decides where they go. Admission control refuses, at once, a request that
could not be answered within its budget; closed batches wait in a `Backlog`,
highest priority first. A batch that fails on an instance that could not run it is
tried on another (each instance has a circuit breaker); one that fails for its
content is bisected, so that only the request at fault gets the error. Times are `time.monotonic()`: uvloop's `loop.time()` only moves in whole
milliseconds, too coarse for waits of a few milliseconds and for the arrival
statistics the tuner fits. Closed batches wait here, in order, until an instance is free, so a
busy pool never hides work from the gateway. Each request carries a future that
is resolved exactly once: with its outputs, or with a `RequestFailed`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from backends import BackendError, BackendUnavailable, FaasPool, Instance, Pool
from backends.mixed_pool import MixedPool
from batching import Batch, BatchPolicy, BatchQueue, Request, concat_inputs, split_outputs
from batching.admission import Admission, ServiceMeter, admit
from batching.types import earliest_deadline
from batching.overrun import OverrunTracker
from scheduler import pick_instance

from scheduler import Backlog
from .metrics import ModelMetrics

log = logging.getLogger("sluice.runner")


class RequestFailed(Exception):
    """A request could not be served; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class Placer(Protocol):
    def observe(self, now: float) -> None: ...

    def choose(self, batch: Batch, now: float) -> Instance | None: ...

    def finished(self, instance: Instance, now: float) -> None: ...


@dataclass(slots=True)
class _Work:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future
    retried: bool = False  # its batch failed on an instance and ran again: a fault, not a misprediction


class ModelRunner:
    def __init__(
        self,
        name: str,
        policy: BatchPolicy,
        pool: Pool,
        metrics: ModelMetrics,
        *,
        max_attempts: int = 3,
        outage_grace_s: float = 5.0,
        placer: Placer | None = None,
        max_pending: int = 4096,
    ) -> None:
        self.name = name
        self.placer = placer  # with a scheduler: it picks each batch's instance (gateway.scheduling)
        self.queue = BatchQueue(policy)
        self.pool = pool
        self.max_attempts = max_attempts
        self.outage_grace_s = outage_grace_s
        self._outage: asyncio.TimerHandle | None = None
        self.metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._ready = Backlog()
        self.max_pending = max_pending
        self.pending = 0  # admitted and not yet answered
        self.arrivals = 0  # requests offered, admitted or refused (the cluster counts them)
        self.meter = ServiceMeter()  # s(rows) on a slot: admission control's prediction
        # How far off admission's predictions run, learnt from the answers (see `_answered`).
        self._drain_misses = OverrunTracker(0.995, window=2048, minimum=32, ceiling_s=4.0)
        self._short_misses = OverrunTracker(0.995, window=2048, minimum=32, ceiling_s=1.0)
        self.admission_margin = 0.0  # the drain behind a backlog is stretched by 1 + this
        self.admission_allowance_s = 0.0  # added to every prediction
        self._answers = 0
        self._running: set[asyncio.Task] = set()
        self._running_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Deadline-aware closing allows for how late batches really are (`OverrunTracker`).
        # Not on a function: its cold starts are a probability the tuner weighs, not lateness.
        on_faas = isinstance(pool, (FaasPool, MixedPool))
        self._overruns = OverrunTracker() if hasattr(policy, "allow") and not on_faas else None
        self._recorded = 0
        pool.on_capacity(self._dispatch)
        # Computed when Prometheus scrapes, not on every request.
        metrics.queue_depth.set_function(lambda: self.waiting)
        metrics.healthy_instances.set_function(lambda: sum(i.healthy for i in pool.instances))
        metrics.admission_margin.set_function(lambda: self.admission_margin)
        metrics.admission_allowance.set_function(lambda: self.admission_allowance_s)

    @property
    def waiting(self) -> int:
        """Requests in the open batch plus those in closed batches not yet sent."""
        return len(self.queue) + sum(len(b.requests) for b in self._ready)

    def submit(
        self, request_id: str, inputs: dict[str, np.ndarray], rows: int, deadline: float | None,
        *, priority: int = 0, slo_s: float | None = None, edge_s: float = 0.0,
    ) -> asyncio.Future:  # fmt: skip
        """Queue one validated request; the returned future resolves to its outputs.
        Refused at once (429) when it is predicted to miss its deadline, or its wait behind
        the backlog would break the model's SLO `slo_s`, or `max_pending` requests are
        already waiting. `edge_s`: what the request loses outside this clock (the event
        loop's lag, reading it and writing its answer), taken off the SLO."""
        if self._draining:
            raise RequestFailed(503, "the gateway is shutting down", retry_after=1.0)
        now = time.monotonic()
        self.arrivals += 1
        admission = self._admission(now, rows, priority, deadline, slo_s, edge_s)
        if not admission.admitted:
            self._refuse(admission)
        if self.placer is not None:
            self.placer.observe(now)
        future = self._loop.create_future()
        work = _Work(inputs, future)
        request = Request(request_id, now, size=rows, deadline=deadline, priority=priority, payload=work)
        self._idle.clear()
        self.pending += 1
        corrections = (self.admission_margin, self.admission_allowance_s)  # as the prediction used them
        future.add_done_callback(partial(self._answered, now, admission, corrections, request))
        self._ready.arrived(request)
        closed = self.queue.push(request, now)
        if closed:
            self._accept(closed)
        elif not self._ready:
            self._dispatch()  # an idle instance takes it now, if the policy is work-conserving
        self._arm_timer()
        return future

    def screen(self, deadline: float | None, slo_s: float | None, edge_s: float = 0.0) -> None:
        """Refuse, before its body is read and parsed, a request that admission would refuse
        whatever the body holds: taken at its most favourable (one row, the highest priority
        waiting, no deadline of its own beyond `deadline`). Under overload this is most
        requests, and parsing them would take the CPU the instances need."""
        if self._draining:
            raise RequestFailed(503, "the gateway is shutting down", retry_after=1.0)
        now = time.monotonic()
        admission = self._admission(now, 1, self._ready.top_priority(), deadline, slo_s, edge_s)
        if not admission.admitted:
            self.arrivals += 1
            self._refuse(admission)

    def _refuse(self, admission: Admission) -> None:
        self.metrics.shed.inc()
        raise RequestFailed(429, f"model {self.name!r} cannot answer in time: {admission.reason}",
                            retry_after=admission.retry_after_s)  # fmt: skip

    def _admission(
        self, now: float, rows: int, priority: int, deadline: float | None, slo_s: float | None, edge_s: float
    ) -> Admission:
        slots = sum(i.max_inflight for i in self.pool.instances if i.healthy)
        limits = self.queue.policy.limits(now)
        due = self.queue.next_wakeup()  # the open batch closes by then; else a new one waits up to T
        max_wait = max(0.0, due - now) if due is not None else limits.max_wait
        if limits.work_conserving:  # the open batch goes as soon as the work ahead (the drain) is done
            max_wait = 0.0
        left = deadline - now if deadline is not None else float("inf")
        if slo_s is not None:  # a loop lagging half the SLO answers no one in time: refuse until it catches up
            slo_s = max(0.0, slo_s - edge_s)
        slo_binds = slo_s is not None and slo_s < left
        return admit(
            # Ahead: the closed batches waiting, and those running (counted whole: a bias
            # to the safe side, which the corrections learn the rest of).
            ahead_rows=self._ready.rows_ahead(priority) + self._running_rows,
            ahead_batches=self._ready.batches_ahead(priority) + len(self._running),
            rows=rows, pending=self.pending, max_pending=self.max_pending, slots=slots, meter=self.meter,
            max_wait_s=max_wait, budget_s=slo_s if slo_binds else left, margin=self.admission_margin,
            allowance_s=self.admission_allowance_s, budget_is_slo=slo_binds,
        )  # fmt: skip

    def _answered(
        self, arrival: float, admission: Admission, corrections: tuple[float, float], request: Request,
        future: asyncio.Future,
    ) -> None:
        """One answer given. Served ones teach admission how far off its predictions run:
        behind a backlog, as a ratio of the drain (the throughput's error grows with it);
        with a short queue, in seconds. Under overload every admitted request is predicted
        right at the edge, so the share answered late is the share of misses beyond the
        correction: take the 99.5th percentile, half the tail a p99 SLO allows. Answers
        delayed by a retry after an instance failed teach nothing: a fault, not noise.
        A cancelled future is a client that went away: its request leaves the queue."""
        self.pending -= 1
        if future.cancelled():
            self._abandoned(request)
            return
        work = request.payload
        if admission.predicted_s <= 0 or work.retried or future.exception() is not None:
            return
        took = time.monotonic() - arrival
        drain, (margin, allowance) = admission.drain_s, corrections
        if drain > 0.5 * admission.predicted_s:
            rest = admission.predicted_s - drain * (1.0 + margin) - allowance
            self._drain_misses.record((took - rest) / drain - 1.0)
        else:
            self._short_misses.record(took - (admission.predicted_s - allowance))
        self._answers += 1
        if self._answers % 32 == 0:  # two sorts of 2048 values: every 8th answer, 5% of a loaded gateway's CPU
            self.admission_margin = self._drain_misses.allowance()
            self.admission_allowance_s = self._short_misses.allowance()

    def _abandoned(self, request: Request) -> None:
        """The client of `request` has gone (its handler was cancelled). Still waiting: it
        leaves the open batch or its closed batch, so it costs the living nothing. Already
        running: its answer is dropped when the batch returns."""
        if self.queue.withdraw(request):
            self._ready.left([request])
            self._arm_timer()
        elif not self._ready.withdraw(request):
            self.metrics.abandoned_running.inc()
            return
        self.metrics.abandoned_queued.inc()
        self._check_idle()

    def _arm_timer(self) -> None:
        due = self.queue.next_wakeup()
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        if due is None:
            self._timer = None
        else:
            self._timer = self._loop.call_later(max(0.0, due - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        due, self._timer, self._timer_due = self._timer_due, None, None
        # The loop's timers round to its clock tick and may fire a little early;
        # never let that stall the batch.
        now = max(time.monotonic(), due or 0.0)
        batches = self.queue.poll(now)
        for batch in batches:
            batch.tags["planned"] = due  # its lateness counts as overrun
        self._enqueue(batches)
        self._dispatch(at=now)  # and a hold may have run out while an instance is free
        self._arm_timer()

    def _accept(self, batches: list[Batch]) -> None:
        if batches:
            self._enqueue(batches)
            self._dispatch()

    def _enqueue(self, batches: list[Batch]) -> None:
        """Closed batches join the backlog, counted by why they closed."""
        for batch in batches:
            self.metrics.batches_closed(batch.reason).inc()
            self._ready.add(batch)

    def _dispatch(self, at: float = 0.0) -> None:
        """Send closed batches to free instances, and the open batch too when the policy
        is work-conserving; `at`: the timer's due time, when a timer called (it may fire
        a little early, and must not then find the hold still running)."""
        instances = self.pool.instances
        released = False
        while True:
            now = time.monotonic()
            batch = self._ready.peek()
            if batch is None:
                # Nothing closed waits: a free instance takes the open batch now, when the
                # policy is work-conserving (`BatchQueue.idle`).
                if self.placer is not None or not len(self.queue) or not any(i.accepts(now) for i in instances):
                    break
                idle = self.queue.idle(max(now, at))
                if not idle:
                    break
                released = True
                self._enqueue(idle)
                continue
            if self.placer is not None:
                chosen = self.placer.choose(batch, now)
                if chosen is None:
                    break
                instance = chosen
            else:
                usable = [i for i in instances if i.breaker.allows(now, i.inflight)]
                index = pick_instance(usable, now)
                if index is None:
                    break
                instance = usable[index]
            self._ready.pop(batch)
            instance.inflight += 1
            instance.high_water = max(instance.high_water, instance.inflight)
            instance.dispatched += 1
            instance.last_dispatch = now
            task = self._loop.create_task(self._run(batch, instance))
            self._running.add(task)
            task.add_done_callback(self._finished)
        if released:
            self._arm_timer()
        if self._ready and self._outage is None and not any(i.healthy for i in instances):
            # Nothing can run these batches now. A worker restarts in about a second;
            # past the grace, answer rather than let clients wait out their deadlines.
            self._outage = self._loop.call_later(self.outage_grace_s, self._end_of_grace)
        self._check_idle()

    def _end_of_grace(self) -> None:
        self._outage = None
        if any(i.healthy for i in self.pool.instances):
            self._dispatch()
            return
        error = RequestFailed(503, f"no instance of model {self.name!r} is available", retry_after=self.outage_grace_s)
        log.warning("no healthy instance; failing waiting batches", extra={"model": self.name, "batches": len(self._ready)})
        for batch in self._ready.clear():
            self._fail(batch.requests, error)
        self._check_idle()

    async def _run(self, batch: Batch, instance: Instance) -> None:
        live = [r for r in batch.requests if not r.payload.future.done()]  # not yet answered (504, ...)
        m = self.metrics
        running_rows = 0
        try:
            if not live:
                return
            now = time.monotonic()
            if batch.attempts == 0 and "bisected" not in batch.tags:
                for r in live:
                    m.queue_wait.observe(now - r.arrival)
            rows = [r.size for r in live]
            running_rows = sum(rows)
            self._running_rows += running_rows
            m.batch_size.observe(running_rows)
            m.dispatches(instance.name).inc()
            m.batches_in_flight.inc()
            try:
                inputs = concat_inputs([r.payload.inputs for r in live])
                outputs = await instance.backend.infer(inputs, deadline=earliest_deadline(live))
                results = split_outputs(outputs, rows)
            finally:
                m.batches_in_flight.dec()
        except BackendUnavailable as exc:
            m.backend_errors(instance.name, "unavailable").inc()
            if instance.breaker.failure(time.monotonic()):
                log.warning("circuit opened", extra={"model": self.name, "backend": instance.name,
                                                     "cooldown_s": instance.breaker.cooldown_s})  # fmt: skip
            self.pool.report_failure(instance)
            batch.attempts += 1
            if batch.attempts < self.max_attempts:
                log.warning("batch retried elsewhere", extra={"model": self.name, "backend": instance.name, "error": str(exc)})
                m.retries.inc()
                for r in live:
                    r.payload.retried = True
                batch.requests = live
                self._ready.retry(batch)
            else:
                self._fail(live, RequestFailed(503, f"no backend could run the batch: {exc}", retry_after=1.0))
        except (BackendError, ValueError) as exc:  # ValueError: outputs that do not split back per request
            instance.breaker.success()  # it answered: the instance works, the batch did not
            m.backend_errors(instance.name, "error").inc()
            if len(live) > 1:
                self._bisect(batch, live, exc)
            else:
                status = exc.status if isinstance(exc, BackendError) else 502
                self._fail(live, RequestFailed(status, f"{instance.name}: {exc}" if isinstance(exc, ValueError) else str(exc)))
        except Exception as exc:
            log.exception("batch failed unexpectedly")
            self._fail(live, RequestFailed(500, f"internal error: {exc.__class__.__name__}"))
        else:
            instance.breaker.success()
            for request, result in zip(live, results):
                if not request.payload.future.done():
                    request.payload.future.set_result(result)
            elapsed = time.monotonic() - now
            self.meter.record(sum(rows), elapsed)
            if self._overruns is not None and batch.attempts == 0:
                self._record_overrun(batch, sum(rows), now)
        finally:
            self._running_rows -= running_rows
            instance.inflight -= 1
            if self.placer is not None:
                self.placer.finished(instance, time.monotonic())
            self._loop.call_soon(self._dispatch)

    def _bisect(self, batch: Batch, live: list[Request], exc: Exception) -> None:
        """The backend refused the batch's content: run each half on its own, so that the
        requests at fault get the error and the others their results (at most 2 log2(n)
        more batches for one bad request)."""
        self.metrics.bisections.inc()
        log.info("batch failed; bisecting", extra={"model": self.name, "rows": len(live), "error": str(exc)})
        half = len(live) // 2
        now = time.monotonic()
        for part in (live[half:], live[:half]):  # retry() puts each first: the earlier half goes first
            piece = Batch(part, now, batch.reason, attempts=batch.attempts, tags={"bisected": True})
            self._ready.retry(piece)

    def limits_changed(self) -> None:
        """The policy's limits moved (a re-tune, a new allowance): the open batch may be due
        sooner or later than the timer says."""
        self._accept(self.queue.poll(time.monotonic()))
        self._arm_timer()

    def _record_overrun(self, batch: Batch, rows: int, started: float) -> None:
        """Answered later than predicted by: the timer's lateness plus the service time
        beyond s(b). Waiting for a free instance is not counted: that is load, not noise.
        Nothing to measure against until the policy has made its first choice."""
        policy = self.queue.policy
        if getattr(policy, "choice", None) is None:
            return
        planned = batch.tags.get("planned", batch.closed_at)
        overrun = (batch.closed_at - planned) + (time.monotonic() - started - policy.base_service(rows))  # type: ignore[attr-defined]
        tracker = self._overruns
        tracker.record(overrun, len(batch.requests))  # type: ignore[union-attr]
        self._recorded += 1
        if self._recorded % 32 == 0:
            policy.allow(tracker.allowance())  # type: ignore[union-attr, attr-defined]
            self.limits_changed()

    @staticmethod
    def _fail(requests: list[Request], error: RequestFailed) -> None:
        for r in requests:
            if not r.payload.future.done():
                r.payload.future.set_exception(error)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._ready and not len(self.queue) and not self._running:
            self._idle.set()

    async def drain(self) -> None:
        """Close every pending batch now and wait until all are answered; refuse new work."""
        self._draining = True
        now = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_due = None, None
        self._accept(self.queue.drain(now))
        self._check_idle()
        await self._idle.wait()

    def fail_pending(self, error: RequestFailed) -> None:
        """Answer everything still waiting with `error` (the last step of a forced stop)."""
        for batch in self._ready.clear():
            self._fail(batch.requests, error)
        for batch in self.queue.drain(time.monotonic()):
            self._ready.left(batch.requests)
            self._fail(batch.requests, error)
