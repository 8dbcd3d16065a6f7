"""Faults behind the gateway, with real workers: a request whose content breaks its batch,
and priorities and admission under a backlog. Every request gets exactly one answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from support import heavy_model, start_gateway, total, v2_body

pytestmark = pytest.mark.e2e

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)


def lookup_model(path: Path) -> Path:
    """An embedding lookup: `ids` INT64 [N, 1] -> rows of a 10 x 4 table. An id outside
    0..9 passes every check the gateway can make (type, shape) and fails inside
    onnxruntime, failing the whole batch it is in."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", 1, 4])],
        initializer=[numpy_helper.from_array(TABLE, "table")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def ids_body(i: int) -> dict:
    return {"inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [i]}]}


async def test_a_bad_request_is_bisected_out_of_its_batch(tmp_path: Path) -> None:
    """15 good ids and one out of range, in one batch of 16: the good ones get their rows,
    only the bad one gets the error, in about 2 log2(16) extra batches."""
    model = lookup_model(tmp_path / "lookup.onnx")
    # A long timeout: the batch closes on size, however slowly the 16 arrive.
    gw = start_gateway(tmp_path, "--model", f"lookup={model}", "--workers", "1", "--batch-size", "16",
                       "--timeout-ms", "10000")  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> tuple[int, dict]:
                async with session.post(f"{gw.url}/v2/models/lookup/infer", json=ids_body(i)) as resp:
                    return resp.status, await resp.json()

            ids = [i % 10 for i in range(15)] + [99]
            answers = await asyncio.gather(*(one(i) for i in ids))
            async with session.get(f"{gw.url}/metrics") as resp:
                metrics = await resp.text()
    finally:
        assert gw.stop() == 0
    for i, (status, doc) in zip(ids, answers):
        if i == 99:
            assert status == 502 and "error" in doc, doc
        else:
            assert status == 200, doc
            assert doc["outputs"][0]["data"] == TABLE[i].tolist()
    bisections = total(metrics, "sluice_batch_bisections_total")
    assert 1 <= bisections <= 2 * 4, bisections
    assert total(metrics, "sluice_batches_closed_total", reason="size") == 1, "all 16 were one batch"
    assert total(metrics, "sluice_requests_total", code="200") == 15


async def test_under_a_backlog_higher_priority_goes_first_and_hopeless_requests_are_refused_at_once(
    tmp_path: Path,
) -> None:
    """One single-threaded worker, one request a batch, a backlog of 200 low-priority
    requests: a burst of priority-5 requests sent after them is answered before most of
    them; and a request with a deadline the backlog cannot meet gets 429 with Retry-After
    at once, not a 504 later. Each request is 8 rows of a model that takes about 1 ms a
    row, so the backlog lasts well over a second, however slowly the client sends."""
    model = heavy_model(tmp_path / "heavy.onnx")
    gw = start_gateway(tmp_path, "--model", f"demo={model}", "--workers", "1", "--threads", "1",
                       "--batch-size", "8", "--timeout-ms", "0")  # fmt: skip
    x = np.ones((8, 256), np.float32).reshape(-1).tolist()
    done: list[tuple[int, int]] = []  # (priority, status) in the order answered
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(priority: int, timeout_ms: float | None = None) -> tuple[int, float]:
                body = {"inputs": [{"name": "x", "shape": [8, 256], "datatype": "FP32", "data": x}],
                        "parameters": {"priority": priority}}  # fmt: skip
                headers = {"X-Request-Timeout-Ms": str(timeout_ms)} if timeout_ms else {}
                began = asyncio.get_running_loop().time()
                async with session.post(f"{gw.url}/v2/models/demo/infer", json=body, headers=headers) as resp:
                    await resp.read()
                    done.append((priority, resp.status))
                    return resp.status, asyncio.get_running_loop().time() - began

            await asyncio.gather(*(one(0) for _ in range(20)))  # the gateway measures its service time
            done.clear()
            low = [asyncio.ensure_future(one(0)) for _ in range(200)]
            await asyncio.sleep(0.05)
            high = [asyncio.ensure_future(one(5)) for _ in range(10)]
            hopeless = await one(0, timeout_ms=5)
            await asyncio.gather(*low, *high)
    finally:
        assert gw.stop() == 0
    # Refused, not a 504 at its deadline; the time also holds the client's own backlog of 210.
    assert hopeless[0] == 429 and hopeless[1] < 2.0, hopeless
    answered = [p for p, status in done if status == 200]
    assert len(answered) == 210
    last_high = max(i for i, p in enumerate(answered) if p == 5)
    assert last_high < 100, f"the priority-5 requests were answered by position {last_high} of 210"  # 23 to 30 seen


async def test_a_client_that_goes_away_leaves_the_queue_and_delays_no_one(tmp_path, demo_path) -> None:
    """Three clients give up on requests held in the open batch (B=4, T=3 s). Their requests
    leave the queue, so the next four living requests fill a batch of their own and are
    answered at once; had the dead ones stayed, the living would have waited out T."""
    gw = start_gateway(tmp_path, "--model", f"demo={demo_path}", "--workers", "1",
                       "--batch-size", "4", "--timeout-ms", "3000", "--no-access-log")  # fmt: skip
    url = f"{gw.url}/v2/models/demo/infer"
    body = v2_body(np.ones((1, 256), np.float32))
    try:
        async with aiohttp.ClientSession() as session:

            async def give_up() -> None:
                with pytest.raises(asyncio.TimeoutError):
                    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
                        await resp.read()

            await asyncio.gather(*(give_up() for _ in range(3)))
            await until_metric(session, gw.url, "sluice_requests_abandoned_total", 3.0, stage="queued")
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def live() -> int:
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(live() for _ in range(4)))
            took = loop.time() - started
            async with session.get(f"{gw.url}/metrics") as resp:
                text = await resp.text()
    finally:
        assert gw.stop() == 0
    assert statuses == [200] * 4
    assert took < 2.0, f"the living waited {took:.2f} s: the dead requests still held the batch"
    assert total(text, "sluice_batch_size_count") == 1 and total(text, "sluice_batch_size_sum") == 4
    assert total(text, "sluice_requests_abandoned_total", stage="queued") == 3
    assert total(text, "sluice_queue_depth") == 0


async def until_metric(session: aiohttp.ClientSession, url: str, name: str, value: float, **labels: str) -> None:
    async def reached() -> bool:
        async with session.get(f"{url}/metrics") as resp:
            return total(await resp.text(), name, **labels) >= value

    give_up = asyncio.get_running_loop().time() + 10.0
    while not await reached():
        assert asyncio.get_running_loop().time() < give_up, f"{name} never reached {value}"
        await asyncio.sleep(0.05)
