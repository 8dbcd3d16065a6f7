"""How many requests per second the simulator gets through, on its fast path and its event path.

Poisson arrivals on FaaS (2048 MB, 900 ms cold starts, jitter 0.1):
- "fast": a fixed (B=32, T=10 ms) policy, batches formed with numpy (`form_batches`);
  also with at most 4 invocations at once ("fast_concurrency_4", batches started first in,
  first out as invocations end);
- "adaptive": the SLO-adaptive policy (p99 <= 100 ms), re-tuning as it goes, on the
  same fast path (`sim.segments`: batches formed in bulk between its changes of
  limits), with where the time goes: telling the policy of every arrival (its
  estimator, fits and solves: `limit_runs`), forming the batches (`form_by_runs`), and
  the rest (service times, cold starts, latencies). The goal: at least a million
  requests per second;
- "event": every request through the dispatch core on the event engine (what
  concurrency limits, pools, schedulers and admission need), fixed and adaptive.
Prints one JSON object. The SimPy comparison is bench/sim_vs_simpy.py.

    python bench/sim_speed.py [--sizes 1000000,2000000,5000000] [--adaptive-requests 1000000] [--event-requests 200000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batching import AdaptivePolicy, BatchPolicy, FixedPolicy  # noqa: E402  (run as a script from anywhere)
from sim import ServiceProfile, simulate  # noqa: E402
from sim.segments import form_by_runs, limit_runs  # noqa: E402
from sim.tune import targets_from_profile  # noqa: E402

PROFILE = ServiceProfile.from_dict({
    "name": "bench",
    "faas": {"memory_mb": {"2048": {"base_ms": 25, "per_item_ms": 4}}, "invoke_overhead_ms": 15,
             "cold_start_ms": 900, "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
})  # fmt: skip


def fixed() -> BatchPolicy:
    return FixedPolicy(32, 0.010)


def adaptive() -> AdaptivePolicy:
    return AdaptivePolicy(targets_from_profile(PROFILE, "faas"), 0.100, 0.99)


def measure(
    arrivals: np.ndarray, path: str, repeats: int, policy: Callable[[], BatchPolicy] = fixed, concurrency: int | None = None
) -> dict[str, Any]:
    """Best of `repeats` runs (the least disturbed by whatever else shares the machine),
    and their median (what a noisy machine gives typically)."""
    sims: list[float] = []
    best_summary, batches, retunes = float("inf"), 0, None
    for _ in range(repeats):
        chosen = policy()
        began = time.perf_counter()
        result = simulate(arrivals, chosen, PROFILE, jitter=0.1, slo_s=0.1, path=path, concurrency_limit=concurrency)
        simulated = time.perf_counter()
        result.summary()
        sims.append(simulated - began)
        best_summary = min(best_summary, time.perf_counter() - simulated)
        batches, retunes = result.batches, getattr(chosen, "retunes", None)
    best_sim, median_sim = min(sims), float(np.median(sims))
    out: dict[str, Any] = {
        "requests": len(arrivals),
        "batches": batches,
        "simulate_s": round(best_sim, 4),
        "summary_s": round(best_summary, 4),
        "requests_per_s": round(len(arrivals) / best_sim),
        "median_simulate_s": round(median_sim, 4),
        "median_requests_per_s": round(len(arrivals) / median_sim),
    }
    return out | ({"retunes": retunes} if retunes is not None else {})


def adaptive_breakdown(arrivals: np.ndarray, repeats: int) -> dict[str, Any]:
    """The adaptive fast path's parts, timed apart (medians of `repeats` runs): the policy
    told of every arrival (in bulk: `AdaptivePolicy.observe_arrivals`), then the batches
    formed run by run; the rest of `simulate` is what remains of its time."""
    times = arrivals.tolist()
    policy_s, formation_s = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        runs = limit_runs(adaptive(), times)
        told = time.perf_counter()
        formation = form_by_runs(times, runs)
        formed = time.perf_counter()
        policy_s.append(told - began)
        formation_s.append(formed - told)
    told_s, formed_s, n = float(np.median(policy_s)), float(np.median(formation_s)), len(times)
    return {
        "runs_of_limits": len(runs), "batches": len(formation),
        "policy_s": round(told_s, 4), "policy_requests_per_s": round(n / told_s),
        "formation_s": round(formed_s, 4), "formation_requests_per_s": round(n / formed_s),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,2000000,5000000", help="fast-path arrival counts, comma-separated")
    parser.add_argument("--adaptive-requests", type=int, default=1_000_000, help="arrivals for the adaptive policy's fast path")
    parser.add_argument("--event-requests", type=int, default=200_000, help="arrivals for the event path")
    parser.add_argument("--rate", type=float, default=2000.0, help="Poisson arrival rate per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    arrivals = np.cumsum(rng.exponential(1.0 / args.rate, max(sizes + [args.event_requests, args.adaptive_requests])))
    fast = [measure(arrivals[:n], "fast", args.repeats) for n in sizes]
    adaptive_fast = measure(arrivals[: args.adaptive_requests], "fast", args.repeats, adaptive)
    adaptive_fast["parts"] = adaptive_breakdown(arrivals[: args.adaptive_requests], args.repeats)
    limited = measure(arrivals[: sizes[0]], "fast", args.repeats, concurrency=4)
    event = measure(arrivals[: args.event_requests], "event", 1)
    limited_event = measure(arrivals[: args.event_requests], "event", 1, concurrency=4)
    adaptive_event = measure(arrivals[: args.event_requests], "event", 1, adaptive)
    print(json.dumps({
        "workload": {"arrivals": "poisson", "rate_per_s": args.rate, "batch_size": 32, "timeout_ms": 10.0,
                     "target": "faas", "memory_mb": 2048, "jitter": 0.1},
        "fast": fast,
        "adaptive_fast": adaptive_fast,
        "fast_concurrency_4": limited,
        "event": event,
        "event_concurrency_4": limited_event,
        "adaptive_event": adaptive_event,
        "fast_over_event": round(min(f["requests_per_s"] for f in fast) / event["requests_per_s"], 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
