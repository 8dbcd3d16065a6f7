"""End to end: a real `sluice serve` with real worker processes, over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import numpy as np
import pytest

from backends.oip import HEADER_LENGTH, decode_response, encode_request

from support import metric, output, scrape, start_gateway, v2_body

pytestmark = pytest.mark.e2e


async def infer(session: aiohttp.ClientSession, url: str, x: np.ndarray, **kw) -> tuple[int, dict]:
    async with session.post(f"{url}/v2/models/demo/infer", json=v2_body(x), **kw) as resp:
        return resp.status, await resp.json()


async def test_concurrent_clients_get_correct_outputs_in_batches(gateway, reference):
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((int(rng.integers(1, 3)), 256)).astype(np.float32) for _ in range(96)]
    before = await scrape(gateway.url)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(infer(session, gateway.url, x) for x in inputs))
    for x, (status, doc) in zip(inputs, results):
        assert status == 200, doc
        np.testing.assert_allclose(output(doc), reference(x), rtol=1e-4, atol=1e-5)
    after = await scrape(gateway.url)
    batches = metric(after, "sluice_batch_size_count", model="demo") - metric(before, "sluice_batch_size_count", model="demo")
    rows = metric(after, "sluice_batch_size_sum", model="demo") - metric(before, "sluice_batch_size_sum", model="demo")
    assert rows == sum(len(x) for x in inputs)
    assert batches < len(inputs) / 2, f"{batches} batches for {len(inputs)} concurrent requests: batching did not happen"
    assert metric(after, "sluice_requests_total", model="demo", code="200") >= len(inputs)


async def test_bad_input_gets_4xx_and_never_reaches_a_batch(gateway):
    good = np.ones((1, 256), np.float32)
    cases = [
        ("malformed json", b"{not json", 400),
        ("not an object", b"[1, 2]", 400),
        ("no inputs", b'{"inputs": []}', 400),
        ("wrong datatype", {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "INT32", "data": [1] * 256}]}, 400),
        ("unknown datatype", {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP8", "data": [1] * 256}]}, 400),
        ("wrong shape", {"inputs": [{"name": "x", "shape": [1, 255], "datatype": "FP32", "data": [1.0] * 255}]}, 400),
        ("wrong rank", {"inputs": [{"name": "x", "shape": [256], "datatype": "FP32", "data": [1.0] * 256}]}, 400),
        ("shape and data disagree", {"inputs": [{"name": "x", "shape": [2, 256], "datatype": "FP32", "data": [1.0] * 256}]}, 400),
        ("strings as floats", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]}, 400),
        ("wrong input name", v2_body(good, name="z"), 400),
        ("unknown output", v2_body(good, outputs=[{"name": "nope"}]), 400),
        ("bad timeout", v2_body(good, parameters={"timeout": "soon"}), 400),
    ]
    before = await scrape(gateway.url)
    async with aiohttp.ClientSession() as session:
        for label, body, status in cases:
            kw = {"data": body} if isinstance(body, bytes) else {"json": body}
            async with session.post(f"{gateway.url}/v2/models/demo/infer", **kw) as resp:
                doc = await resp.json()
                assert resp.status == status, (label, doc)
                assert isinstance(doc.get("error"), str) and doc["error"], label
        async with session.post(f"{gateway.url}/v2/models/nope/infer", json=v2_body(good)) as resp:
            assert resp.status == 404 and "nope" in (await resp.json())["error"]
        async with session.post(f"{gateway.url}/v2/models/demo/versions/7/infer", json=v2_body(good)) as resp:
            assert resp.status == 404
        big = b'{"inputs": [' + b" " * 1_100_000 + b"]}"
        async with session.post(f"{gateway.url}/v2/models/demo/infer", data=big) as resp:
            assert resp.status == 413 and "error" in await resp.json()
        middle = await scrape(gateway.url)
        assert metric(middle, "sluice_batch_size_count", model="demo") == metric(before, "sluice_batch_size_count", model="demo")
        status, doc = await infer(session, gateway.url, good)  # and it keeps serving
        assert status == 200, doc


async def test_kserve_v1_predict_and_metadata(gateway, reference):
    x = np.random.default_rng(2).standard_normal((3, 256)).astype(np.float32)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/v1/models/demo:predict", json={"instances": x.tolist()}) as resp:
            assert resp.status == 200
            predictions = np.asarray((await resp.json())["predictions"], dtype=np.float32)
        np.testing.assert_allclose(predictions, reference(x), rtol=1e-4, atol=1e-5)
        async with session.post(f"{gateway.url}/v1/models/demo:predict", json={"instances": [[1.0, 2.0]]}) as resp:
            assert resp.status == 400
        async with session.get(f"{gateway.url}/v2/models/demo") as resp:
            meta = await resp.json()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}]
        assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}]
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/demo/ready", "/v2", "/v1/models/demo"):
            async with session.get(gateway.url + path) as resp:
                assert resp.status == 200, path


async def test_request_id_deadline_and_binary_tensors(gateway, reference):
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(np.float32)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway.url}/v2/models/demo/infer", json=v2_body(x, id="abc"), headers={"X-Request-Id": "trace-42"}
        ) as resp:
            assert resp.headers["X-Request-Id"] == "trace-42"
            assert (await resp.json())["id"] == "abc"
        # 1 ms is shorter than the 10 ms batch timeout: a lone request cannot make it, and
        # admission control (which has measured a batch by now) says so at once.
        async with session.post(f"{gateway.url}/v2/models/demo/infer", json=v2_body(x),
                                headers={"X-Request-Timeout-Ms": "1"}) as resp:  # fmt: skip
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            assert "cannot answer in time" in (await resp.json())["error"]
        body, length = encode_request({"x": x}, binary=True)
        headers = {HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream"}
        async with session.post(f"{gateway.url}/v2/models/demo/infer", data=body, headers=headers) as resp:
            assert resp.status == 200
            outputs = decode_response(await resp.read(), int(resp.headers[HEADER_LENGTH]))
        np.testing.assert_allclose(outputs["y"], reference(x), rtol=1e-4, atol=1e-5)
    logs = [e for e in gateway.logs() if e.get("request_id") == "trace-42"]
    assert logs and logs[0]["status"] == 200 and logs[0]["path"] == "/v2/models/demo/infer"


async def test_killed_worker_has_its_batch_retried(tmp_path, demo_path, reference):
    gw = start_gateway(tmp_path, "--model", f"demo={demo_path}", "--workers", "2", "--threads", "1",
                       "--batch-size", "8", "--timeout-ms", "2", "--max-body-bytes", "40000000")  # fmt: skip
    try:
        rng = np.random.default_rng(4)
        # Large requests keep both workers busy for a few hundred ms each.
        big = [rng.standard_normal((12000, 256)).astype(np.float32) for _ in range(4)]
        small = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(60)]
        async with aiohttp.ClientSession() as session:

            async def send_big(x: np.ndarray) -> np.ndarray:
                body, length = encode_request({"x": x}, binary=True)
                headers = {HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream"}
                async with session.post(f"{gw.url}/v2/models/demo/infer", data=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    return decode_response(await resp.read(), int(resp.headers[HEADER_LENGTH]))["y"]

            async def send_small(x: np.ndarray, delay: float) -> np.ndarray:
                await asyncio.sleep(delay)
                status, doc = await infer(session, gw.url, x)
                assert status == 200, doc
                return output(doc)

            async def kill_one() -> None:
                # Wait until both workers hold a batch, so the kill surely lands mid-batch.
                for _ in range(500):
                    if metric(await scrape(gw.url), "sluice_batches_in_flight", model="demo") >= 2:
                        break
                    await asyncio.sleep(0.01)
                else:
                    pytest.fail("the workers never both held a batch")
                os.kill(gw.worker_pids()[0], signal.SIGKILL)

            tasks = [send_big(x) for x in big] + [send_small(x, i * 0.02) for i, x in enumerate(small)]
            *results, _ = await asyncio.gather(*tasks, kill_one())
        for x, y in zip(big + small, results):
            np.testing.assert_allclose(y, reference(x), rtol=1e-4, atol=1e-4)
        samples = await scrape(gw.url)
        assert metric(samples, "sluice_batch_retries_total", model="demo") >= 1
        assert any(e.get("msg") == "worker exited; restarting" for e in gw.logs())
    finally:
        assert gw.stop() == 0
    assert not gw.worker_pids(), "workers outlived the gateway"


async def test_sigterm_answers_every_queued_and_in_flight_request(tmp_path, demo_path, reference):
    # A long batch timeout keeps requests queued in the gateway when SIGTERM arrives.
    gw = start_gateway(tmp_path, "--model", f"demo={demo_path}", "--workers", "1",
                       "--batch-size", "32", "--timeout-ms", "3000")  # fmt: skip
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(45)]
    async with aiohttp.ClientSession() as session:
        pending = [asyncio.ensure_future(infer(session, gw.url, x)) for x in inputs]
        for _ in range(100):  # until every request is admitted and waiting
            await asyncio.sleep(0.02)
            if metric(await scrape(gw.url), "sluice_queue_depth", model="demo") >= len(inputs) - 32:
                break
        started = asyncio.get_running_loop().time()
        gw.process.send_signal(signal.SIGTERM)
        results = await asyncio.wait_for(asyncio.gather(*pending), 20)
        answered_in = asyncio.get_running_loop().time() - started
    for x, (status, doc) in zip(inputs, results):
        assert status == 200, doc
        np.testing.assert_allclose(output(doc), reference(x), rtol=1e-4, atol=1e-5)
    assert answered_in < 2.5, "queued requests waited for their batch timeout instead of the drain"
    assert gw.process.wait(20) == 0
    assert not gw.worker_pids()


def test_a_model_that_cannot_start_stops_the_gateway_cleanly(tmp_path, demo_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not an onnx model")
    for model, message in ((str(tmp_path / "missing.onnx"), "no model file"), (str(bogus), "did not start")):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--port", "0", "--workers", "1",
             "--model", f"demo={demo_path}", "--model", f"broken={model}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr[-2000:]
        assert message in done.stderr.splitlines()[-1]
        started = [json.loads(line)["pid"] for line in done.stderr.splitlines() if '"worker started"' in line]
        assert started, "the good model's worker should have started first"
        for pid in started:  # and been stopped with the gateway
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
