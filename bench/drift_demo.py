"""Drift, shown: the demo model served with a drift watch, traffic from its reference's
distribution, then with one input feature moved by half a standard deviation.

    python bench/drift_demo.py        (or: make drift-demo)

The demo model's input is x [N, 256]: features x[0]..x[31] are sketched one by one, the other
224 summarised by their mean and standard deviation per row. The reference is the first 2000
rows served; windows are 1000 rows. Printed per window: the largest PSI and KS of x, the
features over the thresholds, and the worst one; at the end, what `SluiceInputDrift` in
deploy/prometheus/sluice-alerts.yml sees (it fires once features stay over for 10 minutes).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_process import start_gateway  # noqa: E402

TOKEN = "drift-demo"


async def send(session: aiohttp.ClientSession, url: str, xs: np.ndarray) -> None:
    rows = list(xs)

    async def worker() -> None:
        while rows:
            x = rows.pop()[None].astype(np.float32)
            body = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": x.ravel().tolist()}]}
            async with session.post(f"{url}/v2/models/demo/infer", json=body) as resp:
                assert resp.status == 200, await resp.text()

    await asyncio.gather(*(worker() for _ in range(16)))


async def show(session: aiohttp.ClientSession, url: str, label: str) -> None:
    async with session.get(f"{url}/admin/models/demo/drift", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        last = (await resp.json())["versions"][0]["last"]
    x = last["tensors"]["x"]
    print(f"{label:<34} window {last['window']}: PSI {x['max']['psi']:.3f}, KS {x['max']['ks']:.3f}, "
          f"{x['over_threshold']} feature(s) over, worst {x['worst_feature']}")


async def main() -> None:
    from backends.worker.demo import demo_model_path

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sluice.toml"
        config.write_text(f'[models.demo]\npath = "{demo_model_path()}"\nworkers = 1\n'
                          "[models.demo.drift]\nreference_requests = 2000\nwindow_requests = 1000\n")  # fmt: skip
        process, url = start_gateway(["--config", str(config)], Path(tmp) / "gateway.log", TOKEN)
        try:
            async with aiohttp.ClientSession() as session:
                await send(session, url, rng.standard_normal((2000, 256)))
                print("reference: the first 2000 rows")
                for i in range(2):
                    await send(session, url, rng.standard_normal((1100, 256)))
                    await asyncio.sleep(0.2)
                    await show(session, url, f"same distribution ({i + 1})")
                for i in range(2):
                    shifted = rng.standard_normal((1100, 256))
                    shifted[:, 7] += 0.5
                    await send(session, url, shifted)
                    await asyncio.sleep(0.2)
                    await show(session, url, f"x[7] moved by 0.5 sd ({i + 1})")
                async with session.get(f"{url}/metrics") as resp:
                    lines = [line for line in (await resp.text()).splitlines() if line.startswith("sluice_drift_features_over")]
                print("\n/metrics: " + "\n/metrics: ".join(lines))
                print("SluiceInputDrift: max by (model, version, tensor) (sluice_drift_features_over_threshold) > 0, "
                      "for 10m -> fires while the shift lasts")  # fmt: skip
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
