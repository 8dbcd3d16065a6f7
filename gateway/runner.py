"""One model's live driver of the dispatch core (`scheduler.Dispatcher`).

The core decides: admission, closing, the backlog, placement, retries, bisection, the
outage grace. The runner carries its decisions out on the event loop: each request
carries a future resolved exactly once (its outputs, or a `RequestFailed`), each batch
sent becomes a task that calls its instance's backend and reports how it ended, and one
timer (`CoreTimer`) wakes the core when it asked to be woken. The clock is injected:
`LoopClock` (`time.monotonic()`: uvloop's `loop.time()` only moves in whole
milliseconds, too coarse for waits of a few milliseconds and for the arrival
statistics the tuner fits), or a test's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from backends import BackendError, BackendUnavailable, Pool
from batching import Request, concat_inputs, split_outputs
from batching.admission import Admission
from batching.types import earliest_deadline
from scheduler import Actions, Clock, CoreTimer, Dispatcher, Send

from .metrics import ModelMetrics

log = logging.getLogger("sluice.runner")


class RequestFailed(Exception):
    """A request could not be served; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class LoopClock:
    """The monotonic clock, with timers on the running event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(max(0.0, when - time.monotonic()), callback)


@dataclass(slots=True)
class _Work:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future


def _answered(request: Request) -> bool:
    return request.payload.future.done()


class ModelRunner:
    def __init__(self, core: Dispatcher, pool: Pool, metrics: ModelMetrics, *, clock: Clock | None = None) -> None:
        self.core, self.pool, self.metrics = core, pool, metrics
        self.name = core.name
        core.answered = _answered
        self._loop = asyncio.get_running_loop()
        self.clock = clock or LoopClock(self._loop)
        self.timer = CoreTimer(self.clock, core.next_wakeup, self._due)
        self._tasks: set[asyncio.Task] = set()
        # Told of every answered batch (inputs, outputs), after its answers are set: drift watching.
        self.observers: list[Callable[[dict, dict], None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        pool.on_capacity(self._capacity)
        # Computed when Prometheus scrapes, not on every request.
        metrics.queue_depth.set_function(lambda: core.waiting)
        metrics.healthy_instances.set_function(lambda: sum(i.healthy for i in pool.instances))
        metrics.admission_margin.set_function(lambda: core.admission_margin)
        metrics.admission_allowance.set_function(lambda: core.admission_allowance_s)

    @property
    def queue(self):
        return self.core.queue

    @property
    def waiting(self) -> int:
        return self.core.waiting

    @property
    def arrivals(self) -> int:
        return self.core.arrivals

    @property
    def pending(self) -> int:
        return self.core.pending

    def submit(
        self, request_id: str, inputs: dict[str, np.ndarray], rows: int, deadline: float | None,
        *, priority: int = 0, slo_s: float | None = None, edge_s: float = 0.0,
    ) -> asyncio.Future:  # fmt: skip
        """Queue one validated request; the returned future resolves to its outputs.
        Refused at once (429) when the core's admission says it cannot be answered in time.
        `edge_s`: what the request loses outside this clock (the event loop's lag, reading
        it and writing its answer), taken off the SLO."""
        self._refuse_if_draining()
        now = self.clock.now()
        future = self._loop.create_future()
        request = Request(request_id, now, size=rows, deadline=deadline, priority=priority, payload=_Work(inputs, future))
        corrections = self.core.corrections  # as the prediction uses them
        admission, actions = self.core.submit(request, now, slo_s, edge_s)
        if not admission.admitted:
            self._refuse(admission)
        self._idle.clear()
        future.add_done_callback(partial(self._answered, admission, corrections, request))
        self._act(actions)
        return future

    def screen(self, deadline: float | None, slo_s: float | None, edge_s: float = 0.0) -> None:
        """Refuse, before its body is read and parsed, a request that admission would refuse
        whatever the body holds. Under overload this is most requests, and parsing them
        would take the CPU the instances need."""
        self._refuse_if_draining()
        admission = self.core.screen(self.clock.now(), deadline, slo_s, edge_s)
        if not admission.admitted:
            self._refuse(admission)

    def _refuse_if_draining(self) -> None:
        if self.core.draining:
            raise RequestFailed(503, f"model {self.name!r} is draining: the gateway is shutting down, or this version "
                                     "is being unloaded", retry_after=1.0)  # fmt: skip

    def _refuse(self, admission: Admission) -> None:
        self.metrics.shed.inc()
        raise RequestFailed(429, f"model {self.name!r} cannot answer in time: {admission.reason}",
                            retry_after=admission.retry_after_s)  # fmt: skip

    def _answered(
        self, admission: Admission, corrections: tuple[float, float], request: Request, future: asyncio.Future
    ) -> None:
        """One answer given. A cancelled future is a client that went away: its request
        leaves the queue, so it costs the living nothing (or, running, its answer is dropped)."""
        now = self.clock.now()
        cancelled = future.cancelled()
        self.core.answer(request, now, admission, corrections, served=not cancelled and future.exception() is None)
        if not cancelled:
            return
        if self.core.withdraw(request, now) == "running":
            self.metrics.abandoned_running.inc()
            return
        self.metrics.abandoned_queued.inc()
        self.timer.rearm()
        self._check_idle()

    # -- carrying out the core's decisions ---------------------------------------------

    def _act(self, actions: Actions) -> None:
        m = self.metrics
        for batch in actions.closed:
            m.batches_closed(batch.reason).inc()
        for send in actions.sends:
            if self.core.scheduler is not None:
                m.placed("faas" if send.on_function else "pool")
            task = self._loop.create_task(self._run(send))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        for failure in actions.failures:
            error = RequestFailed(failure.status, failure.message, failure.retry_after)
            for r in failure.requests:
                if not r.payload.future.done():
                    r.payload.future.set_exception(error)
        for event in actions.events:
            if event == "retried":
                m.retries.inc()
            elif event == "bisected":
                m.bisections.inc()
            elif event == "grace-ended":
                log.warning("no healthy instance; failed the waiting batches", extra={"model": self.name})
        self.timer.rearm()
        self._check_idle()

    def _due(self, now: float, planned: float) -> None:
        self._act(self.core.due(now, planned))

    def _capacity(self) -> None:
        self._act(self.core.dispatch(self.clock.now()))

    def limits_changed(self) -> None:
        """The policy's limits moved (a re-tune, a new allowance): the open batch may be due
        sooner or later than the timer says."""
        self._act(self.core.limits_changed(self.clock.now()))

    async def _run(self, send: Send) -> None:
        m, seat, live = self.metrics, send.seat, send.requests
        batch = send.batch
        if batch.attempts == 0 and "bisected" not in batch.tags:
            for r in live:
                m.queue_wait.observe(send.started - r.arrival)
        m.batch_size.observe(send.rows)
        m.dispatches(seat.name).inc()
        m.batches_in_flight.inc()
        try:
            try:
                inputs = concat_inputs([r.payload.inputs for r in live])
                outputs = await seat.backend.infer(inputs, deadline=earliest_deadline(live))
                results = split_outputs(outputs, [r.size for r in live])
            finally:
                m.batches_in_flight.dec()
        except BackendUnavailable as exc:
            m.backend_errors(seat.name, "unavailable").inc()
            self.pool.report_failure(seat)
            actions = self.core.unavailable(send, self.clock.now(), str(exc))
            if "breaker-opened" in actions.events:
                log.warning("circuit opened", extra={"model": self.name, "backend": seat.name,
                                                     "cooldown_s": self.core.fleet.breaker(seat).cooldown_s})  # fmt: skip
            if "retried" in actions.events:
                log.warning("batch retried elsewhere", extra={"model": self.name, "backend": seat.name, "error": str(exc)})
        except (BackendError, ValueError) as exc:  # ValueError: outputs that do not split back per request
            m.backend_errors(seat.name, "error").inc()
            if isinstance(exc, BackendError):
                status, message = exc.status, str(exc)
            else:
                status, message = 502, f"{seat.name}: {exc}"
            if len(live) > 1:
                log.info("batch failed; bisecting", extra={"model": self.name, "rows": len(live), "error": str(exc)})
            actions = self.core.refused(send, self.clock.now(), status, message)
        except Exception as exc:
            log.exception("batch failed unexpectedly")
            actions = self.core.crashed(send, self.clock.now(), f"internal error: {exc.__class__.__name__}")
        else:
            for request, result in zip(live, results):
                if not request.payload.future.done():
                    request.payload.future.set_result(result)
            for observe in self.observers:  # after the answers: the handlers resume first
                self._loop.call_soon(observe, inputs, outputs)
            actions = self.core.succeeded(send, self.clock.now())
        self._act(actions)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._check_idle()

    def _check_idle(self) -> None:
        if self.core.idle and not self._tasks:
            self._idle.set()

    async def drain(self) -> None:
        """Close every pending batch now and wait until all are answered; refuse new work."""
        self._act(self.core.drain(self.clock.now()))
        await self._idle.wait()

    def fail_pending(self, error: RequestFailed) -> None:
        """Answer everything still waiting with `error` (the last step of a forced stop)."""
        self.timer.cancel()
        for failure in self.core.fail_pending(self.clock.now(), error.status, str(error)):
            for r in failure.requests:
                if not r.payload.future.done():
                    r.payload.future.set_exception(error)
