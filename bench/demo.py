"""`make demo`: the hybrid scheduler live. A bursty load goes through `sluice serve` with
deploy/sluice-hybrid.toml (local workers plus a function on `sluice faas-emulator`); the
demo prints, every few seconds, the offered load, the workers running and where the
batches went, then what it all cost.

    python bench/demo.py [--config deploy/sluice-hybrid.toml] [--scale 1.0]

Everything runs on 127.0.0.1 and stops by itself (about 90 s). Exit code 1 if any
request was not answered with a 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from backends.worker.demo import demo_model_path  # noqa: E402

# (requests per second, seconds): quiet, a burst, quiet long enough for the pool to shrink, again.
PHASES = ((20.0, 15.0), (300.0, 10.0), (20.0, 30.0), (300.0, 8.0), (20.0, 25.0))
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_EC2_METADATA_DISABLED": "true"}


def start(*argv: str, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", *argv], cwd=REPO, env=ENV, text=True,
                            stdout=stdout, stderr=stderr, start_new_session=True)  # fmt: skip


def start_gateway(config: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    with open(log_path, "w") as log:
        process = start("serve", "--port", "0", "--config", str(config), stdout=subprocess.DEVNULL, stderr=log)
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited:\n{log_path.read_text()[-2000:]}")
        for line in log_path.read_text().splitlines():
            if '"serving"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        time.sleep(0.1)
    raise RuntimeError("the gateway did not start in 120 s")


def scrape(url: str) -> dict[str, float]:
    """The gateway's metrics, summed over labels except `target`, `backend` and `outcome`."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            tag = next((sample.labels[k] for k in ("target", "backend", "outcome") if k in sample.labels), "")
            key = f"{sample.name}:{tag}" if tag else sample.name
            values[key] = values.get(key, 0.0) + sample.value
    return values


async def load(url: str, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Open-loop Poisson arrivals through the phases; each request's latency, inf if not a 200."""
    body = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.1] * 256}]}
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.2
    times, at = [], 0.0
    for rate, seconds in PHASES:
        end = at + seconds * scale
        t = at + rng.exponential(1 / rate)
        while t < end:
            times.append(t)
            t += rng.exponential(1 / rate)
        at = end
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(offset: float) -> float:
            await asyncio.sleep(max(0.0, begin + offset - loop.time()))
            try:
                async with session.post(f"{url}/v2/models/demo/infer", json=body) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            return loop.time() - (begin + offset) if ok else float("inf")

        return np.array(await asyncio.gather(*(one(t) for t in times)))


async def watch(url: str, every_s: float, rows: list[dict], done: asyncio.Event) -> None:
    last, began = scrape(url), time.monotonic()
    while not done.is_set():
        await asyncio.sleep(every_s)
        now = await asyncio.to_thread(scrape, url)
        rows.append({
            "t": time.monotonic() - began,
            "req_s": (now.get("sluice_requests_total", 0) - last.get("sluice_requests_total", 0)) / every_s,
            "workers": now.get("sluice_pool_instances", 0),
            "to_pool": now.get("sluice_placements_total:pool", 0) - last.get("sluice_placements_total:pool", 0),
            "to_faas": now.get("sluice_placements_total:faas", 0) - last.get("sluice_placements_total:faas", 0),
        })  # fmt: skip
        last = now


def report(rows: list[dict], latency: np.ndarray, totals: dict[str, float]) -> int:
    print("|   t (s) | answered req/s | workers | batches to workers | batches to the function |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['t']:5.0f} | {row['req_s']:6.0f} | {row['workers']:.0f} | {row['to_pool']:.0f} | {row['to_faas']:.0f} |")
    ok = latency[np.isfinite(latency)]
    pool_usd, faas_usd = totals.get("sluice_cost_usd_total:pool", 0.0), totals.get("sluice_cost_usd_total:faas", 0.0)
    to_pool, to_faas = totals.get("sluice_placements_total:pool", 0), totals.get("sluice_placements_total:faas", 0)
    print()
    print(f"requests: {len(latency)} sent, {len(ok)} answered 200, {len(latency) - len(ok)} not")
    if len(ok):
        print(f"latency (client side): p50 {np.percentile(ok, 50) * 1e3:.1f} ms, p99 {np.percentile(ok, 99) * 1e3:.1f} ms")
    print(f"batches: {to_pool:.0f} to workers, {to_faas:.0f} to the function "
          f"({to_faas / max(1.0, to_pool + to_faas) * 100:.0f}%), {totals.get('sluice_faas_cold_starts_total', 0):.0f} cold starts")
    print(f"workers: {totals.get('sluice_pool_instance_seconds_total', 0):.1f} s billed, ${pool_usd:.7f}")
    print(f"function: {totals.get('sluice_faas_billed_seconds_total', 0):.2f} s billed, ${faas_usd:.7f}")
    print(f"total: ${pool_usd + faas_usd:.7f}, ${(pool_usd + faas_usd) / max(1, len(ok)) * 1e6:.4f} per million requests")
    return 0 if len(ok) == len(latency) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "deploy" / "sluice-hybrid.toml")
    parser.add_argument("--scale", type=float, default=1.0, help="stretch (>1) or shorten (<1) every phase")
    args = parser.parse_args()
    model = demo_model_path()
    emulator = start("faas-emulator", "--port", "0", "--function", f"demo={model}", "--max-concurrency", "16")
    gateway = None
    try:
        port = json.loads(emulator.stdout.readline())["port"]
        folder = Path(tempfile.mkdtemp(prefix="sluice-demo-"))
        text = args.config.read_text().replace("/models/demo.onnx", str(model))
        config = folder / "sluice.toml"
        config.write_text(text.replace("http://127.0.0.1:9000", f"http://127.0.0.1:{port}"))
        print(f"starting the gateway ({args.config.name}; logs in {folder / 'gateway.log'})", file=sys.stderr)
        gateway, url = start_gateway(config, folder / "gateway.log")
        plan = ", ".join(f"{rate:.0f} req/s for {seconds * args.scale:.0f} s" for rate, seconds in PHASES)
        print(f"load: {plan}\n", file=sys.stderr)

        async def run() -> tuple[np.ndarray, list[dict]]:
            rows: list[dict] = []
            done = asyncio.Event()
            watcher = asyncio.create_task(watch(url, 5.0, rows, done))
            latency = await load(url, args.scale, np.random.default_rng(7))
            done.set()
            await watcher
            return latency, rows

        latency, rows = asyncio.run(run())
        code = report(rows, latency, scrape(url))
    finally:
        for process in (gateway, emulator):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
    sys.exit(code)


if __name__ == "__main__":
    main()
