"""The upstream backend: the gateway in front of another Open Inference Protocol server.

The upstream here is a standalone `sluice worker`, a protocol server the gateway
did not start; the gateway reaches it through its generic (aiohttp, JSON) client.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from support import start_gateway, start_upstream, stop_upstream, v2_body

pytestmark = pytest.mark.e2e


async def test_upstream_serves_fails_clearly_and_recovers(tmp_path, demo_path, reference):
    upstream, port = start_upstream(str(demo_path))
    config = tmp_path / "sluice.toml"
    config.write_text(
        f"""
[server]
request_timeout_s = 20

[batching]
batch_size = 8
timeout_ms = 5

[models.demo]
upstream = "http://127.0.0.1:{port}"
unavailable_grace_s = 1.0
"""
    )
    gw = start_gateway(tmp_path, "--config", str(config))
    try:
        rng = np.random.default_rng(11)
        inputs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(24)]
        url = f"{gw.url}/v2/models/demo/infer"
        async with aiohttp.ClientSession() as session:

            async def call(x: np.ndarray) -> tuple[int, dict, dict]:
                async with session.post(url, json=v2_body(x)) as resp:
                    return resp.status, dict(resp.headers), await resp.json()

            results = await asyncio.gather(*(call(x) for x in inputs))
            for x, (status, _, doc) in zip(inputs, results):
                assert status == 200, doc
                y = np.asarray(doc["outputs"][0]["data"], np.float32).reshape(doc["outputs"][0]["shape"])
                np.testing.assert_allclose(y, reference(x), rtol=1e-4, atol=1e-5)

            stop_upstream(upstream)  # the upstream goes away: a clear 503 after the grace, not a 20 s wait
            started = asyncio.get_running_loop().time()
            status, headers, doc = await call(inputs[0])
            waited = asyncio.get_running_loop().time() - started
            assert status == 503 and "Retry-After" in headers, doc
            assert waited < 5.0

            upstream, _ = start_upstream(str(demo_path), port)  # back on the same port
            for _ in range(100):  # the pool's probe notices within its back-off
                status, _, doc = await call(inputs[1])
                if status == 200:
                    break
                await asyncio.sleep(0.2)
            assert status == 200, doc
    finally:
        stop_upstream(upstream)
        assert gw.stop() == 0
