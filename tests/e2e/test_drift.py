"""End to end: a served model's inputs and outputs watched for drift, with real workers.
A reference file of the model's inputs; traffic from the same distribution, then with one
feature shifted by half a standard deviation; the scores in /metrics and at /admin."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from gateway.drift import TensorSketch, Thresholds, score

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


async def test_two_replicas_score_the_merge_of_their_sketches(tmp_path: Path, redis_server) -> None:
    """Replica A sees one feature shifted, B sees none, in the same slot: both report the score
    of all rows together (half of them shifted), not their own."""
    rng = np.random.default_rng(9)
    model = linear_model(tmp_path / "lin.onnx", 1.0)
    reference = rng.standard_normal((20_000, 4)).astype(np.float32)
    np.savez(tmp_path / "reference.npz", x=reference)
    window_s = 4.0
    config = tmp_path / "sluice.toml"
    config.write_text(f"""
[state]
url = "{redis_server.url}"
sync_s = 0.2
[models.lin]
path = "{model}"
workers = 1
[models.lin.drift]
reference = "{tmp_path / 'reference.npz'}"
window_s = {window_s}
""")
    env = {"SLUICE_ADMIN_TOKEN": TOKEN}
    a, b = start_gateway(tmp_path, "--config", str(config), env=env), start_gateway(tmp_path, "--config", str(config), env=env)
    try:
        shifted, plain = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
        shifted[:, 2] += 0.8
        async with aiohttp.ClientSession() as session:
            # teach both replicas the output reference (1000 rows each) before the measured slot
            await asyncio.gather(send_rows(session, a.url, rng.standard_normal((1000, 4))),
                                 send_rows(session, b.url, rng.standard_normal((1000, 4))))  # fmt: skip
            loop = asyncio.get_running_loop()
            await asyncio.sleep(window_s - time.time() % window_s + 0.05)  # the start of a slot
            began = time.time()
            await asyncio.gather(send_rows(session, a.url, shifted), send_rows(session, b.url, plain))
            assert time.time() - began < window_s - 0.1, "the rows did not fit in one slot"

            async def last(gw) -> dict | None:
                async with session.get(f"{gw.url}/admin/models/lin/drift", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    return (await resp.json())["versions"][0]["last"]

            give_up = loop.time() + 4 * window_s
            while loop.time() < give_up:
                reports = [await last(gw) for gw in (a, b)]
                if all(r is not None and r["replicas"] == 2 and r["tensors"]["x"]["rows"] == 800 for r in reports):
                    break
                await asyncio.sleep(0.3)
            assert all(r is not None and r["replicas"] == 2 and r["tensors"]["x"]["rows"] == 800 for r in reports), reports
        both = np.concatenate([shifted, plain])
        expected = score({"x": sketch(reference)}, {"x": sketch(both)}, Thresholds())["x"]["features"]
        alone = score({"x": sketch(reference)}, {"x": sketch(shifted)}, Thresholds())["x"]["features"]
        for report in reports:
            got = report["tensors"]["x"]["features"]
            for feature in expected:
                assert got[feature]["psi"] == pytest.approx(expected[feature]["psi"], abs=0.03), (feature, got, expected)
                assert got[feature]["ks"] == pytest.approx(expected[feature]["ks"], abs=0.03)
            assert got["x[2]"]["psi"] < alone["x[2]"]["psi"] - 0.1  # not A's own score
    finally:
        assert a.stop() == 0 and b.stop() == 0


def sketch(rows: np.ndarray) -> TensorSketch:
    tensor = TensorSketch("input")
    tensor.update("x", rows, 32)
    return tensor


def image_model(path: Path) -> Path:
    """img [N, 3, 8, 8] -> y [N, 3], the mean of each channel: an image-like input."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["img"], ["y"], axes=[2, 3], keepdims=0)], "image",
                              [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


async def test_an_image_channel_made_brighter_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    model = image_model(tmp_path / "image.onnx")
    config = tmp_path / "sluice.toml"
    config.write_text(f'[models.img]\npath = "{model}"\nworkers = 1\n[models.img.drift]\nreference_requests = 500\nwindow_requests = 500\n')
    gw = start_gateway(tmp_path, "--config", str(config), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as session:

            async def send(images: np.ndarray) -> None:
                queue = list(images)

                async def worker() -> None:
                    while queue:
                        image = queue.pop()[None].astype(np.float32)
                        async with session.post(f"{gw.url}/v2/models/img/infer", json=v2_body(image, name="img")) as resp:
                            assert resp.status == 200, await resp.text()

                await asyncio.gather(*(worker() for _ in range(16)))

            await send(rng.normal(0.5, 0.2, (500, 3, 8, 8)))  # the reference: the first 500 images
            brighter = rng.normal(0.5, 0.2, (700, 3, 8, 8))
            brighter[:, 1] += 0.02  # the green channel, a tenth of its spread brighter
            await send(brighter)
            await asyncio.sleep(0.3)
            async with session.get(f"{gw.url}/admin/models/img/drift", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                last = (await resp.json())["versions"][0]["last"]
        report = last["tensors"]["img"]
        assert report["worst_feature"] == "img[1].mean" and report["over_threshold"] >= 1, report
        assert report["features"]["img[0].mean"]["psi"] < 0.1 and report["features"]["img[2].mean"]["psi"] < 0.1
    finally:
        assert gw.stop() == 0
