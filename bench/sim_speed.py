"""How many requests per second the simulator gets through, on its fast path and its event path.

A fixed (B=32, T=10 ms) policy on FaaS over Poisson arrivals: the fast path forms
batches with numpy (target: at least a million requests per second); the event path
pushes every request through a real BatchQueue on the event engine. Prints one JSON object.

    python bench/sim_speed.py [--sizes 1000000,2000000,5000000] [--event-requests 200000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batching import FixedPolicy  # noqa: E402  (run as a script from anywhere)
from sim import ServiceProfile, simulate  # noqa: E402

PROFILE = ServiceProfile.from_dict({
    "name": "bench",
    "faas": {"memory_mb": {"2048": {"base_ms": 25, "per_item_ms": 4}}, "invoke_overhead_ms": 15,
             "cold_start_ms": 900, "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
})  # fmt: skip


def measure(arrivals: np.ndarray, path: str, repeats: int) -> dict[str, float]:
    """Best of `repeats` runs (the least disturbed by whatever else shares the machine)."""
    best_sim, best_summary, batches = float("inf"), float("inf"), 0
    for _ in range(repeats):
        began = time.perf_counter()
        result = simulate(arrivals, FixedPolicy(32, 0.010), PROFILE, jitter=0.1, slo_s=0.1, path=path)
        simulated = time.perf_counter()
        result.summary()
        best_sim = min(best_sim, simulated - began)
        best_summary = min(best_summary, time.perf_counter() - simulated)
        batches = result.batches
    return {
        "requests": len(arrivals),
        "batches": batches,
        "simulate_s": round(best_sim, 4),
        "summary_s": round(best_summary, 4),
        "requests_per_s": round(len(arrivals) / best_sim),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,2000000,5000000", help="fast-path arrival counts, comma-separated")
    parser.add_argument("--event-requests", type=int, default=200_000, help="arrivals for the event path")
    parser.add_argument("--rate", type=float, default=2000.0, help="Poisson arrival rate per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    arrivals = np.cumsum(rng.exponential(1.0 / args.rate, max(sizes + [args.event_requests])))
    fast = [measure(arrivals[:n], "fast", args.repeats) for n in sizes]
    event = measure(arrivals[: args.event_requests], "event", 1)
    print(json.dumps({
        "workload": {"arrivals": "poisson", "rate_per_s": args.rate, "batch_size": 32, "timeout_ms": 10.0,
                     "target": "faas", "memory_mb": 2048, "jitter": 0.1},
        "fast": fast,
        "event": event,
        "fast_over_event": round(min(f["requests_per_s"] for f in fast) / event["requests_per_s"], 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
