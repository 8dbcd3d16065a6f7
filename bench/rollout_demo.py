"""Two rollouts under load, each decision printed: a slow candidate rolled back, a good one promoted.

    python bench/rollout_demo.py        (or: make rollout-demo)

A model repository is made in a temporary directory: version 1 of a small linear model,
version 2 with the same inputs and outputs and some 17 M multiply-adds a row in between
(several times slower), version 3 as fast as version 1. `sluice serve --model-repository`
serves it; four clients send requests all along; version 2 is rolled out first (steps 10,
50, 100 percent, each at least 3 s and 50 requests), then version 3. Every answer's status
is counted: all are 200. `sluice status` closes the show.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_process import start_gateway  # noqa: E402

TOKEN = "rollout-demo"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write_model(path: Path, sizes: tuple[int, ...], seed: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32), f"w{i}"))
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [out]))
        current = out
    graph = helper.make_graph(nodes, "demo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    path.write_bytes(model.SerializeToString())


async def roll(session: aiohttp.ClientSession, url: str, body: dict) -> None:
    print(f"\nrollout of version {body['version']}: steps {body['steps']}")
    async with session.post(f"{url}/admin/models/lin/rollout", json=body, headers=AUTH) as resp:
        assert resp.status == 201, await resp.text()
    shown = 0
    while True:
        await asyncio.sleep(0.5)
        async with session.get(f"{url}/admin/models/lin/rollout", headers=AUTH) as resp:
            doc = await resp.json()
        for entry in doc["history"][shown:]:
            c, s = entry["candidate"], entry["stable"]
            print(f"  {entry['decision']:>8} at step {entry['step']} ({entry['weight']:g}% -> {entry['weight_after']:g}%): "
                  f"candidate {c['requests']} requests, p99 {c['latency_ms_at_percentile']} ms, errors {c['errors']}; "
                  f"stable {s['requests']}, p99 {s['latency_ms_at_percentile']} ms"
                  + (f"\n           {entry['reasons'][0]}" if entry["reasons"] else ""))  # fmt: skip
        shown = len(doc["history"])
        if doc["state"] != "running":
            print(f"  -> {doc['state']}")
            return


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        write_model(root / "lin" / "1" / "model.onnx", (4, 3), 1)
        write_model(root / "lin" / "2" / "model.onnx", (4, 2048, 2048, 2048, 2048, 3), 2)
        write_model(root / "lin" / "3" / "model.onnx", (4, 3), 3)
        (root / "lin" / "sluice.toml").write_text("workers = 1\nbatch_size = 8\ntimeout_ms = 2.0\nslo_ms = 50\n")
        process, url = start_gateway(["--model-repository", str(root)], Path(tmp) / "gateway.log", TOKEN)
        statuses: list[int] = []
        stop = asyncio.Event()
        try:
            async with aiohttp.ClientSession() as session:

                async def client(seed: int) -> None:
                    rng = np.random.default_rng(seed)
                    while not stop.is_set():
                        x = rng.standard_normal((1, 4)).astype(np.float32)
                        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
                        async with session.post(f"{url}/v2/models/lin/infer", json=body) as resp:
                            statuses.append(resp.status)
                        await asyncio.sleep(0.01)

                clients = [asyncio.create_task(client(seed)) for seed in range(4)]
                await asyncio.sleep(2.0)
                await roll(session, url, {"version": "2", "steps": [10, 50, 100], "min_step_s": 3, "min_requests": 50})
                await roll(session, url, {"version": "3", "steps": [10, 50, 100], "min_step_s": 3, "min_requests": 50})
                stop.set()
                await asyncio.gather(*clients)
            status = subprocess.run([sys.executable, "-m", "gateway", "status", "--url", url, "--token", TOKEN],
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            print(f"\nsluice status:\n{status.stdout}{status.stderr}")
        finally:
            process.terminate()
            process.wait(30)
        counts = {code: statuses.count(code) for code in sorted(set(statuses))}
        print(f"\nanswers during both rollouts, by status: {counts}")


if __name__ == "__main__":
    asyncio.run(main())
