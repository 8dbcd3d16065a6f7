"""The schedulers side by side in simulation (`sluice sim --compare`'s machinery) on four traces.

    python bench/scheduler_compare.py

- base+bursts: 30 min of a slowly varying base (250 to 550 req/s) with a 15 s burst of +1500
  req/s every 3 minutes (the shape of tests/unit/test_scheduler.py's trace, longer);
- the Azure code and conv traces made into a busy service: the hour compressed 10x (6 min),
  overlaid with 15 more copies of itself, each shifted circularly by a random offset;
- diurnal+bursts: three compressed days of 20 min (`--arrivals` DIURNAL for an hour): a base
  of 200 to 1800 req/s, so the pool should grow from one instance to two and back three
  times, with a 20 s burst of +1200 req/s every 270 s, at every phase of the day.

Profile bench/profiles/demo_faas.json (FaaS 1024 MB, 900 ms cold starts; instances $0.085/h, 60 s to
start, billed per second with a 60 s minimum), fixed B=16, T=50 ms, p99 <= 500 ms. Markdown on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from batching import FixedPolicy  # noqa: E402
from scheduler import load_scheduler  # noqa: E402
from sim import ServiceProfile, read_trace  # noqa: E402
from sim.scheduled import simulate_scheduled  # noqa: E402
from sim.sources import parse_arrivals  # noqa: E402

TRACES = REPO.parent / "shared" / "data" / "traces"
SCHEDULERS = ("hybrid", "faas-only", "pool-only", "mark")
SLO_S = 0.5
DIURNAL = "diurnal:rate=1000,amplitude=0.8,period=1200,burst=1200,every=270,length=20"


def base_plus_bursts(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chunks = []
    for t in np.arange(0.0, seconds, 1.0):
        rate = 400 + 150 * np.sin(2 * np.pi * t / 1800) + (1500 if t % 180 < 15 else 0)
        chunks.append(np.sort(t + rng.uniform(0, 1.0, rng.poisson(rate))))
    return np.concatenate(chunks)


def busy(name: str, speed: float = 10.0, copies: int = 16, seed: int = 2) -> np.ndarray:
    times = read_trace(TRACES / f"azure_llm_2023_{name}.csv")
    times = (times - times[0]) / speed
    span = times[-1] + 1e-3
    rng = np.random.default_rng(seed)
    shifted = [times] + [np.sort((times + rng.uniform(0, span)) % span) for _ in range(copies - 1)]
    return np.sort(np.concatenate(shifted))


def main() -> None:
    profile = ServiceProfile.from_dict(json.loads((REPO / "bench" / "profiles" / "demo_faas.json").read_text()))
    workloads = {"base+bursts (30 min)": base_plus_bursts(1800.0), "code, busy (6 min)": busy("code"),
                 "conv, busy (6 min)": busy("conv"), "diurnal+bursts (60 min)": parse_arrivals(DIURNAL, 3600.0, seed=3)}  # fmt: skip
    print("| trace | scheduler | $ per million | p99 ms | SLO attainment | instance-hours | FaaS share | FaaS cold starts |")
    print("|---|---|---|---|---|---|---|---|")
    for label, times in workloads.items():
        rate = len(times) / (times[-1] - times[0])
        for name in SCHEDULERS:
            began = time.perf_counter()
            result = simulate_scheduled(times, FixedPolicy(16, 0.05), profile, load_scheduler(name), slo_s=SLO_S, memory_mb=1024)
            s = result.summary()
            print(f"| {label}, {rate:.0f} req/s | {name} | {s['cost_per_million_usd']:.4f} | {s['latency_ms']['p99']:.0f} | "
                  f"{s['slo_attainment'] * 100:.2f}% | {s['instance_hours']:.3f} | {s['faas_share'] * 100:.1f}% | "
                  f"{s['cold_starts']} |", flush=True)  # fmt: skip
            print(f"{label} {name}: {time.perf_counter() - began:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
