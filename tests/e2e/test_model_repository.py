"""End to end: a model repository in Triton's layout, versions side by side, and the
repository extension (index, load, unload) under steady load, with real workers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from support import linear_model, metric, scrape, start_gateway, v2_body, xy_model

pytestmark = pytest.mark.e2e

TOKEN = "repository-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


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

    def __init__(self, url: str, pause_s: float = 0.005) -> None:
        self.url, self.pause_s, self.answers, self.stopping = url, pause_s, [], False

    async def run(self, session: aiohttp.ClientSession, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self.stopping:
            x = rng.standard_normal((1, 4)).astype(np.float32)
            async with session.post(f"{self.url}/v2/models/lin/infer", json=v2_body(x)) as resp:
                doc = await resp.json()
                self.answers.append((resp.status, resp.headers.get("X-Sluice-Version"), x, doc))
            await asyncio.sleep(self.pause_s)

    def statuses(self) -> list[int]:
        return [status for status, _, _, _ in self.answers]

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
    gw = start_gateway(tmp_path, "--model-repository", str(repository), env={"SLUICE_ADMIN_TOKEN": TOKEN})
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
    gw = start_gateway(tmp_path, "--model-repository", str(repository), env={"SLUICE_ADMIN_TOKEN": TOKEN})
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


def both_versions(root: Path, traffic: str) -> Path:
    linear_model(root / "lin" / "2" / "model.onnx", 2.0)
    (root / "lin" / "sluice.toml").write_text(f"workers = 1\nbatch_size = 8\ntimeout_ms = 2.0\n{traffic}")
    return root


async def send_many(session: aiohttp.ClientSession, url: str, xs: list[np.ndarray], headers_of=lambda i: {},
                    concurrency: int = 8) -> list[tuple[int, str, bytes]]:  # fmt: skip
    """Each x once, `concurrency` at a time: (status, serving version, body)."""
    results: list[tuple[int, str, bytes]] = [None] * len(xs)  # type: ignore[list-item]
    queue = list(enumerate(xs))

    async def worker() -> None:
        while queue:
            i, x = queue.pop()
            async with session.post(f"{url}/v2/models/lin/infer", json=v2_body(x), headers=headers_of(i)) as resp:
                results[i] = (resp.status, resp.headers.get("X-Sluice-Version"), await resp.read())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def test_canary_sticky_pinned_and_shadow_traffic(tmp_path: Path, repository: Path) -> None:
    both_versions(repository, '[traffic]\nweights = { "1" = 90, "2" = 10 }\n')
    gw = start_gateway(tmp_path, "--model-repository", str(repository), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    rng = np.random.default_rng(7)
    traffic = f"{gw.url}/admin/models/lin/traffic"
    try:
        async with aiohttp.ClientSession() as session:
            # Canary at 10%: the share within 4.5 standard deviations of 200 in 2000.
            xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(2000)]
            answers = await send_many(session, gw.url, xs)
            assert all(status == 200 for status, _, _ in answers)
            on_two = sum(version == "2" for _, version, _ in answers)
            assert 140 <= on_two <= 260, on_two
            for x, (_, version, body) in zip(xs[:200], answers[:200]):
                got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(1, 3)
                np.testing.assert_allclose(got, expected(x, version), rtol=1e-5, atol=1e-6)

            # Sticky: one user, one version; pinned: always the named one.
            async with session.put(traffic, json={"sticky_header": "X-User"}, headers=AUTH) as resp:
                assert resp.status == 200 and (await resp.json())["sticky_header"] == "X-User"
            users = [f"user-{i % 100}" for i in range(400)]
            answers = await send_many(session, gw.url, xs[:400], lambda i: {"X-User": users[i]})
            seen: dict[str, set[str]] = {}
            for user, (status, version, _) in zip(users, answers):
                assert status == 200
                seen.setdefault(user, set()).add(version)
            assert all(len(v) == 1 for v in seen.values()) and {"1", "2"} == set.union(*seen.values())
            answers = await send_many(session, gw.url, xs[:100], lambda i: {"X-Sluice-Version": "2"})
            assert {(s, v) for s, v, _ in answers} == {(200, "2")}

            # Shadow: every answer is version 1's, byte for byte; version 2's copies are compared.
            x = xs[0]
            async with session.post(f"{gw.url}/v2/models/lin/versions/1/infer", json=v2_body(x)) as resp:
                before = await resp.read()
            policy = {"weights": {"1": 100, "2": 0}, "shadow": "2", "shadow_fraction": 1.0, "sticky_header": None}
            async with session.put(traffic, json=policy, headers=AUTH) as resp:
                assert resp.status == 200, await resp.text()
            answers = await send_many(session, gw.url, xs[:300], concurrency=1)
            assert {(s, v) for s, v, _ in answers} == {(200, "1")}
            async with session.post(f"{gw.url}/v2/models/lin/versions/1/infer", json=v2_body(x)) as resp:
                assert await resp.read() == before
            await asyncio.sleep(0.5)
            async with session.get(traffic, headers=AUTH) as resp:
                shadow = (await resp.json())["shadow_comparison"]
            compared = shadow["compared"]
            assert compared >= 250 and shadow["errors"] == 0, shadow  # sequential requests: almost none shed
            direct = np.abs(np.concatenate([expected(x, "1") for x in xs[:300]]))  # version 2 doubles version 1
            assert shadow["top_class_differs_share"] == 0.0  # doubling keeps the top class
            assert shadow["mean_abs_difference"] == pytest.approx(direct.mean(), rel=0.1)
            assert shadow["max_abs_difference"] <= direct.max() * (1 + 1e-5)
            samples = await scrape(gw.url)
            assert metric(samples, "sluice_shadow_requests_total", model="lin", version="2", outcome="compared") == compared

            # Under a flood, copies are shed first: every primary answer still a 200.
            flood = await send_many(session, gw.url, xs[:600], concurrency=120)
            assert all(status == 200 for status, _, _ in flood)
            async with session.get(traffic, headers=AUTH) as resp:
                assert (await resp.json())["shadow_comparison"]["shed"] > 0

            # Bad traffic settings: 400, nothing changed.
            async with session.put(traffic, json={"weights": {"1": 50, "2": 20}}, headers=AUTH) as resp:
                assert resp.status == 400 and "sum to 100" in (await resp.json())["error"]
            async with session.put(traffic, json={"weights": {"7": 100}}, headers=AUTH) as resp:
                assert resp.status == 400
            async with session.get(traffic, headers=AUTH) as resp:
                assert (await resp.json())["weights"] == {"1": 100.0, "2": 0.0}
            async with session.get(f"{gw.url}/admin/models/nope/traffic", headers=AUTH) as resp:
                assert resp.status == 404
    finally:
        assert gw.stop() == 0


def slow_model(path: Path, width: int = 2048, layers: int = 24) -> Path:
    """The linear model's inputs and outputs, with some 100 M multiply-adds a row in between:
    one width x width weight applied `layers` times (a 17 MB file; about 15 ms a batch on one
    core here). With four distinct layers (17 M a row, about 2 ms) the candidate's p99 was
    within a few milliseconds of the stable version's, and a rollout was once promoted."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(3)
    scaled = lambda n_in, n_out: (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(scaled(4, width), "w_in"), numpy_helper.from_array(scaled(width, width), "w"),
             numpy_helper.from_array(scaled(width, 3), "w_out")]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "w_out"], ["y"]))
    return xy_model(path, "slow", nodes, inits)


