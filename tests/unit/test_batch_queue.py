"""Property tests for `BatchQueue`: the per-model batching state machine.

Most tests drive the queue the way its owner does (an event loop on a virtual
clock): arrivals come at non-decreasing times; before handling an arrival at `t`
the owner polls at every `next_wakeup()` that is due by `t`, at exactly that time,
then pushes the request at `t`; at the end it either polls the remaining wakeups
or drains the queue at some time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from batching import Batch, BatchLimits, BatchQueue, FixedPolicy, NoBatchingPolicy, Request

# Slack for the one rounding step in `arrival + T` (times reach ~1e4 s here).
TOL = 1e-9
REASONS = {"size", "timeout", "drain"}

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


# --------------------------------------------------------------------------- helpers


@dataclass
class Scenario:
    batch_size: int
    timeout: float
    requests: list[Request]
    drain_at: float | None

    def __repr__(self) -> str:  # compact, so shrunk failures are readable
        arrivals = [(r.arrival, r.size) for r in self.requests]
        return f"Scenario(B={self.batch_size}, T={self.timeout!r}, drain_at={self.drain_at!r}, arrivals={arrivals})"


@dataclass
class Trace:
    """Batches in the order the queue returned them, each with the time of the call that returned it."""

    returned: list[tuple[float, Batch]] = field(default_factory=list)

    @property
    def batches(self) -> list[Batch]:
        return [batch for _, batch in self.returned]


def sizes(batch_size: int) -> st.SearchStrategy[int]:
    """Mostly 1 row; sometimes a few; sometimes at or beyond B."""
    return st.one_of(
        st.just(1),
        st.just(1),
        st.just(1),
        st.integers(2, 8),
        st.integers(batch_size, batch_size + 8),
    )


def gaps(timeout: float) -> st.SearchStrategy[float]:
    """Inter-arrival gaps: zero (bursts), exactly T, within T, and longer than T."""
    return st.one_of(
        st.just(0.0),
        st.just(0.0),
        st.just(timeout),
        st.floats(0.0, timeout) if timeout > 0 else st.just(0.0),
        st.floats(0.0, timeout / 4) if timeout > 0 else st.just(0.0),
        st.floats(0.0, 0.15),
    )


@st.composite
def scenarios(draw: st.DrawFn, with_drain: bool | None = None) -> Scenario:
    batch_size = draw(st.integers(1, 64), label="B")
    timeout = draw(st.one_of(st.just(0.0), st.just(0.1), st.floats(0.0, 0.1)), label="T")
    now = draw(st.one_of(st.just(0.0), st.floats(0.0, 1e4)), label="start")
    plan = draw(st.lists(st.tuples(gaps(timeout), sizes(batch_size)), max_size=60), label="arrivals")
    requests = []
    for i, (gap, size) in enumerate(plan):
        now = now + gap
        requests.append(Request(id=f"r{i}", arrival=now, size=size))
    if with_drain is None:
        with_drain = draw(st.booleans(), label="drain?")
    drain_at = None
    if with_drain:
        first = requests[0].arrival if requests else now
        last = requests[-1].arrival if requests else now
        arrivals = [r.arrival for r in requests] or [now]
        drain_at = draw(
            st.one_of(
                st.floats(first, last + 0.2),
                st.sampled_from(arrivals),  # drains just before the arrival at that time is pushed
                st.sampled_from(arrivals).map(lambda t: t + timeout / 2),
            ),
            label="drain_at",
        )
    return Scenario(batch_size, timeout, requests, drain_at)


def assert_empty(queue: BatchQueue) -> None:
    assert len(queue) == 0
    assert queue.rows == 0
    assert queue.pending == ()
    assert queue.next_wakeup() is None


def run_owner(queue: BatchQueue, requests: list[Request], drain_at: float | None = None) -> Trace:
    """Drive `queue` like the owner's event loop; return everything it released."""
    trace = Trace()
    limits = queue.policy.limits(0.0)

    def record(now: float, batches: list[Batch]) -> None:
        trace.returned.extend((now, batch) for batch in batches)

    def catch_up(t: float) -> None:
        # Poll at every wakeup that is due by t, at exactly the wakeup time.
        while (wakeup := queue.next_wakeup()) is not None and wakeup <= t:
            before = queue.pending
            released = queue.poll(wakeup)
            # Every pending request belongs to the batch the head's timer closes, so
            # an on-time poll releases all of them (this also bounds the loop).
            assert len(released) == 1, f"poll({wakeup!r}) at next_wakeup() released {len(released)} batches"
            assert [id(r) for r in released[0].requests] == [id(r) for r in before]
            assert_empty(queue)
            record(wakeup, released)

    def drain(t: float) -> None:
        catch_up(t)
        record(t, queue.drain(t))
        assert_empty(queue)

    pending_drain = drain_at
    for request in requests:
        if pending_drain is not None and pending_drain <= request.arrival:
            drain(pending_drain)
            pending_drain = None
        catch_up(request.arrival)
        record(request.arrival, queue.push(request, request.arrival))
        assert queue.rows < limits.max_size, "more than B-1 rows left pending after push"
    if pending_drain is not None:
        drain(pending_drain)
    else:
        catch_up(math.inf)
    assert_empty(queue)
    return trace


