"""Admission under overload, and recovery after it: a family of cases, worst case reported.

For each case (model, workers, rows per request, SLO) a real `sluice serve` with the
adaptive policy is started; its capacity is measured closed-loop; then open-loop
Poisson load at multiples of that capacity is offered (`bench/loadgen.py`, latency
from each request's scheduled send time, clients giving up after 5 s). Per point:
the admitted requests' client-side p99 against the SLO, how fast refusals come
(against a fifth of the SLO), and goodput (answers within the SLO per second) against
capacity. `--recovery` adds: 30 s at 3x capacity, then 70% of capacity, judged from
its tenth second on.

    python bench/overload.py                       # the family below, ~15 min
    python bench/overload.py --cases heavy:1:1:100 --multiples 1.5,3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from gateway_process import start_gateway  # noqa: E402
from loadgen import run_load  # noqa: E402

from backends.worker.demo import demo_model_path  # noqa: E402
from tests.support import heavy_model  # noqa: E402

# model:workers:rows:slo_ms
FAMILY = ["demo:1:1:50", "demo:2:8:50", "heavy:1:1:100", "heavy:1:4:250", "heavy:2:1:1000"]


async def capacity(url: str, body: bytes, seconds: float = 5.0, clients: int = 64) -> float:
    """Requests per second served with `clients` always in flight (no SLO asked of them)."""
    loop = asyncio.get_running_loop()
    served = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        end = loop.time() + seconds

        async def client() -> None:
            nonlocal served
            while loop.time() < end:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    served += resp.status == 200

        await asyncio.gather(*(client() for _ in range(clients)))
    return served / seconds


def point(url: str, body: bytes, rate: float, seconds: float, slo_ms: float, seed: int) -> dict:
    r = run_load(url, rate, seconds, body, procs=2, seed=seed, timeout_s=5.0, drain_s=0.5, max_connections=4000)
    p99 = r["latency_ms"]["p99"]
    refused = sum(v for k, v in r["errors"].items() if k in ("429", "503"))
    return {
        "offered": round(rate, 1), "ok": r["ok"], "admitted_share": round(r["ok"] / max(r["sent"], 1), 3),
        "goodput": r["achieved_rps"], "p50_ms": r["latency_ms"]["p50"], "p99_ms": p99,
        "within_slo": p99 is not None and p99 <= slo_ms, "refused": refused,
        "refused_p50_ms": r["refused_latency_ms"]["p50"], "refused_p99_ms": r["refused_latency_ms"]["p99"],
        "timeouts": r["timeouts"], "errors": r["errors"],
    }


def run_case(case: str, multiples: list[float], seconds: float, recovery: bool, workdir: Path) -> dict:
    name, workers, rows, slo_ms = case.split(":")
    workers, rows, slo = int(workers), int(rows), float(slo_ms)
    path = demo_model_path() if name == "demo" else heavy_model(workdir / "heavy.onnx")
    x = np.random.default_rng(0).standard_normal((rows, 256)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [rows, 256], "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()  # fmt: skip
    serve_args = ["--model", f"m={path}", "--workers", str(workers), "--slo-ms", str(slo), "--percentile", "99"]
    process, base = start_gateway(serve_args, workdir / f"{case.replace(':', '_')}.log")
    url = f"{base}/v2/models/m/infer"
    try:
        cap = asyncio.run(capacity(url, body))
        points = []
        for k, m in enumerate(multiples):
            time.sleep(2.0)
            points.append({"multiple": m, **point(url, body, m * cap, seconds, slo, seed=k)})
            print(case, points[-1], file=sys.stderr)
        result = {"case": case, "capacity": round(cap, 1), "slo_ms": slo, "points": points}
        if recovery:
            time.sleep(2.0)
            over = point(url, body, 3 * cap, 30.0, slo, seed=99)
            first = point(url, body, 0.7 * cap, 10.0, slo, seed=100)
            then = point(url, body, 0.7 * cap, 10.0, slo, seed=101)
            result["recovery"] = {"overload": over, "first_10s": first, "after_10s": then}
            print(case, "recovery", then, file=sys.stderr)
        return result
    finally:
        process.terminate()
        process.wait(60)


def worst(results: list[dict]) -> dict:
    points = [(r["case"], p, r["capacity"], r["slo_ms"]) for r in results for p in r["points"]]
    return {
        "highest_admitted_p99_over_slo": max(((p["p99_ms"] or 0) / slo, c, p["multiple"]) for c, p, _, slo in points),
        "slowest_refusal_p50_over_slo": max(((p["refused_p50_ms"] or 0) / slo, c, p["multiple"]) for c, p, _, slo in points),
        "lowest_goodput_over_capacity": min((p["goodput"] / cap, c, p["multiple"]) for c, p, cap, _ in points),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(FAMILY), help="model:workers:rows:slo_ms, comma-separated")
    parser.add_argument("--multiples", default="1.5,3,5", help="offered load, in multiples of capacity")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--recovery", action="store_true", help="also 30 s at 3x, then 70%% of capacity")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    multiples = [float(m) for m in args.multiples.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(c, multiples, args.seconds, args.recovery, Path(tmp)) for c in args.cases.split(",")]
    report = {"results": results, "worst": worst(results)}
    if args.json:
        print(json.dumps(report))
    else:
        for r in results:
            print(f"{r['case']}: capacity {r['capacity']} req/s, SLO {r['slo_ms']:g} ms")
            for p in r["points"]:
                print(f"  {p['multiple']}x: admitted {p['admitted_share']:.0%}, goodput {p['goodput']} req/s, "
                      f"p50/p99 {p['p50_ms']}/{p['p99_ms']} ms, refusals p50/p99 {p['refused_p50_ms']}/{p['refused_p99_ms']} ms")  # fmt: skip
            if "recovery" in r:
                a = r["recovery"]["after_10s"]
                print(f"  recovery (70% after 30 s at 3x), from the 10th s: p99 {a['p99_ms']} ms, goodput {a['goodput']}")
        print("worst:", json.dumps(report["worst"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
