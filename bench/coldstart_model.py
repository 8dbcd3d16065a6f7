"""Cold-start probability: batching.coldstart's model against simulation, worst case first.

Run: .venv/bin/python bench/coldstart_model.py [requests]
Per request. "stationary" discards the first 20% of the run (the start-up from no
warm environment); "from cold" is the whole run against the model with horizon_s.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from batching import FixedPolicy
from batching.arrivals import MAP
from batching.coldstart import cold_probability
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from sim import ServiceProfile, simulate

WORKLOADS = {
    "poisson-1": MAP.poisson(1.0),
    "poisson-5": MAP.poisson(5.0),
    "bursty-fast": MAP.mmpp2((2000.0, 50.0), (5.0, 10.0)),
    "slow-lulls": MAP.mmpp2((100.0, 0.05), (1 / 30, 1 / 120)),
}
KEEP_ALIVES = {"poisson-1": (1.0, 3.0, 10.0), "poisson-5": (1.0, 3.0)}


def profile(cold_ms: float) -> ServiceProfile:
    return ServiceProfile.from_dict({"name": "bench", "faas": {
        "memory_mb": {"1024": {"base_ms": 40, "per_item_ms": 8}}, "cold_start_ms": cold_ms,
        "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002}})  # fmt: skip


def row(name: str, arrivals: MAP, b: int, t: float, keep: float, cold_ms: float, n: int) -> dict:
    prof = profile(cold_ms)
    times = np.concatenate([[0.0], np.cumsum(arrivals.sample(n - 1, np.random.default_rng(7)))])
    sim = simulate(times, FixedPolicy(b, t), prof, memory_mb=1024, keep_alive_s=keep)
    late = sim.close_time >= 0.2 * times[-1]
    stationary = float((sim.cold * sim.size)[late].sum() / sim.size[late].sum())
    whole = float((sim.cold * sim.size).sum() / sim.size.sum())
    law = wait_distribution(WindowTables(CountingProcess(arrivals, b - 1, t), t, 64), b)
    busy = np.asarray(prof.faas_service_s(np.arange(1, b + 1), 1024))
    began = time.perf_counter()
    model = float(cold_probability(arrivals, law.size_pmf, busy, keep, t, cold_start_s=cold_ms / 1e3))
    cost = time.perf_counter() - began
    horizon = float(cold_probability(arrivals, law.size_pmf, busy, keep, t, horizon_s=times[-1], cold_start_s=cold_ms / 1e3))
    error = max(abs(model - stationary), abs(horizon - whole))
    return dict(name=name, b=b, t=t, keep=keep, cold=cold_ms, sim=stationary, model=model, sim_h=whole, model_h=horizon,
                error=error, us=cost * 1e6, hours=times[-1] / 3600)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rows = []
    for name, arrivals in WORKLOADS.items():
        for keep in KEEP_ALIVES.get(name, (60.0, 600.0)):
            for b, t in ((8, 0.05), (32, 0.2)):
                for cold_ms in (200.0, 1000.0):
                    rows.append(row(name, arrivals, b, t, keep, cold_ms, n))
    rows.sort(key=lambda r: -r["error"])
    print(f"{'workload':12} {'B':>3} {'T ms':>5} {'K s':>5} {'cold ms':>7} | {'sim stat':>9} {'model':>9} | "
          f"{'sim cold':>9} {'model H':>9} | {'abs err':>8} {'model us':>9} {'run h':>6}")
    for r in rows:
        print(f"{r['name']:12} {r['b']:3d} {r['t'] * 1e3:5.0f} {r['keep']:5g} {r['cold']:7.0f} | {r['sim']:9.2e} {r['model']:9.2e} | "
              f"{r['sim_h']:9.2e} {r['model_h']:9.2e} | {r['error']:8.1e} {r['us']:9.0f} {r['hours']:6.2f}")


if __name__ == "__main__":
    main()
