"""`sluice serve --slo-ms`: the adaptive policy measures, tunes and batches, live."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import start_gateway, v2_body

pytestmark = pytest.mark.e2e


async def scrape(url: str) -> dict[tuple[str, str | None], float]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, s.labels.get("le")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("model") == "demo"
    }


async def send(url: str, rate: float, seconds: float, rng: np.random.Generator) -> None:
    """Poisson arrivals at `rate` for `seconds`; every answer must be a 200."""
    x = rng.standard_normal((1, 256)).astype(np.float32)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def one(at: float) -> None:
            await asyncio.sleep(max(0.0, at - loop.time()))
            async with session.post(f"{url}/v2/models/demo/infer", json=v2_body(x)) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        start = loop.time() + 0.1
        times = start + np.cumsum(rng.exponential(1 / rate, size=int(rate * seconds)))
        await asyncio.gather(*(one(t) for t in times))


async def test_adaptive_policy_tunes_from_live_traffic_and_meets_a_loose_slo(tmp_path, demo_path) -> None:
    gw = start_gateway(tmp_path, "--model", f"demo={demo_path}", "--workers", "1", "--slo-ms", "100", "--percentile", "95")
    try:
        rng = np.random.default_rng(9)
        await send(gw.url, 120.0, 7.0, rng)  # the policy learns the traffic and re-tunes
        before = await scrape(gw.url)
        await send(gw.url, 120.0, 8.0, rng)
        after = await scrape(gw.url)
    finally:
        assert gw.stop() == 0
    assert after[("sluice_policy_retunes", None)] >= 1
    assert after[("sluice_batch_size_limit", None)] > 1, "at 120/s with a 100 ms SLO, batching should pay"
    assert after[("sluice_arrival_rate", None)] == pytest.approx(120.0, rel=0.25)
    # The gateway's own latency histogram (0.1 s is one of its bucket bounds), over the
    # second phase only: the SLO holds at the percentile once tuned.
    within = after[("sluice_request_duration_seconds_bucket", "0.1")] - before[("sluice_request_duration_seconds_bucket", "0.1")]
    total = after[("sluice_request_duration_seconds_count", None)] - before[("sluice_request_duration_seconds_count", None)]
    assert total >= 0.8 * 120 * 8
    assert within / total >= 0.95
    assert any(e.get("msg") == "re-tuned" for e in gw.logs())
