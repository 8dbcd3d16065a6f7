"""The per-model request queue, as a pure state machine.

Time is passed in; nothing here sleeps or reads a clock. The owner calls
`push` on every arrival, `poll` whenever `next_wakeup()` comes due, and `drain`
when it shuts down; each returns the batches that closed. That keeps the very
same object usable by the live gateway (real time) and the simulator (virtual time).

A batch closes when:
- it holds B rows ("size");
- its oldest request has waited T ("timeout"): the timer is anchored at that
  request's arrival, not at when the owner happened to wake up, so a late wake-up
  never stretches anyone's wait;
- deadline-aware closing, when the policy predicts service times: the earliest
  deadline among its requests is nearer than the predicted time to answer a batch of
  its current rows, or would be if the arriving request joined ("deadline"; the
  newcomer then opens the next batch). Waiting or growing longer could only make
  that request late; closed now, the batch still answers it in time if the
  prediction holds;
- an instance is free and no closed batch waits for one, under work-conserving
  limits ("idle"), once the batch holds `idle_rows` rows or its oldest request has
  waited `hold_s`: the owner asks `idle(now)` whenever an instance is free, and at
  every due `next_wakeup()`;
- the owner drains the queue ("drain").

Invariant between calls: fewer than B rows are pending, so every pending request
belongs to the batch that the timer of the head request will close.
"""

from __future__ import annotations

import math
from collections import deque

from .policy import BatchLimits, BatchPolicy
from .types import Batch, Request