def run_scenario(scenario: Scenario) -> Trace:
    queue = BatchQueue(FixedPolicy(scenario.batch_size, scenario.timeout))
    return run_owner(queue, scenario.requests, scenario.drain_at)


def assert_respects_b(batch: Batch, batch_size: int) -> None:
    if len(batch.requests) == 1:
        return  # a lone request may be larger than B; it has to go somewhere
    assert batch.size <= batch_size, (
        f"{batch.reason} batch of {len(batch.requests)} requests has {batch.size} rows > B={batch_size}"
    )


# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(scenarios())
def test_every_request_lands_in_exactly_one_batch(scenario: Scenario) -> None:
    trace = run_scenario(scenario)
    released = Counter(id(r) for batch in trace.batches for r in batch.requests)
    pushed = {id(r) for r in scenario.requests}
    assert set(released) == pushed, "requests lost or invented"
    duplicated = [key for key, count in released.items() if count > 1]
    assert not duplicated, "a request was released in more than one batch"
    assert all(batch.requests for batch in trace.batches), "an empty batch was released"


@PROPERTY_SETTINGS
@given(scenarios())
def test_no_batch_exceeds_b_unless_single_oversized_request(scenario: Scenario) -> None:
    for batch in run_scenario(scenario).batches:
        assert batch.reason in REASONS
        assert_respects_b(batch, scenario.batch_size)


@PROPERTY_SETTINGS
@given(scenarios())
def test_no_request_waits_past_timeout_when_polled_on_time(scenario: Scenario) -> None:
    T = scenario.timeout
    for returned_at, batch in run_scenario(scenario).returned:
        assert batch.closed_at == returned_at, "closed_at is not the time of the call that closed it"
        for request in batch.requests:
            assert batch.closed_at >= request.arrival, "batch closed before one of its members arrived"
            if batch.reason != "drain":
                wait = batch.closed_at - request.arrival
                assert wait <= T + TOL, f"{request.id} waited {wait!r} s > T={T!r} in a {batch.reason} batch"
        if batch.reason == "timeout":
            # Timer anchored at the oldest member: closes exactly when that one has waited T.
            assert batch.closed_at == batch.oldest_arrival + T


@PROPERTY_SETTINGS
@given(scenarios())
def test_batches_keep_arrival_order(scenario: Scenario) -> None:
    trace = run_scenario(scenario)
    released = [r for batch in trace.batches for r in batch.requests]
    assert [id(r) for r in released] == [id(r) for r in scenario.requests]
    closed = [batch.closed_at for batch in trace.batches]
    assert closed == sorted(closed), "batches were returned out of time order"


@PROPERTY_SETTINGS
@given(scenarios(with_drain=True))
def test_drain_empties_the_queue_and_respects_b(scenario: Scenario) -> None:
    # run_owner asserts the queue is empty right after the drain.
    trace = run_scenario(scenario)
    for batch in trace.batches:
        if batch.reason == "drain":
            assert batch.closed_at == scenario.drain_at
            assert_respects_b(batch, scenario.batch_size)


