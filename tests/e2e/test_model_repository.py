"""End to end: a model repository in Triton's layout, versions side by side, and the
repository extension (index, load, unload) under steady load, with real workers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from support import metric, scrape, start_gateway, v2_body

pytestmark = pytest.mark.e2e

TOKEN = "repository-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def linear_model(path: Path, scale: float) -> Path:
    """y = scale * x @ W (x: [N, 4], y: [N, 3]): each version's outputs are known exactly."""
    from onnx import TensorProto, helper, numpy_helper

    weight = (scale * np.arange(12, dtype=np.float32).reshape(4, 3) / 10).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def expected(x: np.ndarray, version: str) -> np.ndarray:
    return {"1": 1.0, "2": 2.0}[version] * x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    linear_model(root / "lin" / "1" / "model.onnx", 1.0)
    (root / "lin" / "sluice.toml").write_text("workers = 1\nbatch_size = 8\ntimeout_ms = 2.0\n")
    return root


class Load:
    """Requests one after another, a few at a time, until stopped; every answer is checked
    against the outputs of the version that says it served it."""

    def __init__(self, url: str) -> None:
        self.url, self.answers, self.stopping = url, [], False

    async def run(self, session: aiohttp.ClientSession, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self.stopping:
            x = rng.standard_normal((1, 4)).astype(np.float32)
            async with session.post(f"{self.url}/v2/models/lin/infer", json=v2_body(x)) as resp:
                doc = await resp.json()
                self.answers.append((resp.status, resp.headers.get("X-Sluice-Version"), x, doc))
            await asyncio.sleep(0.005)

    def check(self) -> dict[str, int]:
        served: dict[str, int] = {}
        for status, version, x, doc in self.answers:
            assert status == 200, doc
            got = np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(1, 3)
            np.testing.assert_allclose(got, expected(x, version), rtol=1e-5, atol=1e-6)
            assert doc["model_version"] == version
            served[version] = served.get(version, 0) + 1
        return served


async def post(session: aiohttp.ClientSession, url: str, body: dict | None = None, headers=AUTH) -> tuple[int, object]:
    async with session.post(url, json=body or {}, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_versions_load_and_unload_under_load_without_losing_a_request(tmp_path: Path, repository: Path) -> None:
    env_token = os.environ.get("SLUICE_ADMIN_TOKEN")
    os.environ["SLUICE_ADMIN_TOKEN"] = TOKEN
    try:
        gw = start_gateway(tmp_path, "--model-repository", str(repository))
    finally:
        os.environ.pop("SLUICE_ADMIN_TOKEN") if env_token is None else os.environ.__setitem__("SLUICE_ADMIN_TOKEN", env_token)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gw.url}/v2/models/lin") as resp:
                assert (await resp.json())["versions"] == ["1"]
            load = Load(gw.url)
            senders = [asyncio.create_task(load.run(session, seed)) for seed in range(4)]
            await asyncio.sleep(0.5)

            # A second version appears in the directory and is loaded: it serves only when named.
            linear_model(repository / "lin" / "2" / "model.onnx", 2.0)
            status, doc = await post(session, f"{gw.url}/v2/repository/models/lin/load")
            assert status == 200 and doc["versions"] == ["1", "2"] and doc["weights"] == {"1": 100.0, "2": 0.0}, doc
            await asyncio.sleep(0.5)
            x = np.ones((1, 4), np.float32)
            async with session.post(f"{gw.url}/v2/models/lin/versions/2/infer", json=v2_body(x)) as resp:
                assert resp.status == 200 and resp.headers["X-Sluice-Version"] == "2"
                np.testing.assert_allclose((await resp.json())["outputs"][0]["data"], expected(x, "2").ravel(), rtol=1e-5)
            async with session.post(f"{gw.url}/v2/models/lin/infer", json=v2_body(x), headers={"X-Sluice-Version": "2"}) as resp:
                assert resp.status == 200 and resp.headers["X-Sluice-Version"] == "2"
            status, rows = await post(session, f"{gw.url}/v2/repository/index")
            assert status == 200
            assert [(r["name"], r["version"], r["state"]) for r in rows] == [("lin", "1", "READY"), ("lin", "2", "READY")]

            # Version 1 unloaded under load: drained, and its traffic goes to version 2.
            status, doc = await post(session, f"{gw.url}/v2/repository/models/lin/unload", {"parameters": {"version": "1"}})
            assert status == 200 and doc["unloaded"] == ["1"], doc
            await asyncio.sleep(0.5)
            load.stopping = True
            await asyncio.gather(*senders)
            served = load.check()
            assert served.get("1", 0) > 20 and served.get("2", 0) > 20, served
            status, rows = await post(session, f"{gw.url}/v2/repository/index")
            assert {(r["version"], r["state"], r["reason"]) for r in rows} == {("1", "UNAVAILABLE", "unloaded"), ("2", "READY", "")}
            async with session.post(f"{gw.url}/v2/models/lin/versions/1/infer", json=v2_body(x)) as resp:
                assert resp.status == 404 and "not loaded" in (await resp.json())["error"]
            samples = await scrape(gw.url)
            assert metric(samples, "sluice_requests_total", model="lin", version="2", code="200") >= served["2"]
            assert metric(samples, "sluice_requests_total", model="lin", version="1") == 0  # its children left with it
            # version 1's worker (started first) has stopped; version 2's serves on
            started = [e["pid"] for e in gw.logs() if e.get("msg") == "worker started"]
            assert len(started) == 2 and gw.worker_pids() == started[1:]
    finally:
        assert gw.stop() == 0


async def test_a_version_that_cannot_load_is_listed_with_its_reason_and_gets_no_traffic(tmp_path: Path, repository: Path) -> None:
    (repository / "lin" / "3").mkdir()  # no model.onnx
    (repository / "lin" / "4").mkdir()
    (repository / "lin" / "4" / "model.onnx").write_bytes(b"not an onnx file")
    os.environ["SLUICE_ADMIN_TOKEN"] = TOKEN
    try:
        gw = start_gateway(tmp_path, "--model-repository", str(repository))
    finally:
        os.environ.pop("SLUICE_ADMIN_TOKEN")
    try:
        async with aiohttp.ClientSession() as session:
            status, rows = await post(session, f"{gw.url}/v2/repository/index")
            states = {r["version"]: (r["state"], r["reason"]) for r in rows}
            assert states["1"] == ("READY", "")
            assert states["3"][0] == "UNAVAILABLE" and "no model.onnx" in states["3"][1]
            assert states["4"][0] == "UNAVAILABLE" and states["4"][1]
            x = np.ones((1, 4), np.float32)
            for _ in range(20):
                async with session.post(f"{gw.url}/v2/models/lin/infer", json=v2_body(x)) as resp:
                    assert resp.status == 200 and resp.headers["X-Sluice-Version"] == "1"
            async with session.post(f"{gw.url}/v2/models/lin/versions/3/infer", json=v2_body(x)) as resp:
                assert resp.status == 404 and "failed to load" in (await resp.json())["error"]
            # Bad requests: nothing changes.
            assert (await post(session, f"{gw.url}/v2/repository/models/nope/load"))[0] == 404
            assert (await post(session, f"{gw.url}/v2/repository/models/lin/unload", {"parameters": {"version": "9"}}))[0] == 404
            assert (await post(session, f"{gw.url}/v2/repository/models/lin/unload", {"parameters": {"version": 1}}))[0] == 400
            assert (await post(session, f"{gw.url}/v2/repository/index", headers={}))[0] == 401
            status, doc = await post(session, f"{gw.url}/v2/repository/models/lin/load")
            assert status == 400 and "version 3" in doc["error"]
            async with session.get(f"{gw.url}/v2/models/lin") as resp:
                assert (await resp.json())["versions"] == ["1"]
    finally:
        assert gw.stop() == 0
