"""The cost of watching the data: the demo model served with request capture off and on
(1% of requests to a directory), and with `--drift` also with a drift watch, in one run.

Each setting gets a real `sluice serve --config` (the demo model, its default workers and
batching). Per setting: throughput, closed loop (`--clients` always in flight for
`--seconds`); then latency open loop at one high rate for all settings (`--rate`, or
`--load` times the first capture-off throughput), Poisson arrivals from
`bench/loadgen.py`, latency from each request's scheduled send. Settings are run in turn,
`--rounds` times over, and each figure is the median over the rounds: the machine's own
drift (other work on a shared host) falls on every setting alike.

    python bench/capture_cost.py                 # off and capture 1%, 3 rounds, ~3 min
    python bench/capture_cost.py --drift --json  # also drift, and drift + capture

Target (issue 17): at most 5% less throughput and at most 0.2 ms added at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from loadgen import run_load  # noqa: E402
from gateway_process import start_gateway  # noqa: E402
from overload import capacity  # noqa: E402

from backends.worker.demo import demo_model_path  # noqa: E402


def config_text(model: Path, out: Path, capture: bool, drift: bool, fraction: float) -> str:
    text = f'[models.demo]\npath = "{model}"\n'
    if drift:
        text += "[models.demo.drift]\nreference_requests = 1000\n"
    if capture:
        text += f'[models.demo.capture]\ndestination = "file://{out}"\nfraction = {fraction}\n'
    return text


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def scrape_capture(base: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    found = {"records": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        if line.startswith("sluice_capture_records_total{"):
            found["records"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("sluice_capture_dropped_total{"):
            found["dropped"] += float(line.rsplit(" ", 1)[1])
    return found


def path_cost(body: bytes) -> dict[str, float]:
    """What capture adds on the request's path, in process: `Capture.offer` (the sampling
    decision; for a sampled request the copy and the queueing) in microseconds per request
    at 0, 1% and 100%, and the writer thread's encoding of one demo record."""
    from gateway.capture.records import record_line
    from gateway.capture.settings import CaptureConfig
    from gateway.capture.writer import Capture
    from gateway.metrics import Metrics

    x = {"x": np.asarray(json.loads(body)["inputs"][0]["data"], dtype=np.float32).reshape(1, 256)}
    y = {"y": np.zeros((32, 10), np.float32)[3:4]}  # a request's slice of its batch's outputs

    async def offers(directory: str, fraction: float, count: int) -> float:
        capture = Capture(CaptureConfig(destination=f"file://{directory}", fraction=fraction, queue_mb=512), "demo", "1",
                          True, Metrics())  # fmt: skip
        await capture.open()
        capture.start()
        started = time.perf_counter()
        for _ in range(count):
            capture.offer("id", 200, 0.001, x, y)
        elapsed = time.perf_counter() - started
        await capture.stop()
        return round(elapsed / count * 1e6, 3)

    with tempfile.TemporaryDirectory() as directory:
        costs = {f"offer_us_at_{f:g}": asyncio.run(offers(directory, f, 20_000 if f == 1 else 200_000)) for f in (0.0, 0.01, 1.0)}
    meta = {"request_id": "id", "model": "demo", "version": "1", "timestamp": time.time(), "latency_ms": 1.0,
            "status": 200, "replica": "r", "rows": 1}  # fmt: skip
    started = time.perf_counter()
    for _ in range(20_000):
        line = record_line(meta, x, y, None)
    costs["encode_us_per_record"] = round((time.perf_counter() - started) / 20_000 * 1e6, 3)
    costs["record_bytes"] = len(line)
    return costs


def measure(name: str, text: str, work: Path, body: bytes, args: argparse.Namespace, rate: float | None) -> dict:
    config = work / f"{name}.toml"
    config.write_text(text)
    process, base = start_gateway(["--config", str(config)], work / f"{name}.log")
    url = f"{base}/v2/models/demo/infer"
    try:
        asyncio.run(capacity(url, body, 1.0, args.clients))  # warm: workers, connections, a drift reference
        rps = asyncio.run(capacity(url, body, args.seconds, args.clients))
        rate = rate or args.load * rps
        load = run_load(url, rate, args.seconds, body, procs=1, seed=7, timeout_s=5.0, drain_s=1.0, max_connections=2000)
        captured = asyncio.run(scrape_capture(base))
    finally:
        stop(process)
    return {"setting": name, "throughput_rps": round(rps, 1), "rate": round(rate, 1), "ok": load["ok"],
            "sent": load["sent"], "p50_ms": load["latency_ms"]["p50"], "p99_ms": load["latency_ms"]["p99"], **captured}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="of each throughput and each latency measurement")
    parser.add_argument("--clients", type=int, default=64, help="in flight for the throughput measurement")
    parser.add_argument("--rate", type=float, help="open-loop rate (default: --load x the first capture-off throughput)")
    parser.add_argument("--load", type=float, default=0.7, help="the latency point, a fraction of throughput")
    parser.add_argument("--fraction", type=float, default=0.01, help="capture's sample fraction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drift", action="store_true", help="also a drift watch, alone and with capture")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = demo_model_path()
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                                   "data": np.random.default_rng(1).standard_normal(256).round(4).tolist()}]}).encode()  # fmt: skip
    settings = [("off", False, False), ("capture", True, False)]
    if args.drift:
        settings += [("drift", False, True), ("drift+capture", True, True)]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in settings}
    rate = args.rate
    with tempfile.TemporaryDirectory(prefix="sluice-capture-cost-") as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            for name, capture, drift in settings:
                out = work / f"captured-{name}-{round_}"
                out.mkdir()
                result = measure(name, config_text(model, out, capture, drift, args.fraction), work, body, args, rate)
                rate = rate or result["rate"]
                runs[name].append(result)
                if not args.json:
                    print(f"round {round_ + 1} {name:>14}: {result['throughput_rps']:8.1f} req/s, at {result['rate']:.0f}"
                          f" req/s p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms, captured {result['records']:.0f}"
                          f" dropped {result['dropped']:.0f}", flush=True)  # fmt: skip
    summary = {name: {key: statistics.median(r[key] for r in results)
                      for key in ("throughput_rps", "p50_ms", "p99_ms", "records", "dropped")}
               for name, results in runs.items()}  # fmt: skip
    base = summary["off"]
    for name, figures in summary.items():
        figures["throughput_change_pct"] = round(100 * (figures["throughput_rps"] / base["throughput_rps"] - 1), 2)
        figures["p50_added_ms"] = round(figures["p50_ms"] - base["p50_ms"], 3)
        figures["p99_added_ms"] = round(figures["p99_ms"] - base["p99_ms"], 3)
    path = path_cost(body)
    report = {"rate": rate, "seconds": args.seconds, "rounds": args.rounds, "fraction": args.fraction,
              "settings": summary, "path": path, "runs": runs}  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"\nmedians over {args.rounds} rounds; latency at {rate:.0f} req/s open loop; capture {args.fraction:.0%}")
    print(f"{'setting':>14} {'req/s':>9} {'change':>8} {'p50 ms':>8} {'+p50':>7} {'p99 ms':>8} {'+p99':>7}")
    for name, f in summary.items():
        print(f"{name:>14} {f['throughput_rps']:9.1f} {f['throughput_change_pct']:7.2f}% {f['p50_ms']:8.3f} "
              f"{f['p50_added_ms']:7.3f} {f['p99_ms']:8.3f} {f['p99_added_ms']:7.3f}")  # fmt: skip
    print("on the request's path (in process): " + ", ".join(f"{k} {v}" for k, v in path.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
