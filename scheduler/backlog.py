"""The closed batches of one model waiting for an instance, highest priority first.

Within one priority, batches go in the order they closed. The backlog also counts the
rows waiting per priority, from a request's admission until its batch is sent
(the open batch included): what a new request waits behind, for admission control.
A request whose client has gone is withdrawn from the batch that holds it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator

from batching import Batch, Request


def priority_of(batch: Batch) -> int:
    return max((r.priority for r in batch.requests), default=0)


class Backlog:
    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()
        self._rows: Counter[int] = Counter()
        self._prioritised = False  # any priority other than 0 seen: peek must look further
        self._holding: dict[int, Batch] = {}  # id(request) -> the waiting batch that holds it

    def arrived(self, request: Request) -> None:
        self._rows[request.priority] += request.size
        if request.priority:
            self._prioritised = True

    def left(self, requests: list[Request]) -> None:
        """Requests answered without their batch being sent (failed, drained)."""
        for r in requests:
            self._rows[r.priority] -= r.size

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)
        self._hold(batch)

    def retry(self, batch: Batch) -> None:
        """A batch sent and back for another try: first in line, and waiting again."""
        self._batches.appendleft(batch)
        for r in batch.requests:
            self._rows[r.priority] += r.size
        self._hold(batch)

    def _hold(self, batch: Batch) -> None:
        for r in batch.requests:
            self._holding[id(r)] = batch

    def withdraw(self, request: Request) -> bool:
        """Take `request` out of the waiting batch that holds it (dropping the batch once
        empty); False when no waiting batch holds it (it is running, or still open)."""
        batch = self._holding.pop(id(request), None)
        if batch is None:
            return False
        batch.requests.remove(request)
        self.left([request])
        if not batch.requests:
            self._batches.remove(batch)
        return True

    def peek(self) -> Batch | None:
        if not self._batches:
            return None
        if not self._prioritised:
            return self._batches[0]
        return max(self._batches, key=priority_of)  # the first of the highest priority

    def ordered(self) -> list[Batch]:
        """The waiting batches in the order they go: highest priority first, then as they closed."""
        if not self._prioritised:
            return list(self._batches)
        return sorted(self._batches, key=lambda b: -priority_of(b))  # stable: closing order within a priority

    def pop(self, batch: Batch) -> None:
        """`batch` is being sent: it no longer waits."""
        if self._batches[0] is batch:
            self._batches.popleft()
        else:
            self._batches.remove(batch)
        self.left(batch.requests)
        for r in batch.requests:
            self._holding.pop(id(r), None)

    def rows_ahead(self, priority: int) -> int:
        """Rows waiting that a request of `priority` would not pass."""
        if not self._prioritised:
            return self._rows[0]
        return sum(rows for p, rows in self._rows.items() if p >= priority)

    def top_priority(self) -> int:
        """The highest priority with rows waiting (0 when none do)."""
        if not self._prioritised:
            return 0
        return max((p for p, rows in self._rows.items() if rows > 0), default=0)

    def batches_ahead(self, priority: int) -> int:
        """Closed batches waiting that a request of `priority` would not pass."""
        if not self._prioritised:
            return len(self._batches)
        return sum(1 for b in self._batches if priority_of(b) >= priority)

    def clear(self) -> list[Batch]:
        batches = list(self._batches)
        self._batches.clear()
        self._holding.clear()
        for batch in batches:
            self.left(batch.requests)
        return batches

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches)
