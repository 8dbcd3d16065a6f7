"""Simulation against live: the gateway batching onto `sluice faas-emulator`, on time-scaled
Azure traces, with and without keep-warm, next to what `sluice sim` predicts from a profile
that `sluice profile` measured against the same emulator.

    python bench/faas_live.py [--quick]

For each run: a fresh emulator (demo model, 1024 MB, keep-alive as given), a gateway with a
fixed (B, T) on that function, the trace replayed open loop (latency from each request's
scheduled send), and the emulator's own meters (cold starts of batches, billed GB-seconds).
Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from batching import FixedPolicy  # noqa: E402
from backends.worker.demo import demo_model_path  # noqa: E402
from scheduler.keepwarm import KeepWarmPolicy  # noqa: E402
from sim import ServiceProfile, read_trace, simulate  # noqa: E402

TRACES = REPO.parent / "shared" / "data" / "traces"
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"}
BATCH_SIZE, TIMEOUT_MS, MEMORY_MB = 8, 20.0, 1024


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def start(*argv: str, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", *argv], cwd=REPO, env=ENV, text=True,
                            stdout=stdout, stderr=stderr, start_new_session=True)  # fmt: skip


def start_emulator(keep_alive_s: float) -> tuple[subprocess.Popen, int]:
    process = start("faas-emulator", "--port", "0", "--function", f"demo={demo_model_path()}", "--memory-mb",
                    str(MEMORY_MB), "--keep-alive-s", str(keep_alive_s), "--max-concurrency", "32")  # fmt: skip
    return process, json.loads(process.stdout.readline())["port"]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def emulator_metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


def start_gateway(folder: Path, port: int, keep_warm: bool, keep_alive_s: float) -> tuple[subprocess.Popen, str]:
    config = folder / "sluice.toml"
    config.write_text(textwrap.dedent(f"""
        [server]
        access_log = false
        [models.demo]
        batch_size = {BATCH_SIZE}
        timeout_ms = {TIMEOUT_MS}
        [models.demo.faas]
        function = "demo"
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:{port}"
        memory_mb = {MEMORY_MB}
        concurrency = 32
        keep_warm = {str(keep_warm).lower()}
        keep_alive_s = {keep_alive_s}
    """))
    log = open(folder / "gateway.log", "w")
    process = start("serve", "--port", "0", "--config", str(config), stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        for line in (folder / "gateway.log").read_text().splitlines():
            if '"serving"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


async def replay(url: str, times: np.ndarray) -> np.ndarray:
    import aiohttp

    body = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.1] * 256}]}
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.5
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(at: float) -> float:
            await asyncio.sleep(max(0.0, begin + at - loop.time()))
            async with session.post(f"{url}/v2/models/demo/infer", json=body) as resp:
                await resp.read()
                if resp.status != 200:
                    return math.inf
            return loop.time() - (begin + at)

        return np.array(await asyncio.gather(*(one(t) for t in times)))


def live(folder: Path, times: np.ndarray, keep_warm: bool, keep_alive_s: float) -> dict:
    emulator, port = start_emulator(keep_alive_s)
    gateway = None
    try:
        gateway, url = start_gateway(folder, port, keep_warm, keep_alive_s)
        colds_before = emulator_metric(port, "sluice_faas_emulator_cold_starts_total")
        latency = asyncio.run(replay(url, times))
        time.sleep(0.5)
        gateway_metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        gb_s = emulator_metric(port, "sluice_faas_emulator_billed_gb_seconds_total")
        colds = emulator_metric(port, "sluice_faas_emulator_cold_starts_total") - colds_before
    finally:
        if gateway is not None:
            stop(gateway)
        stop(emulator)
    pings = sum(float(line.rsplit(" ", 1)[1]) for line in gateway_metrics.splitlines()
                if line.startswith("sluice_faas_invocations_total{") and 'outcome="ping"' in line)  # fmt: skip
    batch_colds = sum(float(line.rsplit(" ", 1)[1]) for line in gateway_metrics.splitlines()
                      if line.startswith("sluice_faas_cold_starts_total{"))  # fmt: skip
    return {"p50": float(np.percentile(latency, 50)) * 1e3, "p99": float(np.percentile(latency, 99)) * 1e3,
            "cold_starts": int(batch_colds) - 1, "environments_started": int(colds), "pings": int(pings),
            "gb_s": gb_s, "failed": int(np.sum(~np.isfinite(latency)))}  # fmt: skip


def simulated(profile: ServiceProfile, times: np.ndarray, keep_warm: bool, keep_alive_s: float) -> dict:
    policy = KeepWarmPolicy(keep_alive_s, profile.faas.cold_start_ms / 1e3) if keep_warm else None
    result = simulate(times, FixedPolicy(BATCH_SIZE, TIMEOUT_MS / 1e3), profile, memory_mb=MEMORY_MB,
                      keep_alive_s=keep_alive_s, keep_warm=policy, warm_environments=1)  # fmt: skip
    billed_ms = np.maximum(1, np.ceil(result.service_s * 1e3))
    ping_ms = result.pings * 1.0
    return {"p50": float(np.percentile(result.latency_s, 50)) * 1e3, "p99": float(np.percentile(result.latency_s, 99)) * 1e3,
            "cold_starts": int(np.count_nonzero(result.cold)), "pings": result.pings,
            "gb_s": (billed_ms.sum() + ping_ms) / 1e3 * MEMORY_MB / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter replays (2 min of each trace)")
    parser.add_argument("--traces", default="conv,code", help="which traces (default conv,code)")
    parser.add_argument("--code-speed", type=float, default=20.0, help="time compression of the code trace (default 20)")
    args = parser.parse_args()
    minutes = 2 if args.quick else 10
    # (trace, real minutes replayed, speed-up, the emulator's keep-alive in replayed seconds: 60 s real)
    scenarios = [("conv", minutes, 10.0, 60.0), ("code", 2 * minutes, args.code_speed, 60.0 / args.code_speed)]
    scenarios = [s for s in scenarios if s[0] in args.traces.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="sluice-faas-live-"))
    note("profiling the emulated function")
    emulator, port = start_emulator(600.0)
    try:
        done = subprocess.run([sys.executable, "-m", "gateway", "profile", "--target", "faas", "--function", "demo",
                               "--endpoint-url", f"http://127.0.0.1:{port}", "--region", "us-east-1",
                               "--batch-sizes", "1,2,4,8", "--cold-starts", "3", "--json"],
                              cwd=REPO, env=ENV, capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        stop(emulator)
    profile_doc = json.loads(done.stdout)
    profile = ServiceProfile.from_dict(profile_doc)
    rows = []
    for name, span_min, speed, keep_alive_s in scenarios:
        times = read_trace(TRACES / f"azure_llm_2023_{name}.csv")
        times = times[times < times[0] + span_min * 60.0]
        times = (times - times[0]) / speed
        for keep_warm in (False, True):
            note(f"{name}: {len(times)} requests over {times[-1]:.0f} s, keep-warm {keep_warm}")
            sim = simulated(profile, times, keep_warm, keep_alive_s)
            real = live(folder, times, keep_warm, keep_alive_s)
            rows.append((name, span_min, speed, keep_alive_s, keep_warm, len(times), sim, real))
    print(f"Profile measured against the emulator (1024 MB): {json.dumps(profile_doc['faas']['memory_mb'])}, "
          f"invoke overhead {profile_doc['faas']['invoke_overhead_ms']:.2f} ms, cold start {profile_doc['faas']['cold_start_ms']:.0f} ms.\n")
    print(f"Fixed B={BATCH_SIZE}, T={TIMEOUT_MS:g} ms; sim / live.\n")
    print("| trace (replayed) | keep-warm | p50 ms | p99 ms | batch cold starts | pings | billed GB-s |")
    print("|---|---|---|---|---|---|---|")
    for name, span_min, speed, keep_alive_s, keep_warm, count, sim, real in rows:
        label = f"{name}, first {span_min} min x{speed:g} ({count} req, keep-alive {keep_alive_s:g} s)"
        print(f"| {label} | {'on' if keep_warm else 'off'} | {sim['p50']:.1f} / {real['p50']:.1f} | "
              f"{sim['p99']:.1f} / {real['p99']:.1f} | {sim['cold_starts']} / {real['cold_starts']} | "
              f"{sim['pings']} / {real['pings']} | {sim['gb_s']:.2f} / {real['gb_s']:.2f} |")
        if real["failed"]:
            print(f"|  | | {real['failed']} requests failed live | | | | |")


if __name__ == "__main__":
    main()
