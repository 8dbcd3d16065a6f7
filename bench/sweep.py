"""Sweep offered load over three ways of serving the demo model, and compare.

  (a) batching: `sluice serve` with the fixed policy (B, T)
  (b) no batching: `sluice serve --policy none`
  (c) direct: one `sluice worker`, no gateway in front

Each configuration runs in fresh processes on 127.0.0.1. For each rate the
open-loop generator (bench/loadgen.py) sends Poisson arrivals of single-row
infer requests and measures latency from each request's scheduled send time.
A configuration's sweep stops once it is clearly saturated.

    python bench/sweep.py                     # the README's figures
    python bench/sweep.py --rates 100,1000 --duration 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run_load  # noqa: E402

from backends.worker.demo import demo_model_path  # noqa: E402

P99_TARGET_MS = 50.0
DEFAULT_RATES = "50,200,500,750,1000,1250,1500,1750,2000,2500,3000,3500,4000,4500,5000,5500,6000,7000,8000"


def _body() -> bytes:
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    doc = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [float(v) for v in x]}]}
    return json.dumps(doc).encode()


def _wait_for(path: Path, proc: subprocess.Popen, key: str, timeout: float = 60.0) -> int:
    """The port from the first JSON line of `path` that holds `key`."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{path.read_text()[-2000:]}")
        for line in path.read_text().splitlines():
            if line.startswith("{") and key in line:
                return int(json.loads(line)["port"])
        time.sleep(0.05)
    raise RuntimeError(f"server did not start:\n{path.read_text()[-2000:]}")


class Server:
    """One configuration under test, in its own process group."""

    def __init__(self, kind: str, args: argparse.Namespace, workdir: Path) -> None:
        self.log = workdir / f"{kind}-{time.monotonic_ns()}.log"
        common = [sys.executable, "-m"]
        if kind == "direct":
            cmd = common + ["backends.worker", "--model", str(demo_model_path()), "--name", "demo",
                            "--port", "0", "--threads", "1"]  # fmt: skip
            out, key = self.log, '"ready"'
        else:
            cmd = common + ["gateway", "serve", "--port", "0", "--no-access-log", "--workers", str(args.workers),
                            "--threads", "1", "--batch-size", str(args.batch_size),
                            "--timeout-ms", str(args.timeout_ms)]  # fmt: skip
            if kind == "no-batching":
                cmd += ["--policy", "none"]
            out, key = workdir / f"{kind}-{time.monotonic_ns()}.stdout", '"serving"'
        with open(self.log, "w") as err, open(out, "a") as std:
            self.proc = subprocess.Popen(cmd, stdout=std, stderr=err, start_new_session=True)
        self.port = _wait_for(self.log, self.proc, key)
        self.url = f"http://127.0.0.1:{self.port}/v2/models/demo/infer"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def sweep(kind: str, args: argparse.Namespace, body: bytes, workdir: Path) -> list[dict]:
    server = Server(kind, args, workdir)
    rows = []
    try:
        run_load(server.url, 100, 1.0, body=body, procs=1, seed=99)  # warm up connections and caches
        for rate in args.rates:
            r = run_load(server.url, rate, args.duration, body=body, procs=args.procs, seed=int(rate))
            errors = sum(r["errors"].values()) + r["timeouts"]
            row = {
                "config": kind, "rate": rate, "achieved_rps": round(r["achieved_rps"], 1),
                "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                "errors": errors, "sent": r["sent"],
            }  # fmt: skip
            rows.append(row)
            if not args.json:
                print(f"{kind:>12} {rate:>7} {row['achieved_rps']:>9} {row['p50_ms']:>8.2f} {row['p99_ms']:>9.2f} {errors:>6}", flush=True)
            if row["p99_ms"] > 4 * P99_TARGET_MS or errors > 0.01 * max(1, r["sent"]):
                break  # saturated: higher rates only queue more
    finally:
        server.stop()
    return rows


def overhead(args: argparse.Namespace, body: bytes, workdir: Path) -> dict:
    """The gateway's added latency at low load: (b) minus (c), in alternating runs.

    Both servers stay up and take turns, so drift on a shared machine cancels out
    of each pair; the figure is the median of the paired p50 differences.
    """
    gateway, direct = Server("no-batching", args, workdir), Server("direct", args, workdir)
    pairs = []
    try:
        for server in (gateway, direct):
            run_load(server.url, 100, 1.0, body=body, seed=98)
        for round_ in range(args.overhead_rounds):
            b = run_load(gateway.url, args.overhead_rate, args.overhead_duration, body=body, seed=round_)
            c = run_load(direct.url, args.overhead_rate, args.overhead_duration, body=body, seed=round_)
            pairs.append({"gateway_p50_ms": b["latency_ms"]["p50"], "direct_p50_ms": c["latency_ms"]["p50"]})
            if not args.json:
                print(f"overhead round {round_}: no-batching p50 {pairs[-1]['gateway_p50_ms']:.3f} ms, "
                      f"direct p50 {pairs[-1]['direct_p50_ms']:.3f} ms", flush=True)  # fmt: skip
    finally:
        gateway.stop()
        direct.stop()
    diffs = [p["gateway_p50_ms"] - p["direct_p50_ms"] for p in pairs]
    return {"rate": args.overhead_rate, "rounds": pairs, "added_p50_ms": round(float(np.median(diffs)), 3)}


def best_rate(rows: list[dict]) -> dict | None:
    """The highest achieved throughput whose p99 stays under the target, with no errors."""
    good = [r for r in rows if r["p99_ms"] < P99_TARGET_MS and r["errors"] == 0]
    return max(good, key=lambda r: r["achieved_rps"]) if good else None


def summarize(results: dict[str, list[dict]], added: dict | None) -> dict:
    best = {kind: best_rate(rows) for kind, rows in results.items()}
    summary: dict = {"p99_target_ms": P99_TARGET_MS, "best": best}
    a, b = best.get("batching"), best.get("no-batching")
    if a and b:
        summary["throughput_ratio_batching_vs_none"] = round(a["achieved_rps"] / b["achieved_rps"], 2)
    if added is not None:
        summary["low_load_rate"] = added["rate"]
        summary["gateway_added_p50_ms"] = added["added_p50_ms"]
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default=DEFAULT_RATES, help="offered loads, req/s, comma-separated, ascending")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per rate")
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--configs", default="batching,no-batching,direct")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--timeout-ms", type=float, default=5.0)
    p.add_argument("--overhead-rounds", type=int, default=5, help="alternating (b)/(c) runs at low load; 0 skips")
    p.add_argument("--overhead-rate", type=float, default=50.0)
    p.add_argument("--overhead-duration", type=float, default=6.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--output", help="also write the JSON result to this file")
    args = p.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    body = _body()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        if not args.json:
            print(f"{'config':>12} {'rate':>7} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>9} {'errors':>6}")
        for kind in args.configs.split(","):
            results[kind] = sweep(kind, args, body, Path(tmp))
        added = overhead(args, body, Path(tmp)) if args.overhead_rounds > 0 else None
    doc = {
        "settings": {"workers": args.workers, "batch_size": args.batch_size, "timeout_ms": args.timeout_ms,
                     "duration_s": args.duration, "loadgen_procs": args.procs, "cores": os.cpu_count()},
        "results": results,
        "overhead": added,
        "summary": summarize(results, added),
    }  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc if args.json else doc["summary"], indent=None if args.json else 2))


if __name__ == "__main__":
    main()