@settings(max_examples=100, deadline=None)
@given(
    batch_size=st.integers(1, 64),
    plan=st.lists(st.tuples(st.floats(0.0, 0.2), st.integers(1, 70)), max_size=40),
    drain_gap=st.floats(0.0, 1.0),
    shrink_to=st.integers(1, 64),
)
def test_drain_splits_in_batches_of_current_b(
    batch_size: int, plan: list[tuple[float, int]], drain_gap: float, shrink_to: int
) -> None:
    """Pending rows stay below B, so to make drain split at all, B shrinks before the drain."""
    policy = AdjustablePolicy(batch_size, timeout_s=10.0)  # no timeouts fire here
    queue = BatchQueue(policy)
    now = 0.0
    for i, (gap, size) in enumerate(plan):
        now += gap
        queue.push(Request(id=f"r{i}", arrival=now, size=size), now)
    pending = queue.pending
    policy.batch_size = shrink_to
    drained = queue.drain(now + drain_gap)
    assert_empty(queue)
    assert [id(r) for b in drained for r in b.requests] == [id(r) for r in pending]
    for batch in drained:
        assert batch.reason == "drain"
        assert batch.closed_at == now + drain_gap
        assert_respects_b(batch, shrink_to)
    # Greedy packing: a drain batch only stops short of B because the next request would not fit.
    for batch, following in zip(drained, drained[1:]):
        assert batch.size + following.requests[0].size > shrink_to
    assert queue.drain(now + drain_gap) == []


def test_drain_of_empty_queue_returns_nothing() -> None:
    queue = BatchQueue(FixedPolicy(4, 0.01))
    assert queue.drain(1.0) == []
    assert_empty(queue)


def test_queue_is_reusable_after_drain() -> None:
    queue = BatchQueue(FixedPolicy(4, 0.01))
    queue.push(Request("a", 0.0), 0.0)
    queue.push(Request("b", 0.001), 0.001)
    assert [b.reason for b in queue.drain(0.002)] == ["drain"]
    queue.push(Request("c", 0.5), 0.5)
    assert queue.next_wakeup() == pytest.approx(0.51)  # anchored at the new arrival, not the old batch


# --------------------------------------------------------------------------- timer anchoring


@st.composite
def open_batches(draw: st.DrawFn) -> tuple[BatchQueue, list[Request], float]:
    """A queue holding one open batch (fewer than B rows, all arrived within T of the first)."""
    batch_size = draw(st.integers(2, 64))
    timeout = draw(st.floats(1e-4, 0.1))
    start = draw(st.one_of(st.just(0.0), st.floats(0.0, 1e4)))
    fractions = sorted(draw(st.lists(st.floats(0.0, 0.999), min_size=1, max_size=batch_size - 1)))
    fractions[0] = 0.0
    due = start + timeout
    queue = BatchQueue(FixedPolicy(batch_size, timeout))
    requests = []
    for i, fraction in enumerate(fractions):
        arrival = start + fraction * timeout
        assume(arrival < due)
        request = Request(id=f"r{i}", arrival=arrival)
        assert queue.push(request, arrival) == []
        requests.append(request)
    assert queue.next_wakeup() == due
    return queue, requests, due


@PROPERTY_SETTINGS
@given(open_batches(), st.one_of(st.just(0.0), st.floats(0.0, 5.0)))
def test_late_poll_closes_the_batch_of_earlier_arrivals(
    setup: tuple[BatchQueue, list[Request], float], lateness: float
) -> None:
    queue, requests, due = setup
    just_before = math.nextafter(due, -math.inf)
    if just_before >= requests[-1].arrival:
        assert queue.poll(just_before) == [], "batch closed before its oldest request waited T"
    late = due + lateness
    released = queue.poll(late)
    assert len(released) == 1
    (batch,) = released
    assert batch.reason == "timeout"
    assert [id(r) for r in batch.requests] == [id(r) for r in requests]
    assert batch.closed_at == late
    assert_empty(queue)


@PROPERTY_SETTINGS
@given(open_batches(), st.one_of(st.just(0.0), st.floats(0.0, 5.0)), st.integers(1, 3))
def test_arrival_after_missed_wakeup_does_not_join_overdue_batch(
    setup: tuple[BatchQueue, list[Request], float], lateness: float, size: int
) -> None:
    """The owner misses the wakeup and the next thing it sees is an arrival."""
    queue, requests, due = setup
    t = due + lateness
    newcomer = Request(id="late", arrival=t, size=size)
    released = queue.push(newcomer, t)
    timed_out = [b for b in released if b.reason == "timeout"]
    assert len(timed_out) == 1
    assert [id(r) for r in timed_out[0].requests] == [id(r) for r in requests]
    assert all(newcomer is not r for b in timed_out for r in b.requests)
    if size < queue.policy.limits(t).max_size:
        assert released == timed_out
        assert queue.pending == (newcomer,)
        assert queue.next_wakeup() == t + queue.policy.limits(t).max_wait  # new timer from the newcomer
    else:
        assert [b.reason for b in released] == ["timeout", "size"]
        assert released[1].requests == [newcomer]


