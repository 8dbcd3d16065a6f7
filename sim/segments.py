"""Batches formed in bulk between a policy's changes of limits: the fast path for adaptive policies.

An adaptive policy's (B, T) is piecewise constant: it changes only when the policy,
told of an arrival, re-tunes. On a function without a concurrency limit and without
admission nothing the run does feeds back into the policy (its allowance moves with
measured overruns, which the core does not track on a function), so its limits, arrival
by arrival, follow from the arrival times alone: `limit_runs` tells the policy of every
arrival in order, exactly as the queue would, and records where its limits change.

Within a run of constant limits the batches follow from the arrival times as
`batching.formation` forms them, extended to deadline-aware closing (a batch also
closes when its oldest request's SLO budget, less the predicted close-to-answer time,
runs out). Where the limits change under an open batch, the real `BatchQueue` takes
over (`_Handover`): it is given the open batch's requests, then every arrival and every
due timer, as the gateway's owner loop does, until its open batch has closed; then the
bulk formation goes on. The tests hold the result to the per-request event path.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections.abc import Callable

import numpy as np

from batching import BatchLimits, BatchPolicy, BatchQueue, FixedPolicy, NoBatchingPolicy, Request
from batching.formation import DEADLINE, DRAIN, REASONS, SIZE, TIMEOUT, Formation

_CODE = {name: code for code, name in enumerate(REASONS)}


def follows_arrivals(policy: BatchPolicy) -> bool:
    """Does the policy's (B, T) change only when it is told of an arrival, never with
    anything else the run does, and never release batches to idle instances? Fixed
    limits, and the SLO-adaptive policy off a pool (checked by type: a subclass may
    change its limits by other means)."""
    if type(policy) in (FixedPolicy, NoBatchingPolicy):
        return not policy.limits(0.0).work_conserving
    adaptive = sys.modules.get("batching.adaptive")  # not loaded: the policy cannot be one
    if adaptive is None or type(policy) is not adaptive.AdaptivePolicy:
        return False
    return not policy.work_conserving and not policy.limits(0.0).work_conserving  # type: ignore[attr-defined]


def limit_runs(
    policy: BatchPolicy, times: list[float] | np.ndarray, progress: Callable[[float], None] | None = None
) -> list[tuple[int, BatchLimits]]:
    """(first arrival, limits) of each run of arrivals pushed under the same limits: the
    policy is told of every arrival in order, as `BatchQueue.push` tells it, and asked
    for its limits after each. Fixed limits are one run, with nothing to tell.
    `progress(share of arrivals told)` is called now and then (the policy's learning is
    most of the fast path's time).

    A policy with `observe_arrivals` is told in bulk, up to the next arrival at which it
    may change its limits: the arrivals before that one are pushed under the limits it
    held before them, and it is asked for its limits after that one. That is what takes
    the adaptive policy past a million arrivals a second (bench/sim_speed.py)."""
    if type(policy) in (FixedPolicy, NoBatchingPolicy) or not len(times):
        return [(0, policy.limits(float(times[0]) if len(times) else 0.0))]
    arrivals = times if isinstance(times, np.ndarray) else np.array(times, dtype=float)
    tell, limits, n = _teller(policy), policy.limits, len(arrivals)
    runs: list[tuple[int, BatchLimits]] = []

    def enter(first: int, now: BatchLimits) -> None:
        if runs and (now is runs[-1][1] or now == runs[-1][1]):  # a re-tune makes new limits, maybe equal ones
            return
        if now.work_conserving:
            raise RuntimeError("work-conserving limits need the event path")
        runs.append((first, now))

    held = limits(float(arrivals[0]))  # the limits in force before each call to `tell`
    told, reported = 0, -1
    while told < n:
        if progress is not None and told // 65536 > reported:
            reported = told // 65536
            progress(told / n)
        last = told + tell(arrivals[told:]) - 1
        if last > told:
            enter(told, held)
        held = limits(float(arrivals[last]))
        enter(last, held)
        told = last + 1
    return runs


def _teller(policy: BatchPolicy) -> Callable[[np.ndarray], int]:
    """The policy's `observe_arrivals` (tell of arrivals in bulk; how many were told),
    or one arrival at a time through `observe_arrival`."""
    bulk = getattr(policy, "observe_arrivals", None)
    if bulk is not None:
        return bulk

    def one(arrivals: np.ndarray) -> int:
        policy.observe_arrival(float(arrivals[0]))
        return 1

    return one


class _Frozen:
    """The limits in force, as a policy the real queue can ask (it has been told of the arrivals already)."""

    name = "frozen"

    def __init__(self, limits: BatchLimits) -> None:
        self.current = limits

    def limits(self, now: float) -> BatchLimits:
        return self.current

    def observe_arrival(self, now: float) -> None:
        pass


class _Batches:
    """Batches as they close: first request, size, close time, reason code."""

    def __init__(self) -> None:
        self.start: list[int] = []
        self.size: list[int] = []
        self.close: list[float] = []
        self.reason: list[int] = []

    def add(self, start: int, size: int, close: float, reason: int) -> None:
        self.start.append(start)
        self.size.append(size)
        self.close.append(close)
        self.reason.append(reason)

    def formation(self) -> Formation:
        return Formation(
            np.array(self.start, dtype=np.int64), np.array(self.size, dtype=np.int64),
            np.array(self.close, dtype=float), np.array(self.reason, dtype=np.int8),
        )  # fmt: skip


def form_by_runs(times: list[float], runs: list[tuple[int, BatchLimits]]) -> Formation:
    """The batches the queue forms from sorted `times` when arrival i is pushed under the
    limits of the run it belongs to, and its owner polls at every due wakeup."""
    n, out = len(times), _Batches()
    ends = [first for first, _ in runs[1:]] + [n]
    i, k = 0, 0  # next request to place; run of limits it is pushed under
    while i < n:
        while ends[k] <= i:
            k += 1
        limits, end = runs[k][1], ends[k]
        if limits.service_s and limits.deadline_s is not None:
            i, carried = _capped(times, i, end, limits, out)
        else:
            i, carried = _plain(times, i, end, limits, out)
        if carried:  # the limits change under the open batch [i, end): the real queue takes it
            i = _Handover(times, runs, ends, out).run(i, end, k)
    return out.formation()


def _plain(t: list[float], i: int, end: int, limits: BatchLimits, out: _Batches) -> tuple[int, bool]:
    """Batches of plain (B, T) limits from request i within the run ending at `end` (as
    `form_batches`): the next request to place, and whether the open batch is carried
    over the end of the run."""
    n, b, timeout = len(t), limits.max_size, limits.max_wait
    while i < end:
        due = t[i] + timeout
        full = i + b
        hi = full if full < end else end
        j = bisect_left(t, due, i + 1, hi)
        if j < hi:
            out.add(i, j - i, due, TIMEOUT)
            i = j
        elif full <= end:
            out.add(i, b, t[full - 1], SIZE)
            i = full
        elif end < n:  # the run ends first: its last timer may still fire before the next arrival
            if t[end] < due:
                return i, True
            out.add(i, end - i, due, TIMEOUT)
            i = end
        elif math.isinf(due):
            out.add(i, n - i, t[-1], DRAIN)
            i = n
        else:
            out.add(i, n - i, due, TIMEOUT)
            i = n
    return i, False


def _capped(t: list[float], i: int, end: int, limits: BatchLimits, out: _Batches) -> tuple[int, bool]:
    """As `_plain`, with deadline-aware closing: with r rows the timer is due at
    min(T after the oldest arrival, its SLO budget less s(r)), and an arrival that would
    make the batch late (its budget less s(r + 1)) closes it first and opens the next.
    Every sum and comparison is the one `BatchQueue` makes."""
    n, b, timeout, budget, s = len(t), limits.max_size, limits.max_wait, limits.deadline_s, limits.service_s
    last = len(s)
    while i < end:
        due = t[i] + timeout
        deadline = t[i] + budget  # type: ignore[operator]
        if b == 1:
            out.add(i, 1, t[i], SIZE)
            i += 1
            continue
        if t[i] >= deadline - s[0]:  # its own budget is gone on arrival
            out.add(i, 1, t[i], DEADLINE)
            i += 1
            continue
        r = 1
        while True:
            j = i + r
            wake = min(due, deadline - s[(r if r < last else last) - 1])
            if j == n or t[j] >= wake:  # the timer fires (before an arrival at the same instant)
                out.add(i, r, wake, TIMEOUT if wake >= due else DEADLINE)
                i = j
                break
            if j == end:
                return i, True
            if t[j] >= deadline - s[(r + 1 if r + 1 < last else last) - 1]:
                out.add(i, r, t[j], DEADLINE)  # the newcomer would make the batch late: it opens the next
                i = j
                break
            r += 1
            if r >= b:
                out.add(i, r, t[j], SIZE)
                i = j + 1
                break
    return i, False


class _Handover:
    """The real queue over a change of limits: its owner's loop (poll at every due
    wakeup, then push each arrival under the limits of its run) from the open batch's
    first request until that batch has closed and no request waits."""

    def __init__(self, times: list[float], runs: list[tuple[int, BatchLimits]], ends: list[int], out: _Batches) -> None:
        self.t, self.runs, self.ends, self.out = times, runs, ends, out

    def run(self, first: int, end: int, k: int) -> int:
        """Replay the open batch [first, end) under run k's limits, then go on from `end`;
        the next request the bulk formation places."""
        t, n = self.t, len(self.t)
        policy = _Frozen(self.runs[k][1])
        queue = BatchQueue(policy)
        for j in range(first, end):
            if queue.push(Request(str(j), t[j], payload=j), t[j]):
                raise RuntimeError("the bulk formation carried over a batch the queue closes")
        j = end
        while j < n:
            self._timers(queue, t[j])
            if not len(queue):
                return j  # nothing waits: the bulk formation goes on from here
            while self.ends[k] <= j:
                k += 1
            policy.current = self.runs[k][1]
            self._emit(queue.push(Request(str(j), t[j], payload=j), t[j]))
            j += 1
        if len(queue):
            due = queue.next_wakeup()
            if due is None or not math.isfinite(due):
                self._emit(queue.drain(t[-1]))  # no timer will ever close it (as the event path drains)
            self._timers(queue, math.inf)
        return n

    def _timers(self, queue: BatchQueue, until: float) -> None:
        """Fire the queue's timer while it is due at or before `until`."""
        while True:
            due = queue.next_wakeup()
            if due is None or not math.isfinite(due) or due > until:
                return
            self._emit(queue.poll(due))

    def _emit(self, batches: list) -> None:
        for batch in batches:
            self.out.add(batch.requests[0].payload, len(batch.requests), batch.closed_at, _CODE[batch.reason])
