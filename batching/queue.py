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
- the owner drains the queue ("drain").

Invariant between calls: fewer than B rows are pending, so every pending request
belongs to the batch that the timer of the head request will close.
"""

from __future__ import annotations

from collections import deque

from .policy import BatchPolicy
from .types import Batch, Request


class BatchQueue:
    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._pending: deque[Request] = deque()
        self._rows = 0
        self._due: float | None = None  # when the open batch times out

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def pending(self) -> tuple[Request, ...]:
        return tuple(self._pending)

    def push(self, request: Request, now: float) -> list[Batch]:
        """Add an arrival; return the batches it closed (at most two while B holds still)."""
        if request.size < 1:
            raise ValueError("a request must add at least one row")
        self.policy.observe_arrival(now)
        limits = self.policy.limits(now)
        closed = self.poll(now)
        # A request that would overflow the open batch closes it first, so that no
        # batch exceeds B unless a single request is itself larger than B.
        if self._pending and self._rows + request.size > limits.max_size:
            closed += self._release(now, "size", limits.max_size)
        if not self._pending:
            # The timer is fixed when the batch opens, with the T in force then.
            self._due = request.arrival + limits.max_wait
        self._pending.append(request)
        self._rows += request.size
        if self._rows >= limits.max_size:
            closed.append(self._close(len(self._pending), now, "size"))
        return closed

    def poll(self, now: float) -> list[Batch]:
        """Close the open batch if its oldest request has waited T by `now`."""
        due = self.next_wakeup()
        if due is not None and now >= due:
            return self._release(now, "timeout", self.policy.limits(now).max_size)
        return []

    def next_wakeup(self) -> float | None:
        """When the open batch times out; None if the queue is empty."""
        return self._due if self._pending else None

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
        return Batch(requests=taken, closed_at=now, reason=reason)