def test_timer_is_anchored_at_oldest_arrival() -> None:
    queue = BatchQueue(FixedPolicy(batch_size=8, timeout_s=0.010))
    a, b, c = Request("a", 0.0), Request("b", 0.005), Request("c", 0.009)
    for request in (a, b, c):
        assert queue.push(request, request.arrival) == []
    assert queue.next_wakeup() == 0.010
    assert queue.poll(0.0099) == []
    assert len(queue) == 3
    released = queue.poll(0.010)
    assert len(released) == 1
    assert released[0].reason == "timeout"
    assert released[0].requests == [a, b, c]
    assert released[0].size == 3
    assert released[0].closed_at == 0.010
    assert_empty(queue)


def test_overflowing_request_closes_open_batch_first() -> None:
    queue = BatchQueue(FixedPolicy(batch_size=4, timeout_s=1.0))
    a, b, c = Request("a", 0.0, size=2), Request("b", 0.1, size=1), Request("c", 0.2, size=2)
    assert queue.push(a, 0.0) == []
    assert queue.push(b, 0.1) == []
    released = queue.push(c, 0.2)
    assert [(batch.reason, batch.requests) for batch in released] == [("size", [a, b])]
    assert queue.pending == (c,)
    assert queue.next_wakeup() == pytest.approx(1.2)


def test_oversized_request_goes_alone() -> None:
    queue = BatchQueue(FixedPolicy(batch_size=4, timeout_s=1.0))
    a, big = Request("a", 0.0), Request("big", 0.1, size=9)
    queue.push(a, 0.0)
    released = queue.push(big, 0.1)
    assert [(batch.reason, batch.requests) for batch in released] == [("size", [a]), ("size", [big])]
    assert_empty(queue)


def test_rejects_request_without_rows() -> None:
    queue = BatchQueue(FixedPolicy(4, 0.01))
    with pytest.raises(ValueError):
        queue.push(Request("empty", 0.0, size=0), 0.0)
    assert_empty(queue)


# --------------------------------------------------------------------------- no batching


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.one_of(st.just(0.0), st.floats(0.0, 0.1)), st.integers(1, 5)), max_size=40))
def test_no_batching_releases_each_request_on_push(plan: list[tuple[float, int]]) -> None:
    queue = BatchQueue(NoBatchingPolicy())
    now = 0.0
    for i, (gap, size) in enumerate(plan):
        now += gap
        request = Request(id=f"r{i}", arrival=now, size=size)
        released = queue.push(request, now)
        assert len(released) == 1
        assert released[0].requests == [request]
        assert released[0].closed_at == now
        assert released[0].reason == "size"
        assert_empty(queue)


# --------------------------------------------------------------------------- stateful


class AdjustablePolicy:
    """A policy whose B and T the test can change between calls."""

    name = "adjustable"

    def __init__(self, batch_size: int, timeout_s: float) -> None:
        self.batch_size = batch_size
        self.timeout_s = timeout_s

    def limits(self, now: float) -> BatchLimits:
        return BatchLimits(self.batch_size, self.timeout_s)

    def observe_arrival(self, now: float) -> None:
        pass