async def until_settled(session: aiohttp.ClientSession, url: str, within_s: float) -> dict:
    give_up = asyncio.get_running_loop().time() + within_s
    while True:
        async with session.get(url, headers=AUTH) as resp:
            doc = await resp.json()
        if doc["state"] != "running" or asyncio.get_running_loop().time() > give_up:
            return doc
        await asyncio.sleep(0.2)


async def test_rollouts_roll_back_a_slow_candidate_and_promote_a_good_one(tmp_path: Path, repository: Path) -> None:
    slow_model(repository / "lin" / "2" / "model.onnx")
    linear_model(repository / "lin" / "3" / "model.onnx", 1.0)  # as good as version 1
    gw = start_gateway(tmp_path, "--model-repository", str(repository), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    rollout = f"{gw.url}/admin/models/lin/rollout"
    try:
        async with aiohttp.ClientSession() as session:
            load = Load(gw.url, pause_s=0.01)
            senders = [asyncio.create_task(load.run(session, seed)) for seed in range(4)]

            # The slow candidate: rolled back in its first step, by the latency guard.
            body = {"version": "2", "steps": [10, 50, 100], "min_step_s": 2, "min_requests": 50}
            async with session.post(rollout, json=body, headers=AUTH) as resp:
                assert resp.status == 201, await resp.text()
            doc = await until_settled(session, rollout, 30.0)
            assert doc["state"] == "rolled_back" and doc["weight"] == 0, doc
            last = doc["last_decision"]
            assert last["decision"] == "rollback" and last["step"] == 0 and "latency" in last["reasons"][0], last
            assert max(entry["weight"] for entry in doc["history"]) == 10  # it never saw more than the first step
            async with session.get(f"{gw.url}/admin/models/lin/traffic", headers=AUTH) as resp:
                assert (await resp.json())["weights"] == {"1": 100.0, "2": 0.0}

            # A busy rollout refuses a second one; an aborted one leaves the stable version serving.
            body = {"version": "3", "steps": [20, 100], "min_step_s": 60, "min_requests": 50}
            async with session.post(rollout, json=body, headers=AUTH) as resp:
                assert resp.status == 201
            async with session.post(rollout, json=body, headers=AUTH) as resp:
                assert resp.status == 409
            async with session.delete(rollout, headers=AUTH) as resp:
                doc = await resp.json()
                assert doc["state"] == "aborted" and doc["weight"] == 0
            async with session.get(f"{gw.url}/admin/models/lin/traffic", headers=AUTH) as resp:
                assert (await resp.json())["weights"]["1"] == 100.0

            # The good candidate: promoted through every step; the old version unloaded.
            body = {"version": "3", "steps": [20, 60, 100], "min_step_s": 1, "min_requests": 30, "keep_stable": False}
            async with session.post(rollout, json=body, headers=AUTH) as resp:
                assert resp.status == 201
            doc = await until_settled(session, rollout, 60.0)
            assert doc["state"] == "promoted", doc
            assert [e["decision"] for e in doc["history"]] == ["advance", "advance", "promote"], doc["history"]
            await asyncio.sleep(1.0)
            load.stopping = True
            await asyncio.gather(*senders)
            statuses = load.statuses()
            assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
            async with session.get(f"{gw.url}/v2/models/lin") as resp:
                assert (await resp.json())["versions"] == ["2", "3"]  # 1 unloaded after the promotion
            samples = await scrape(gw.url)
            decisions = {d: metric(samples, "sluice_rollout_decisions_total", model="lin", decision=d)
                         for d in ("start", "advance", "promote", "rollback", "abort")}  # fmt: skip
            assert decisions == {"start": 3, "advance": 2, "promote": 1, "rollback": 1, "abort": 1}
            # sluice status: the versions, their weights and limits, and the rollout
            env = {**os.environ, "SLUICE_ADMIN_TOKEN": TOKEN}
            status = subprocess.run([sys.executable, "-m", "gateway", "status", "--url", gw.url, "--json"], env=env,
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            (model,) = json.loads(status.stdout)["models"]
            assert [(v["version"], v["weight"]) for v in model["versions"]] == [("2", 0.0), ("3", 100.0)]
            assert model["rollout"] == {"version": "3", "stable": "1", "state": "promoted", "step": 2, "weight": 100.0,
                                        "last_decision": "promote"}  # fmt: skip
            assert model["versions"][1]["requests"] > 0 and model["versions"][1]["batch_size"] >= 1
            text = subprocess.run([sys.executable, "-m", "gateway", "status", "--url", gw.url], env=env,
                                  capture_output=True, text=True, timeout=30).stdout  # fmt: skip
            assert "rollout of version 3 over 1: promoted" in text and "version    3  weight 100.0%" in text, text
            refused = subprocess.run([sys.executable, "-m", "gateway", "status", "--url", gw.url, "--token", "wrong"],
                                     capture_output=True, text=True, timeout=30)  # fmt: skip
            assert refused.returncode == 1 and "401" in refused.stderr
            # Bad requests: clear 4xx, nothing started.
            for bad, code in [({"version": "9"}, 400), ({"version": "2", "steps": [50, 20]}, 400),
                              ({"version": "2", "guard": {"colour": 1}}, 400), ({"version": "3"}, 400)]:  # fmt: skip
                async with session.post(rollout, json=bad, headers=AUTH) as resp:
                    assert resp.status == code, (bad, await resp.text())
    finally:
        assert gw.stop() == 0


def failing_model(path: Path) -> Path:
    """Version 1's outputs, except that a row with x[0] > 1 (16% of standard normal rows)
    looks up row 10 of a 10-row table: onnxruntime fails its batch, and bisection leaves
    just that request with a 5xx."""
    from onnx import TensorProto, helper, numpy_helper

    weight = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "start", "end", "axis"], ["first"]),  # x[:, :1]
        helper.make_node("Greater", ["first", "one"], ["big"]),
        helper.make_node("Cast", ["big"], ["flag"], to=TensorProto.INT64),
        helper.make_node("Mul", ["flag", "ten"], ["ids"]),  # 0, or 10: out of the table
        helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),  # [N, 1, 3]
        helper.make_node("Squeeze", ["rows", "axis"], ["picked"]),
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "picked"], ["y"]),
    ]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros((10, 3), np.float32), "table"),
             numpy_helper.from_array(np.array([0], np.int64), "start"), numpy_helper.from_array(np.array([1], np.int64), "end"),
             numpy_helper.from_array(np.array([1], np.int64), "axis"), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(10, np.int64), "ten")]  # fmt: skip
    return xy_model(path, "failing", nodes, inits)


