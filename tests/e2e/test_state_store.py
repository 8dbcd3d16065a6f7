"""The shared state: the store's contract, held by the in-memory store and by a real Redis
alike; replicas (`Cluster`s on one store) sharing arrivals and members, and going on alone
while Redis is away. The split of a function's concurrency is in unit/test_state_store.py."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid

import pytest

from backends.registered_pool import RegisteredPool
from gateway.replicas import RATE_WINDOW_S, Cluster
from gateway.metrics import Metrics
from gateway.replicas.redis_state import RedisState
from gateway.replicas import MemoryState, StateUnavailable

from support import until


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryState()
        return
    server = request.getfixturevalue("redis_server")
    state = RedisState(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    yield state
    await state.close()


async def test_arrivals_add_up_per_replica_and_bucket(store) -> None:
    await store.count_arrivals("m", "a", {100: 3, 101: 4})
    await store.count_arrivals("m", "b", {101: 5})
    await store.count_arrivals("m", "a", {101: 1})
    await store.count_arrivals("other", "a", {101: 9})
    assert await store.arrivals("m", 99, 102) == {100: {"a": 3}, 101: {"a": 5, "b": 5}}
    assert await store.arrivals("m", 101, 101) == {101: {"a": 5, "b": 5}}


async def test_members_expire_and_leavers_are_remembered_until_they_return(store) -> None:
    await store.renew_member("m", "http://a:1", 110.0)
    await store.renew_member("m", "http://b:1", 105.0)
    assert await store.members("m", 100.0) == ({"http://a:1": 110.0, "http://b:1": 105.0}, set())
    assert await store.members("m", 106.0) == ({"http://a:1": 110.0}, set())
    await store.remove_member("m", "http://a:1", 106.0, 30.0)
    assert await store.members("m", 107.0) == ({}, {"http://a:1"})
    await store.renew_member("m", "http://a:1", 140.0)  # it came back
    assert await store.members("m", 108.0) == ({"http://a:1": 140.0}, set())
    await store.remove_member("m", "http://a:1", 108.0, 30.0)
    assert await store.members("m", 139.0) == ({}, set())  # forgotten after 30 s


async def test_a_lease_has_one_holder_until_it_lapses_or_is_released(store) -> None:
    assert await store.hold_lease("plan:m", "a", 1.0, 100.0)
    assert not await store.hold_lease("plan:m", "b", 1.0, 100.1)
    assert await store.hold_lease("plan:m", "a", 1.0, 100.2)  # renewed
    await store.release_lease("plan:m", "b")  # not b's to give up
    assert not await store.hold_lease("plan:m", "b", 1.0, 100.25)
    await store.release_lease("plan:m", "a")
    assert await store.hold_lease("plan:m", "b", 1.0, 100.3)
    # Unrenewed, it lapses: Redis counts its own time; the memory store, the `now` given.
    # (A second's lease: consecutive calls stay inside it even on a stalled machine.)
    await asyncio.sleep(1.1)
    assert await store.hold_lease("plan:m", "a", 1.0, 101.31)


async def test_published_values_and_demands_expire(store) -> None:
    await store.publish("plan:m", "3", 1.0, 100.0)
    assert await store.read("plan:m", 100.1) == "3"
    await store.report_demand("m", "a", 4, 101.0)
    await store.report_demand("m", "b", 0, 100.5)
    assert await store.demands("m", 100.2) == {"a": 4, "b": 0}
    assert await store.demands("m", 100.7) == {"a": 4}
    await asyncio.sleep(1.1)
    assert await store.read("plan:m", 101.11) is None


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


async def test_replicas_see_the_cluster_rate_and_each_others_members(store) -> None:
    metrics_a, metrics_b = Metrics(), Metrics()
    a = Cluster(store, "a", metrics_a, sync_s=0.1, member_lease_s=5.0)
    b = Cluster(store, "b", metrics_b, sync_s=0.1, member_lease_s=5.0)
    pools = [RegisteredPool("m", max_ttl_s=30.0), RegisteredPool("m", max_ttl_s=30.0)]
    counters = [Counter(), Counter()]
    clock = [1000.0]
    for cluster, pool, count in zip((a, b), pools, counters):
        cluster._wall = lambda: clock[0]
        cluster.watch("m", registry=pool, runner_arrivals=count)
        await pool.start()
    try:
        for second in range(RATE_WINDOW_S + 1):  # 2 + 4 arrivals a second, as a and b count them
            counters[0].n += 2
            counters[1].n += 4
            await a.sync()
            await b.sync()
            clock[0] += 1.0
        await a.sync()
        await b.sync()
        for metrics in (metrics_a, metrics_b):
            assert metrics.cluster_rate.labels("m")._value.get() == pytest.approx(6.0, rel=0.05)
            assert metrics.cluster_replicas.labels("m")._value.get() == 2

        pools[0].register("http://127.0.0.1:9/", 10.0)  # through a's admin endpoint, which also writes:
        await a.member_renewed("m", "http://127.0.0.1:9/", 10.0)
        await b.sync()
        assert "http://127.0.0.1:9/" in pools[1].members
        pools[0].deregister("http://127.0.0.1:9/")
        await a.member_left("m", "http://127.0.0.1:9/")
        await b.sync()
        assert pools[1].members["http://127.0.0.1:9/"].leaving
    finally:
        for pool in pools:
            await pool.stop()


async def test_a_replica_goes_on_alone_while_redis_is_away_and_rejoins(redis_server) -> None:
    store = RedisState(redis_server.url, prefix="t:")
    metrics = Metrics()
    cluster = Cluster(store, "a", metrics, sync_s=0.1)
    pool = RegisteredPool("m", max_ttl_s=30.0)
    await pool.start()
    cluster.watch("m", registry=pool, runner_arrivals=Counter())
    try:
        await cluster.member_renewed("m", "http://127.0.0.1:9/", 20.0)
        await cluster.sync()
        assert cluster.up and "http://127.0.0.1:9/" in pool.members
        redis_server.kill()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await cluster.sync()
        assert loop.time() - began < 2.0, "a sync waited on the missing store"
        assert not cluster.up and metrics.state_up._value.get() == 0
        with pytest.raises(StateUnavailable):
            await store.members("m", 0.0)
        assert "http://127.0.0.1:9/" in pool.members  # what it knew, it keeps
        await cluster.member_renewed("m", "http://127.0.0.1:10/", 20.0)  # refused quietly
        redis_server.start()
        for _ in range(50):
            await cluster.sync()
            if cluster.up:
                break
            await asyncio.sleep(0.1)
        assert cluster.up and metrics.state_up._value.get() == 1
        assert metrics.state_errors._value.get() >= 2
    finally:
        await pool.stop()
        await store.close()


async def test_a_hung_redis_fails_every_call_fast_and_lets_the_replica_stop(redis_server) -> None:
    """Redis alive but not answering (SIGSTOP: a stuck fork, a paused VM): every call gives
    up within a second, the loop can be stopped mid-call, and closing does not wait on it."""
    store = RedisState(redis_server.url, prefix="t:")
    cluster = Cluster(store, "a", Metrics(), sync_s=0.05)
    cluster.watch("m", runner_arrivals=Counter())
    loop = asyncio.get_running_loop()
    try:
        assert await store.hold_lease("plan:m", "a", 5.0, 0.0)
        redis_server.process.send_signal(signal.SIGSTOP)
        for call in (store.hold_lease("plan:m", "a", 5.0, 0.0), store.count_arrivals("m", "a", {1: 2}),
                     store.members("m", 0.0), store.release_lease("plan:m", "a")):  # fmt: skip
            began = loop.time()
            with pytest.raises(StateUnavailable):
                await call
            assert loop.time() - began < 1.5
        cluster.start()
        await until(lambda: not cluster.up, 5.0, "the cluster loop to notice Redis had gone")
        await asyncio.sleep(0.1)  # another sync is in flight now
        began = loop.time()
        await cluster.stop()
        await cluster.leave()
        await store.close()
        assert loop.time() - began < 2.0, "stopping waited on the hung store"
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        await cluster.stop()


async def test_a_cancelled_call_ends_cancelled_so_a_stopped_loop_stops(redis_server) -> None:
    """redis-py at times swallows a cancellation that lands in a command and returns as if
    nothing happened; the store re-raises it. Without that, stopping a cluster whose sync
    was mid-call waited forever (seen once in CI, at a gateway's SIGTERM)."""
    store = RedisState(redis_server.url, prefix="t:")
    rng = random.Random(3)
    landed = 0
    try:
        # How many cancels land mid-call depends on how fast this Redis answers: go on until
        # enough have (a fast one answers most calls within the sleep).
        for attempt in range(3000):
            if landed >= 30 and attempt >= 300:
                break
            call = asyncio.create_task(store.count_arrivals("m", "a", {1: 2, 2: 3}))
            await asyncio.sleep(rng.random() * (0.002 if attempt < 300 else 0.0005))
            if call.cancel():
                landed += 1
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                await call
        assert landed >= 30, "too few cancels landed mid-call to tell"
        for _ in range(20):  # a loop that is nearly always inside a call stops at once
            cluster = Cluster(store, "a", Metrics(), sync_s=0.0)
            cluster.watch("m", runner_arrivals=Counter())
            cluster.start()
            await asyncio.sleep(rng.random() * 0.01)
            await asyncio.wait_for(cluster.stop(), 2.0)
    finally:
        await store.close()
