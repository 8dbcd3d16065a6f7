"""End to end: a served model's inputs and outputs watched for drift, with real workers.
A reference file of the model's inputs; traffic from the same distribution, then with one
feature shifted by half a standard deviation; the scores in /metrics and at /admin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from support import linear_model, metric, scrape, start_gateway, v2_body

pytestmark = pytest.mark.e2e

TOKEN = "drift-test-token"


async def send_rows(session: aiohttp.ClientSession, url: str, xs: np.ndarray, concurrency: int = 16) -> None:
    rows = list(xs)

    async def worker() -> None:
        while rows:
            x = rows.pop()
            async with session.post(f"{url}/v2/models/lin/infer", json=v2_body(x[None, :].astype(np.float32))) as resp:
                assert resp.status == 200, await resp.text()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def test_a_shifted_feature_is_scored_and_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    model = linear_model(tmp_path / "lin.onnx", 1.0)
    np.savez(tmp_path / "reference.npz", x=rng.standard_normal((20_000, 4)).astype(np.float32))
    config = tmp_path / "sluice.toml"
    config.write_text(f"""
[models.lin]
path = "{model}"
workers = 1
[models.lin.drift]
reference = "{tmp_path / 'reference.npz'}"
reference_requests = 400
window_requests = 400
window_s = 60
""")
    gw = start_gateway(tmp_path, "--config", str(config), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as session:
            labels = {"model": "lin", "version": "1", "tensor": "x"}
            # The file has inputs only: the first 400 rows teach the output reference; inputs are
            # watched from the first row: two windows of 400 and some.
            await send_rows(session, gw.url, rng.standard_normal((1200, 4)))
            await asyncio.sleep(0.3)
            samples = await scrape(gw.url)
            assert metric(samples, "sluice_drift_score", statistic="psi", **labels) < 0.1
            assert metric(samples, "sluice_drift_features_over_threshold", **labels) == 0
            # Windows close at the batch that passes 400 rows, so a little later each time: 600
            # shifted rows fill the next window whole.
            shifted = rng.standard_normal((600, 4))
            shifted[:, 2] += 0.5
            await send_rows(session, gw.url, shifted)
            await asyncio.sleep(0.3)
            samples = await scrape(gw.url)
            assert metric(samples, "sluice_drift_score", statistic="psi", **labels) > 0.1
            assert metric(samples, "sluice_drift_features_over_threshold", **labels) >= 1
            async with session.get(f"{gw.url}/admin/models/lin/drift", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                (watched,) = (await resp.json())["versions"]
            assert watched["windows"] == 4 and watched["last"]["tensors"]["x"]["worst_feature"] == "x[2]", watched
            assert "y" in watched["last"]["tensors"]  # the output, a 3-class classifier's, watched too
    finally:
        assert gw.stop() == 0


def test_a_reference_that_does_not_fit_the_model_stops_the_start_naming_it(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "lin.onnx", 1.0)
    np.savez(tmp_path / "reference.npz", x=np.zeros((10, 7), np.float32))
    config = tmp_path / "sluice.toml"
    config.write_text(f'[models.lin]\npath = "{model}"\nworkers = 1\n[models.lin.drift]\nreference = "{tmp_path / "reference.npz"}"\n')
    with pytest.raises(RuntimeError, match=r"\[drift\] reference .*shape \(10, 7\)"):
        start_gateway(tmp_path, "--config", str(config))
