"""The local worker pool as a provider a planner drives: it grows and shrinks while serving,
with real processes, and a worker taken out finishes its batch first."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from backends import LocalWorkerPool

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


async def test_the_pool_grows_and_shrinks_and_a_removed_worker_finishes_its_batch(demo_path, reference) -> None:
    pool = LocalWorkerPool(str(demo_path), "demo", 1)
    await pool.start()
    try:
        assert len(pool.instances) == 1
        added = await pool.add_instance()
        assert added.healthy and len(pool.instances) == 2 and len(pool.pids()) == 2
        assert len(pool.startup_seconds) == 2 and all(s > 0 for s in pool.startup_seconds)
        x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        added.inflight += 1  # as the runner does when it dispatches
        running = asyncio.ensure_future(added.backend.infer({"x": x}))
        removing = asyncio.ensure_future(pool.remove_instance(added))
        await asyncio.sleep(0)
        assert not added.healthy, "no new batches for a worker being removed"
        outputs = await running
        added.inflight -= 1
        await removing
        np.testing.assert_allclose(outputs["y"], reference(x), rtol=1e-5, atol=1e-6)
        assert len(pool.instances) == 1 and added not in pool.instances
        remaining = pool.pids()
        assert len(remaining) == 1
        await asyncio.sleep(1.5)  # a removed worker is not restarted by its supervisor
        assert pool.pids() == remaining and len(pool.instances) == 1
    finally:
        pids = pool.pids()
        await pool.stop()
    assert not any(alive(pid) for pid in pids)
