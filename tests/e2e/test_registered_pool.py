"""Servers that register themselves: the admin endpoint's token, and a gateway served only by
`sluice worker --register` processes that come and go (leases and leaving, in process, are in
unit/test_registered_pool.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
import time

import aiohttp
import numpy as np
import pytest

from support import AUTH, TOKEN, send, start_emulator, start_gateway, start_worker, total, v2_body, wait_members


async def wait_ready(session: aiohttp.ClientSession, url: str, limit_s: float) -> None:
    give_up = time.monotonic() + limit_s
    while True:
        async with session.get(f"{url}/v2/models/demo/ready") as resp:
            if resp.status == 200:
                return
        assert time.monotonic() < give_up, "the model did not start after its servers joined"
        await asyncio.sleep(0.1)


async def infer_all(session: aiohttp.ClientSession, url: str, n: int) -> list[int]:
    body = v2_body(np.ones((1, 256), np.float32))

    async def one() -> int:
        async with session.post(f"{url}/v2/models/demo/infer", json=body) as resp:
            await resp.read()
            return resp.status

    return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.e2e
async def test_workers_join_serve_and_leave_a_gateway_by_themselves(tmp_path, demo_path, monkeypatch) -> None:
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", TOKEN)
    config = tmp_path / "sluice.toml"
    config.write_text(textwrap.dedent("""
        [models.demo]
        registered = true
        lease_s = 3
        batch_size = 8
        timeout_ms = 5
        unavailable_grace_s = 1
    """))
    gw = start_gateway(tmp_path, "--config", str(config))
    workers: list[subprocess.Popen] = []
    try:
        async with aiohttp.ClientSession() as session:
            # No server yet: the model says so at once, with Retry-After, and the gateway is not ready.
            async with session.post(f"{gw.url}/v2/models/demo/infer", json=v2_body(np.ones((1, 256), np.float32))) as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
            async with session.get(f"{gw.url}/v2/health/ready") as resp:
                assert resp.status == 503
            # The control endpoint wants the token.
            async with session.get(f"{gw.url}/admin/models/demo/instances") as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
            async with session.get(f"{gw.url}/admin/models/demo/instances", headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401
            async with session.post(f"{gw.url}/admin/models/demo/instances", headers=AUTH, json={"url": "ftp://x"}) as resp:
                assert resp.status == 400
            async with session.post(f"{gw.url}/admin/models/nope/instances", headers=AUTH, json={"url": "http://h:1"}) as resp:
                assert resp.status == 404

            workers = [start_worker(demo_path, gw.url, lease_s=3.0) for _ in range(2)]
            await wait_members(session, gw.url, 2, healthy=True, limit_s=60.0)
            await wait_ready(session, gw.url, limit_s=30.0)  # the model starts once a server has joined
            statuses = await infer_all(session, gw.url, 200)
            assert statuses.count(200) == 200

            # One dies without a word: its lease runs out, and the survivor serves everything.
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()
            statuses = await infer_all(session, gw.url, 100)
            assert statuses.count(200) == 100, "a lost batch is retried on the other server"
            await wait_members(session, gw.url, 1, healthy=True, limit_s=15.0)
            assert any(e.get("msg") == "instance lease expired" for e in gw.logs())

            # The other stops on purpose: it deregisters, finishing what it holds.
            workers[1].send_signal(signal.SIGTERM)
            assert workers[1].wait(10.0) == 0
            await wait_members(session, gw.url, 0, healthy=True, limit_s=10.0)
            expired = [e for e in gw.logs() if e.get("msg") == "instance lease expired"]
            assert len(expired) == 1, "the second left by deregistering, not by its lease running out"
            assert sum(e.get("msg") == "instance leaving" for e in gw.logs()) == 1
            async with session.post(f"{gw.url}/v2/models/demo/infer", json=v2_body(np.ones((1, 256), np.float32))) as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert gw.stop() == 0


@pytest.mark.e2e
@pytest.mark.usefixtures("aws_credentials")
async def test_a_registered_server_beside_a_function_takes_batches_once_it_joins(tmp_path, demo_path, monkeypatch) -> None:
    """Registered servers and a function under the hybrid scheduler: the function serves
    from the start; once a server joins (and is measured), batches go to it, an idle
    server being already paid for. The plan is published, never carried out."""
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", TOKEN)
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "8")
    config = tmp_path / "sluice.toml"
    config.write_text(textwrap.dedent(f"""
        [models.demo]
        registered = true
        batch_size = 8
        timeout_ms = 10
        plan_interval_s = 1
        [models.demo.faas]
        function = "demo"
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:{emulator.port}"
    """))
    gw = start_gateway(tmp_path, "--config", str(config))
    worker = None
    try:
        rng = np.random.default_rng(3)
        await send(gw.url, 30.0, 3.0, rng)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gw.url}/metrics") as resp:
                before = await resp.text()
            worker = start_worker(demo_path, gw.url, lease_s=6.0)
            await wait_members(session, gw.url, 1, healthy=True, limit_s=60.0)
            give_up = time.monotonic() + 30.0
            while not any(e.get("msg") == "servers measured" for e in gw.logs()):
                assert time.monotonic() < give_up, "the joined server was not measured"
                await asyncio.sleep(0.2)
            await send(gw.url, 30.0, 4.0, rng)
            async with session.get(f"{gw.url}/metrics") as resp:
                after = await resp.text()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        assert gw.stop() == 0
        assert emulator.stop() == 0
    assert total(before, "sluice_placements_total", target="faas") > 0
    assert total(before, "sluice_placements_total", target="pool") == 0
    to_pool = total(after, "sluice_placements_total", target="pool")
    to_faas = total(after, "sluice_placements_total", target="faas") - total(before, "sluice_placements_total", target="faas")
    assert to_pool > 5 * max(1.0, to_faas), (to_pool, to_faas)
    assert "sluice_pool_desired_instances" in after
    assert not any(e.get("msg") == "pool grew" for e in gw.logs()), "registered servers are not ours to start"
    assert total(after, "sluice_requests_total", code="200") == total(after, "sluice_requests_total")