class BatchQueue:
    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._pending: deque[Request] = deque()
        self._rows = 0
        self._due: float | None = None  # when the open batch times out
        self._own_deadline = math.inf  # the earliest deadline pending requests brought themselves
        self._limits = BatchLimits(1, 0.0)  # the limits in force at the last push or poll
        self._polled = -math.inf  # when the owner last polled (a hold's end is a wakeup until then)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def work_conserving(self) -> bool:
        """Whether the limits in force (at the last push or poll) release the open batch to an idle instance."""
        return self._limits.work_conserving

    @property
    def pending(self) -> tuple[Request, ...]:
        return tuple(self._pending)

    def push(self, request: Request, now: float) -> list[Batch]:
        """Add an arrival; return the batches it closed (at most two while B holds still)."""
        if request.size < 1:
            raise ValueError("a request must add at least one row")
        self.policy.observe_arrival(now)
        closed = self.poll(now)
        limits = self._limits = self.policy.limits(now)
        own = math.inf if request.deadline is None else request.deadline
        # A request that would overflow the open batch closes it first, so that no
        # batch exceeds B unless a single request is itself larger than B; one that
        # would make it late (its rows add service time) closes it first too.
        if self._pending and self._rows + request.size > limits.max_size:
            closed += self._release(now, "size", limits.max_size)
        elif self._pending and limits.service_s:
            deadline = min(self._earliest_deadline(limits), own)
            if now >= deadline - limits.predicted_service(self._rows + request.size):
                closed += self._release(now, "deadline", limits.max_size)
        if not self._pending:
            # The timer is fixed when the batch opens, with the T in force then.
            self._due = request.arrival + limits.max_wait
        self._pending.append(request)
        self._rows += request.size
        self._own_deadline = min(self._own_deadline, own)
        if self._rows >= limits.max_size:
            closed.append(self._close(len(self._pending), now, "size"))
        elif limits.service_s and self._slack_gone(now, limits):
            closed += self._release(now, "deadline", limits.max_size)
        return closed

    def poll(self, now: float) -> list[Batch]:
        """Close the open batch if its oldest request has waited T by `now`, or if
        its earliest deadline no longer leaves time to wait."""
        if not self._pending:
            return []
        self._polled = now
        limits = self._limits = self.policy.limits(now)
        if self._due is not None and now >= self._due:
            return self._release(now, "timeout", limits.max_size)
        if limits.service_s and self._slack_gone(now, limits):
            return self._release(now, "deadline", limits.max_size)
        return []

    def next_wakeup(self) -> float | None:
        """When the open batch closes unless more requests come first; None if the queue is empty."""
        if not self._pending:
            return None
        limits = self._limits
        due = self._due
        closing = self._closing_time(limits) if limits.service_s else None
        if closing is not None:
            due = min(due, closing)  # type: ignore[type-var]
        if limits.work_conserving and self._rows < limits.idle_rows:
            held = self._pending[0].arrival + limits.hold_s
            if held > self._polled:  # once polled past, an instance that frees asks idle() itself
                due = min(due, held)  # type: ignore[type-var]
        return due

    def _earliest_deadline(self, limits: BatchLimits) -> float:
        """The pending requests' earliest deadline: their own, or the policy's budget after
        the oldest one's arrival (the queue is in arrival order), under the limits in force."""
        budget = math.inf if limits.deadline_s is None else self._pending[0].arrival + limits.deadline_s
        return min(self._own_deadline, budget)

    def _closing_time(self, limits: BatchLimits) -> float | None:
        """When deadline-aware closing releases the open batch as it stands; None if it never does."""
        if not limits.service_s or not self._pending:
            return None
        deadline = self._earliest_deadline(limits)
        return None if deadline == math.inf else deadline - limits.predicted_service(self._rows)

    def _slack_gone(self, now: float, limits: BatchLimits) -> bool:
        """Is the earliest deadline nearer than the predicted time to answer the open batch?
        Computed as `_closing_time` is, so a poll at `next_wakeup()` always closes."""
        closing = self._closing_time(limits)
        return closing is not None and now >= closing

    def idle(self, now: float) -> list[Batch]:
        """An instance is free to run a batch now and no closed batch waits for it. Under
        work-conserving limits the open batch goes at once (reason "idle") if it holds
        `idle_rows` rows or its oldest request has waited `hold_s`; otherwise it keeps
        waiting for B rows or T. Both drivers call this whenever they see a free instance
        and at every due `next_wakeup()`, so a pool never idles while a request it could
        run is held back further than the limits say."""
        if not self._pending:
            return []
        limits = self._limits = self.policy.limits(now)
        if not limits.work_conserving:
            return []
        if self._rows < limits.idle_rows and now < self._pending[0].arrival + limits.hold_s:
            return []  # held: the load needs fuller batches than this
        return self._release(now, "idle", limits.max_size)

    def withdraw(self, request: Request) -> bool:
        """Take a pending request out of the open batch (its client has gone, say); False
        when it is not pending. The batch's timer stays where it was: it may close a little
        early for the requests left, never late."""
        try:
            self._pending.remove(request)
        except ValueError:
            return False
        self._rows -= request.size
        if not self._pending:
            self._due, self._own_deadline = None, math.inf
        elif request.deadline is not None and request.deadline <= self._own_deadline:
            self._own_deadline = min((r.deadline for r in self._pending if r.deadline is not None), default=math.inf)
        return True

    def drain(self, now: float) -> list[Batch]:
        """Release everything pending, in order, in batches of at most B rows."""
        return self._release(now, "drain", self.policy.limits(now).max_size)

    def _release(self, now: float, reason: str, max_size: int) -> list[Batch]:
        """Close everything pending, packed greedily in order into batches of at most
        `max_size` rows. Pending rows are below B unless the policy lowered B since
        they arrived; then this keeps every batch within the new B."""
        batches: list[Batch] = []
        while self._pending:
            count, rows = 0, 0
            for request in self._pending:
                if count and rows + request.size > max_size:
                    break
                count += 1
                rows += request.size
            batches.append(self._close(count, now, reason))
        return batches

    def _close(self, count: int, now: float, reason: str) -> Batch:
        taken = [self._pending.popleft() for _ in range(count)]
        self._rows -= sum(r.size for r in taken)
        if not self._pending:
            self._own_deadline = math.inf
        return Batch(requests=taken, closed_at=now, reason=reason)

