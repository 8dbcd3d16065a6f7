"""Profile round trip: `sluice profile` measures the emulated function, `sluice sim` predicts a
live fixed (B, T) run through the gateway to it on a replayed Poisson trace, within 15% at p50
and 25% at p99 (the issue's bound), latency taken from each request's scheduled send time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import numpy as np
import pytest

from support import start_emulator, start_gateway, v2_body

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("aws_credentials")]

RATE, REQUESTS = 25.0, 500  # a Poisson trace of about 20 s
BATCH_SIZE, TIMEOUT_MS = 16, 150  # waits dominate, as with batching they do; the gateway adds a few ms
# Environments warmed before the run, here and in the simulation. One would do on a quiet host;
# on a busy one a batch can outlast the next one's timeout, and the second environment's cold
# start (about 80 ms) then lands in the live p99 alone: 232 ms against 153 predicted, twice.
WARM = 3


def warm_environments(endpoint: str, count: int) -> None:
    """`count` keep-warm invocations at once: each arrives while the others cold-start, so
    each starts an environment of its own."""
    def ping() -> None:
        request = urllib.request.Request(f"{endpoint}/2015-03-31/functions/demo/invocations", b'{"sluice": "ping"}')
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda _: ping(), range(count)))


def sluice(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def replay(url: str, times: np.ndarray) -> np.ndarray:
    """Send one request at each time (seconds from now); latency of each from its send time."""
    x = np.random.default_rng(2).standard_normal((1, 256)).astype(np.float32)
    body = v2_body(x)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(at: float) -> float:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            async with session.post(f"{url}/v2/models/demo/infer", json=body) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
            return loop.time() - (start + at)

        return np.array(await asyncio.gather(*(one(t) for t in times)))


async def test_a_measured_profile_predicts_the_live_run(tmp_path, demo_path) -> None:
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "8", "--memory-mb", "1024")
    endpoint = f"http://127.0.0.1:{emulator.port}"
    gw = None
    try:
        profile = sluice(
            "profile", "--target", "faas", "--function", "demo", "--endpoint-url", endpoint, "--region", "us-east-1",
            "--batch-sizes", "1,2,4,8,16", "--repeats", "5", "--cold-starts", "1", "--json",
            "--output", str(tmp_path / "profile.json"),
        )  # fmt: skip
        assert set(profile["faas"]["memory_mb"]) == {"1024"} and profile["faas"]["cold_start_ms"] > 0
        times = np.cumsum(np.random.default_rng(8).exponential(1 / RATE, REQUESTS))
        times -= times[0]
        (tmp_path / "trace.txt").write_text("".join(f"{t:.6f}\n" for t in times))
        config = tmp_path / "sluice.toml"
        config.write_text(textwrap.dedent(f"""
            [models.demo]
            batch_size = {BATCH_SIZE}
            timeout_ms = {TIMEOUT_MS}
            [models.demo.faas]
            function = "demo"
            region = "us-east-1"
            endpoint_url = "{endpoint}"
            concurrency = 8
        """))
        warm_environments(endpoint, WARM)
        gw = start_gateway(tmp_path, "--config", str(config))
        live = await replay(gw.url, times)
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    predicted = sluice(
        "sim", "--trace", str(tmp_path / "trace.txt"), "--profile", str(tmp_path / "profile.json"), "--slo-ms", "500",
        "--percentile", "99", "--policy", "fixed", "--batch-size", str(BATCH_SIZE), "--timeout-ms", str(TIMEOUT_MS),
        "--memory-mb", "1024", "--warm-environments", str(WARM), "--json",
    )["latency_ms"]  # fmt: skip
    p50, p99 = (float(np.percentile(live, q)) * 1e3 for q in (50, 99))
    assert p50 == pytest.approx(predicted["p50"], rel=0.15), (p50, p99, predicted)
    assert p99 == pytest.approx(predicted["p99"], rel=0.25), (p50, p99, predicted)


def test_profile_and_sim_read_the_serve_config(tmp_path, demo_path) -> None:
    """`sluice profile --config` measures the model's worker and its function into one
    profile, with the config's prices; `sluice sim --config` runs on it."""
    emulator = start_emulator("--function", f"demo={demo_path}", "--memory-mb", "1024")
    try:
        config = tmp_path / "sluice.toml"
        config.write_text(textwrap.dedent(f"""
            [models.demo]
            path = "{demo_path}"
            workers = 1
            max_workers = 2
            instance_price_per_hour = 0.02
            [models.demo.faas]
            function = "demo"
            region = "us-east-1"
            endpoint_url = "http://127.0.0.1:{emulator.port}"
            memory_mb = 1024
            price_per_gb_s = 0.00002
        """))
        profile = sluice("profile", "--config", str(config), "--batch-sizes", "1,4,16", "--repeats", "3",
                         "--cold-starts", "1", "--json", "--output", str(tmp_path / "profile.json"))  # fmt: skip
        assert set(profile) == {"name", "iaas", "faas"}
        assert profile["iaas"]["price_per_hour"] == 0.02 and profile["iaas"]["startup_s"] > 0
        assert set(profile["iaas"]["batch_ms"]) == {"1", "4", "16"}
        assert profile["faas"]["price_per_gb_s"] == 0.00002 and set(profile["faas"]["memory_mb"]) == {"1024"}
        result = sluice("sim", "--config", str(config), "--profile", str(tmp_path / "profile.json"),
                        "--arrivals", "poisson:rate=200", "--duration", "10", "--json")  # fmt: skip
        assert result["requests"] == result["completed"] > 1500
        assert result["settings"]["scheduler"] == "hybrid" and result["cost_usd"] > 0
    finally:
        assert emulator.stop() == 0