async def test_a_candidate_that_fails_a_share_of_requests_is_rolled_back(tmp_path: Path, repository: Path) -> None:
    failing_model(repository / "lin" / "2" / "model.onnx")
    gw = start_gateway(tmp_path, "--model-repository", str(repository), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    rollout = f"{gw.url}/admin/models/lin/rollout"
    try:
        async with aiohttp.ClientSession() as session:
            x = np.array([[2.0, 0, 0, 0]], np.float32)
            async with session.post(f"{gw.url}/v2/models/lin/versions/2/infer", json=v2_body(x)) as resp:
                assert resp.status >= 500  # the fault is real: this row fails on version 2
            load = Load(gw.url)
            senders = [asyncio.create_task(load.run(session, seed)) for seed in range(4)]
            body = {"version": "2", "steps": [20, 100], "min_step_s": 5, "min_requests": 100}
            async with session.post(rollout, json=body, headers=AUTH) as resp:
                assert resp.status == 201
            doc = await until_settled(session, rollout, 30.0)
            load.stopping = True
            await asyncio.gather(*senders)
            assert doc["state"] == "rolled_back", doc
            last = doc["last_decision"]
            assert "error ratio" in last["reasons"][0] and last["candidate"]["errors"] > 0 and last["step"] == 0, last
            failed = [a for a in load.answers if a[0] != 200]
            assert failed and {a[1] for a in failed} == {"2"}  # only the candidate's requests failed
            assert all(a[0] >= 500 for a in failed)
    finally:
        assert gw.stop() == 0


async def test_two_replicas_share_traffic_policies_and_one_leads_a_rollout(tmp_path: Path, repository: Path, redis_server) -> None:
    linear_model(repository / "lin" / "2" / "model.onnx", 2.0)
    config = tmp_path / "sluice.toml"
    config.write_text(f'[server]\nmodel_repository = "{repository}"\n[state]\nurl = "{redis_server.url}"\n'
                      "sync_s = 0.2\nleader_lease_s = 2.0\n")  # fmt: skip
    a = start_gateway(tmp_path, "--config", str(config), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    b = start_gateway(tmp_path, "--config", str(config), env={"SLUICE_ADMIN_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as session:

            async def weights(gw) -> dict:
                async with session.get(f"{gw.url}/admin/models/lin/traffic", headers=AUTH) as resp:
                    return (await resp.json())["weights"]

            async def settle(check, within_s: float = 5.0) -> None:
                give_up = asyncio.get_running_loop().time() + within_s
                while not await check():
                    assert asyncio.get_running_loop().time() < give_up, "replicas did not agree in time"
                    await asyncio.sleep(0.1)

            # A policy set through one replica is in force on both.
            async with session.put(f"{a.url}/admin/models/lin/traffic", json={"weights": {"1": 70, "2": 30}}, headers=AUTH) as resp:
                assert resp.status == 200
            await settle(lambda: _equal(weights(b), {"1": 70.0, "2": 30.0}))

            # A rollout started on A is led by A: B refuses a second one, shows A's, and follows its weights.
            loads = [Load(gw.url, pause_s=0.01) for gw in (a, b)]
            senders = [asyncio.create_task(loads[seed % 2].run(session, seed)) for seed in range(4)]  # two to each
            body = {"version": "2", "stable": "1", "steps": [50, 100], "min_step_s": 1, "min_requests": 30}
            async with session.post(f"{a.url}/admin/models/lin/rollout", json=body, headers=AUTH) as resp:
                assert resp.status == 201, await resp.text()
            async with session.post(f"{b.url}/admin/models/lin/rollout", json=body, headers=AUTH) as resp:
                assert resp.status == 409 and "another replica" in (await resp.json())["error"]
            await settle(lambda: _equal(weights(b), {"1": 50.0, "2": 50.0}))
            doc = await until_settled(session, f"{a.url}/admin/models/lin/rollout", 30.0)
            assert doc["state"] == "promoted", doc
            await settle(lambda: _equal(weights(b), {"1": 0.0, "2": 100.0}))

            async def b_shows_promoted() -> bool:
                async with session.get(f"{b.url}/admin/models/lin/rollout", headers=AUTH) as resp:
                    return resp.status == 200 and (await resp.json())["state"] == "promoted"

            await settle(b_shows_promoted)
            for load in loads:
                load.stopping = True
            await asyncio.gather(*senders)
            statuses = [s for load in loads for s in load.statuses()]
            assert statuses and set(statuses) == {200}
    finally:
        assert a.stop() == 0 and b.stop() == 0


async def _equal(got, wanted: dict) -> bool:
    return (await got) == wanted
