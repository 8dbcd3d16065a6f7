"""The gateway's runner in-process: a fake clock, backends that stand in for the network.

The runner and the dispatch core are the real ones; only time (a `FakeClock` the test
moves) and the instances (small backends in this process) are not. Each test checks
one decision the core makes live: retry elsewhere, bisection, admission learning, the
outage grace.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from batching import FixedPolicy
from gateway.metrics import Metrics
from gateway.runner import ModelRunner, RequestFailed
from scheduler import Dispatcher, Fleet

from support import FakeClock, InProcessBackend, InProcessPool


def make_runner(clock: FakeClock, backends: list[InProcessBackend], *, batch: int = 4, wait_s: float = 0.01,
                **core) -> tuple[ModelRunner, InProcessPool]:  # fmt: skip
    pool = InProcessPool(backends)
    core_ = Dispatcher(FixedPolicy(batch, wait_s), Fleet(lambda: pool.instances), name="m", **core)
    return ModelRunner(core_, pool, Metrics().for_model("m"), clock=clock), pool


def row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[value]], dtype=np.float32)}


async def test_a_batch_whose_instance_is_down_runs_on_another_and_the_breaker_opens() -> None:
    clock = FakeClock()
    down, up = InProcessBackend("down", clock, unavailable=True), InProcessBackend("up", clock)
    runner, pool = make_runner(clock, [down, up])
    pool.prefer(down)  # the freest instance on a tie is the one used last: make it the broken one
    futures = [runner.submit(str(i), row(i), 1, None) for i in range(4)]  # a full batch: it goes at once
    await clock.advance(0.1)
    assert [f.result()["y"][0, 0] for f in futures] == [0.0, 2.0, 4.0, 6.0]
    assert down.calls == 1 and up.calls == 1
    assert not pool.instances[0].healthy, "the runner told the pool the instance failed"
    breaker = runner.core.fleet.breaker(pool.instances[0])
    assert breaker.failures == 1 and breaker.state(clock.now()) == "closed"  # one failure: not yet open
    for _ in range(2):  # two more failures in a row open it
        pool.instances[0].healthy = True
        pool.prefer(down)
        batch = [runner.submit(f"r{i}", row(1.0), 1, None) for i in range(4)]
        await clock.advance(0.1)
        assert all(f.result()["y"][0, 0] == 2.0 for f in batch)
    assert breaker.state(clock.now()) == "open"


async def test_a_batch_fails_after_max_attempts_with_503() -> None:
    clock = FakeClock()
    runner, pool = make_runner(clock, [InProcessBackend("a", clock, unavailable=True)], max_attempts=2)
    pool.revive_on_failure = True  # it comes straight back, and fails again
    futures = [runner.submit(str(i), row(i), 1, None) for i in range(4)]
    await clock.advance(0.1)
    for f in futures:
        with pytest.raises(RequestFailed) as failed:
            f.result()
        assert failed.value.status == 503 and "no backend could run the batch" in str(failed.value)


async def test_a_refused_batch_is_bisected_down_to_the_request_at_fault() -> None:
    clock = FakeClock()
    picky = InProcessBackend("picky", clock, refuse_negative=True)
    runner, _ = make_runner(clock, [picky], batch=8)
    values = [1.0, 2.0, -1.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    futures = [runner.submit(str(i), row(v), 1, None) for i, v in enumerate(values)]
    await clock.advance(0.5)
    for value, future in zip(values, futures):
        if value < 0:
            with pytest.raises(RequestFailed) as failed:
                future.result()
            assert failed.value.status == 400
        else:
            assert future.result()["y"][0, 0] == 2 * value
    assert picky.calls <= 1 + 2 * 3  # at most 2 log2(8) more batches for one bad request


async def test_admission_learns_how_late_answers_run() -> None:
    """Batches take 10 ms, then 30 ms: the measured service time follows with a lag
    (it forgets slowly), so answers come later than predicted, and admission learns an
    allowance for it; while they took what was predicted, it learnt none."""
    clock = FakeClock()
    backend = InProcessBackend("a", clock, service_s=0.010)
    runner, _ = make_runner(clock, [backend], batch=1, wait_s=0.0)

    async def one(i: int) -> None:
        future = runner.submit(str(i), row(1.0), 1, clock.now() + 10.0)
        await clock.advance(0.05)
        assert future.done() and future.result()["y"][0, 0] == 2.0

    for i in range(64):
        await one(i)
    assert runner.core.admission_allowance_s == pytest.approx(0.0, abs=1e-4)
    backend.service_s = 0.030
    for i in range(64, 128):
        await one(i)
    assert 0.005 < runner.core.admission_allowance_s <= 0.021


async def test_answers_delayed_by_a_failed_instance_teach_admission_nothing() -> None:
    """40 requests wait for two instances (predicted: half the backlog each); one fails
    under them, and the other serves them all, twice as late as predicted. A fault, not
    noise: admission's margin stays where it was. The same backlog on two working
    instances answers on time, and the margin stays near 0 as well (the control)."""
    for fail in (False, True):
        clock = FakeClock()
        a, b = InProcessBackend("a", clock, service_s=0.05), InProcessBackend("b", clock, service_s=0.05)
        runner, _ = make_runner(clock, [a, b], batch=1, wait_s=0.0)
        for i in range(40):  # the service time measured, one at a time
            future = runner.submit(f"w{i}", row(1.0), 1, clock.now() + 60.0)
            await clock.advance(0.06)
            assert future.done()
        futures = [runner.submit(str(i), row(1.0), 1, clock.now() + 60.0) for i in range(40)]
        await clock.advance(0.01)
        a.unavailable = fail
        await clock.advance(3.0)
        assert all(f.done() and f.result()["y"][0, 0] == 2.0 for f in futures)
        assert runner.core.admission_margin < 0.2, f"fail={fail}: margin {runner.core.admission_margin:.2f}"


async def test_the_outage_grace_answers_503_when_no_instance_comes_back() -> None:
    clock = FakeClock()
    runner, pool = make_runner(clock, [InProcessBackend("a", clock)], outage_grace_s=2.0)
    pool.instances[0].healthy = False
    futures = [runner.submit(str(i), row(i), 1, None) for i in range(4)]
    await clock.advance(1.9)
    assert not any(f.done() for f in futures), "within the grace the batch waits"
    await clock.advance(0.2)
    for f in futures:
        with pytest.raises(RequestFailed) as failed:
            f.result()
        assert failed.value.status == 503


async def test_an_instance_back_within_the_grace_serves_the_waiting_batch() -> None:
    clock = FakeClock()
    runner, pool = make_runner(clock, [InProcessBackend("a", clock)], outage_grace_s=2.0)
    pool.instances[0].healthy = False
    futures = [runner.submit(str(i), row(i), 1, None) for i in range(4)]
    await clock.advance(1.0)
    pool.recover(pool.instances[0])
    await clock.advance(0.1)
    assert [f.result()["y"][0, 0] for f in futures] == [0.0, 2.0, 4.0, 6.0]
    await clock.advance(2.0)  # the grace's timer fires on a healthy pool: nothing happens
    assert runner.core.grace_until is None


async def test_the_timer_closes_a_partial_batch_at_its_timeout() -> None:
    clock = FakeClock()
    backend = InProcessBackend("a", clock)
    runner, _ = make_runner(clock, [backend], batch=8, wait_s=0.05)
    futures = [runner.submit(str(i), row(i), 1, None) for i in range(3)]
    await clock.advance(0.049)
    assert backend.calls == 0
    await clock.advance(0.002)
    assert backend.calls == 1 and backend.rows == [3]
    await clock.advance(0.01)
    assert all(f.done() for f in futures)


async def test_drain_sends_what_waits_and_refuses_new_work() -> None:
    clock = FakeClock()
    runner, _ = make_runner(clock, [InProcessBackend("a", clock)], batch=8, wait_s=10.0)
    futures = [runner.submit(str(i), row(i), 1, None) for i in range(3)]
    drained = asyncio.ensure_future(runner.drain())
    await clock.advance(0.1)
    assert drained.done() and all(f.done() for f in futures)
    with pytest.raises(RequestFailed) as refused:
        runner.submit("late", row(0.0), 1, None)
    assert refused.value.status == 503


async def test_a_backend_error_on_a_single_request_is_its_answer() -> None:
    clock = FakeClock()
    runner, _ = make_runner(clock, [InProcessBackend("a", clock, refuse_negative=True)], batch=1, wait_s=0.0)
    future = runner.submit("bad", row(-1.0), 1, None)
    await clock.advance(0.01)
    with pytest.raises(RequestFailed) as failed:
        future.result()
    assert failed.value.status == 400 and "negative" in str(failed.value)
