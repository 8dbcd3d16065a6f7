"""Two gateway replicas on one real Redis, serving one model from registered servers and a
function: a server that joins through one serves through both; both see the cluster's
arrival rate; one leader plans the pool and the other takes over within the lease when
it dies; with Redis killed under load they go on alone, lose nothing, and rejoin."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pytest

from gateway.replicas import RATE_WINDOW_S

from support import (
    TOKEN, GatewayProcess, RedisServer, send, start_emulator, start_gateway, start_worker, total, wait_members,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("aws_credentials")]

LEASE_S = 2.0
SYNC_S = 0.2


async def metrics(session: aiohttp.ClientSession, gw: GatewayProcess) -> str:
    async with session.get(f"{gw.url}/metrics") as resp:
        return await resp.text()


async def wait_for(check, limit_s: float, what: str, every_s: float = 0.05) -> float:
    """Poll the async `check` until it is true; the seconds it took."""
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < limit_s, f"{what}: not within {limit_s} s"
        await asyncio.sleep(every_s)
    return time.monotonic() - began


def start_replicas(tmp_path, demo_path, redis_url: str, emulator_port: int) -> list[GatewayProcess]:
    config = tmp_path / "sluice.toml"
    config.write_text(textwrap.dedent(f"""
        [state]
        url = "{redis_url}"
        sync_s = {SYNC_S}
        leader_lease_s = {LEASE_S}
        [models.demo]
        registered = true
        lease_s = 6
        batch_size = 8
        timeout_ms = 10
        plan_interval_s = 1
        [models.demo.faas]
        function = "demo"
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:{emulator_port}"
        concurrency = 8
    """))
    replicas = []
    try:
        for name in ("a", "b"):
            replicas.append(start_gateway(tmp_path, "--config", str(config), "--replica-id", name))
    except BaseException:
        for gw in replicas:
            gw.stop()
        raise
    return replicas


@dataclass
class Replicas:
    redis: RedisServer
    gateways: list[GatewayProcess]
    workers: list[subprocess.Popen] = field(default_factory=list)

    def add_worker(self, demo_path, gateway: GatewayProcess) -> None:
        self.workers.append(start_worker(demo_path, gateway.url, lease_s=6.0))


@pytest.fixture
def replicas(tmp_path, demo_path, monkeypatch, redis_server):
    """Two replicas, "a" and "b", on one Redis, with the function on the emulator."""
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", TOKEN)
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "16")
    cluster = None
    try:
        cluster = Replicas(redis_server, start_replicas(tmp_path, demo_path, redis_server.url, emulator.port))
        yield cluster
    finally:
        if cluster is not None:
            for worker in cluster.workers:
                worker.terminate()
                worker.wait(10)
            for gw in cluster.gateways:
                gw.stop()
        assert emulator.stop() == 0


async def test_two_replicas_share_servers_rate_and_plan_and_the_follower_takes_over(replicas, demo_path) -> None:
    gateways = replicas.gateways
    async with aiohttp.ClientSession() as session:

        async def leaders() -> list[float]:
            return [total(await metrics(session, gw), "sluice_leader", model="demo") for gw in gateways]

        async def one_leader() -> bool:
            return sorted(await leaders()) == [0.0, 1.0]

        await wait_for(one_leader, 10.0, "exactly one leader")
        flags = await leaders()
        leader, follower = (gateways[0], gateways[1]) if flags[0] == 1.0 else (gateways[1], gateways[0])

        # A server joins through the follower; the leader learns it from Redis.
        replicas.add_worker(demo_path, follower)
        await wait_members(session, leader.url, 1, healthy=True, limit_s=60.0)

        # Traffic at the leader only: the follower sees it in the cluster's rate.
        await send(leader.url, 40.0, 3.0, np.random.default_rng(1))  # 120 requests

        async def both_see_them() -> bool:  # once the last second's bucket completes
            seen = [total(await metrics(session, gw), "sluice_cluster_arrival_rate", model="demo") for gw in gateways]
            return seen == [120 / RATE_WINDOW_S] * 2

        await wait_for(both_see_them, 5.0, f"both replicas seeing 120 arrivals in {RATE_WINDOW_S} s")
        shares = [total(await metrics(session, gw), "sluice_faas_concurrency_share", model="demo") for gw in gateways]
        assert min(shares) >= 1 and sum(shares) <= 8, shares  # one budget of 8, split

        # The leader plans; the follower publishes the leader's plan instead of its own.
        before = [total(await metrics(session, gw), "sluice_pool_plans_total", model="demo") for gw in (leader, follower)]

        async def leader_planned() -> bool:
            return total(await metrics(session, leader), "sluice_pool_plans_total", model="demo") > before[0]

        async def same_plan() -> bool:  # the follower publishes the leader's plan within a sync or two
            desired = [total(await metrics(session, gw), "sluice_pool_desired_instances", model="demo") for gw in gateways]
            return desired[0] == desired[1]

        await wait_for(leader_planned, 10.0, "the leader planning")
        await wait_for(same_plan, 5.0, "the follower publishing the leader's plan")
        assert total(await metrics(session, follower), "sluice_pool_plans_total", model="demo") == before[1] == 0

        # The leader dies without a word: the follower leads within the lease.
        killed = time.monotonic()
        leader.process.kill()
        leader.process.wait()

        async def follower_leads() -> bool:
            return total(await metrics(session, follower), "sluice_leader", model="demo") == 1.0

        await wait_for(follower_leads, 3 * LEASE_S, "the follower taking over")
        took = time.monotonic() - killed
        assert took <= LEASE_S + 4 * SYNC_S + 0.5, f"took over after {took:.2f} s"

        async def follower_plans() -> bool:
            return total(await metrics(session, follower), "sluice_pool_plans_total", model="demo") > 0

        await wait_for(follower_plans, 5.0, "the new leader planning")
        await send(follower.url, 20.0, 2.0, np.random.default_rng(2))
        print(f"follower took over {took:.2f} s after the leader died (lease {LEASE_S} s)")


async def test_redis_killed_and_restarted_under_load_loses_nothing(replicas, demo_path) -> None:
    gateways = replicas.gateways
    replicas.add_worker(demo_path, gateways[0])
    async with aiohttp.ClientSession() as session:
        await wait_members(session, gateways[1].url, 1, healthy=True, limit_s=60.0)

        async def state_up(value: float) -> bool:
            texts = [await metrics(session, gw) for gw in gateways]
            return all(total(t, "sluice_state_store_up") == value for t in texts)

        async def outage() -> None:
            await asyncio.sleep(1.5)
            replicas.redis.kill()
            await wait_for(lambda: state_up(0.0), 5.0, "both replicas noticing Redis gone")
            await asyncio.sleep(2.0)
            replicas.redis.start()
            await wait_for(lambda: state_up(1.0), 5.0, "both replicas rejoining")

        # 30 req/s at each replica for 8 s; `send` asserts that every answer is a 200.
        rng = np.random.default_rng(7)
        await asyncio.gather(send(gateways[0].url, 30.0, 8.0, rng), send(gateways[1].url, 30.0, 8.0, rng), outage())

        async def one_leader() -> bool:
            flags = [total(await metrics(session, gw), "sluice_leader", model="demo") for gw in gateways]
            return sorted(flags) == [0.0, 1.0]

        await wait_for(one_leader, 2 * LEASE_S, "one leader again after Redis came back")
        texts = [await metrics(session, gw) for gw in gateways]
    for gw, text in zip(gateways, texts):
        assert gw.stop() == 0
        messages = [e.get("msg") for e in gw.logs()]
        assert "state store unreachable; going on with local state" in messages
        assert "state store reachable again; rejoined the cluster" in messages
        assert total(text, "sluice_state_store_errors_total") > 0
        assert total(text, "sluice_requests_total", code="200") == total(text, "sluice_requests_total") >= 200