class QueueMachine(RuleBasedStateMachine):
    """Interleaves pushes, polls (on time, early, late) and drains on a non-decreasing clock."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: BatchQueue
        self.B = 1
        self.T = 0.0
        self.now = 0.0
        self.pushed: list[Request] = []
        self.released: list[Request] = []
        self.serial = 0

    @initialize(batch_size=st.integers(1, 64), timeout=st.floats(0.0, 0.1), start=st.floats(0.0, 1e4))
    def setup(self, batch_size: int, timeout: float, start: float) -> None:
        self.B, self.T, self.now = batch_size, timeout, start
        self.queue = BatchQueue(FixedPolicy(batch_size, timeout))

    def accept(self, batches: list[Batch], reason: str | None = None) -> None:
        for batch in batches:
            assert batch.requests
            assert batch.reason in REASONS
            if reason is not None:
                assert batch.reason == reason
            assert batch.closed_at == self.now
            assert all(r.arrival <= batch.closed_at for r in batch.requests)
            assert_respects_b(batch, self.B)
            self.released.extend(batch.requests)

    @rule(gap=st.one_of(st.just(0.0), st.floats(0.0, 0.15)))
    def advance(self, gap: float) -> None:
        self.now += gap

    @rule(size=st.one_of(st.just(1), st.just(1), st.integers(1, 80)))
    def push(self, size: int) -> None:
        request = Request(id=f"r{self.serial}", arrival=self.now, size=size)
        self.serial += 1
        self.pushed.append(request)
        released = self.queue.push(request, self.now)
        assert len(released) <= 2
        self.accept(released)
        # Only a size close can take the new request, and only as the last batch.
        holding = [b for b in released if any(r is request for r in b.requests)]
        if holding:
            assert holding == [released[-1]]
            assert released[-1].reason == "size"

    @rule()
    def poll_now(self) -> None:
        wakeup = self.queue.next_wakeup()
        before = self.queue.pending
        released = self.queue.poll(self.now)
        if wakeup is not None and wakeup <= self.now:
            assert len(released) == 1
            assert tuple(released[0].requests) == before
        else:
            assert released == []
        self.accept(released, "timeout")

    @precondition(lambda self: self.queue.next_wakeup() is not None and self.queue.next_wakeup() >= self.now)
    @rule()
    def poll_on_time(self) -> None:
        wakeup = self.queue.next_wakeup()
        assert wakeup is not None
        self.now = wakeup
        released = self.queue.poll(self.now)
        assert len(released) == 1
        self.accept(released, "timeout")
        assert all(self.now - r.arrival <= self.T + TOL for r in released[0].requests)

    @rule(lateness=st.floats(0.0, 0.2))
    def drain(self, lateness: float) -> None:
        self.now += lateness
        self.accept(self.queue.drain(self.now), "drain")
        assert_empty(self.queue)

    @invariant()
    def fewer_than_b_rows_pending(self) -> None:
        if not hasattr(self, "queue"):
            return
        pending = self.queue.pending
        assert len(self.queue) == len(pending)
        assert self.queue.rows == sum(r.size for r in pending)
        assert self.queue.rows < self.B

    @invariant()
    def wakeup_follows_oldest_pending(self) -> None:
        if not hasattr(self, "queue"):
            return
        pending = self.queue.pending
        if pending:
            assert self.queue.next_wakeup() == pending[0].arrival + self.T
        else:
            assert self.queue.next_wakeup() is None

    @invariant()
    def requests_are_conserved_in_order(self) -> None:
        if not hasattr(self, "queue"):
            return
        accounted = self.released + list(self.queue.pending)
        assert [id(r) for r in accounted] == [id(r) for r in self.pushed]


QueueMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_queue_state_machine = QueueMachine.TestCase


def test_lowering_b_never_releases_a_batch_above_the_new_b() -> None:
    """An adaptive policy may lower B while rows are pending; releases pack into the new B."""
    policy = AdjustablePolicy(16, timeout_s=1.0)
    queue = BatchQueue(policy)
    for i in range(10):
        assert queue.push(Request(f"r{i}", i * 0.01), i * 0.01) == []
    policy.batch_size = 4
    released = queue.push(Request("late", 0.2), 0.2)
    assert [b.size for b in released] == [4, 4, 2]
    assert all(b.reason == "size" for b in released)
    assert [r.id for b in released for r in b.requests] == [f"r{i}" for i in range(10)]
    assert [r.id for r in queue.pending] == ["late"]
    # The same on a timeout: B lowered again while three rows wait.
    for i in range(2):
        queue.push(Request(f"s{i}", 0.3 + i * 0.01), 0.3 + i * 0.01)
    policy.batch_size = 2
    by_timeout = queue.poll(1.2)
    assert [b.size for b in by_timeout] == [2, 1] and {b.reason for b in by_timeout} == {"timeout"}
    assert_empty(queue)
