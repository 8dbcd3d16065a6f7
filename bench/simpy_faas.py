"""The fixed-policy FaaS simulation of `sluice sim`, written in SimPy: the baseline for bench/sim_vs_simpy.py.

The same model as `python -m sim --arrivals poisson:rate=R --duration S --policy fixed`
on a profile's linear FaaS curve: Poisson arrivals drawn as `sim.sources` draws them
(same seed, same numbers); a batch closes at B requests or when its oldest request
has waited T; each batch invokes the function at once (no concurrency limit), meets a
cold environment when none idled for less than the keep-alive (the one idle longest is
reused), runs overhead + cold start + s(b) x a mean-1 lognormal jitter drawn per batch,
and bills whole milliseconds of s(b) x jitter. Written as SimPy is meant to be used (an
arrival process, timeouts with callbacks for batch timers and invocations), and kept
lean: numpy only for drawing arrivals and the summary. It imports nothing of Sluice,
so its start-up is SimPy's own. Prints one JSON object like `sluice sim --json`.

    python bench/simpy_faas.py --rate 2000 --duration 1000 --profile bench/profiles/demo_faas.json --memory-mb 2048
"""

from __future__ import annotations

import argparse
import heapq
import json
import math

import numpy as np
import simpy


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Cumulative exponential gaps up to `duration_s`, drawn as `sim.sources` draws them."""
    n = int(rate * duration_s * 1.1 + 10 * math.sqrt(rate * duration_s) + 16)
    while True:
        times = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))
        if times[-1] >= duration_s:
            return times[: int(np.searchsorted(times, duration_s, side="left"))]
        n *= 2


class FaasModel:
    """Batching queue, function environments and bill, as SimPy processes and callbacks."""

    def __init__(self, env: simpy.Environment, args: argparse.Namespace, curve: tuple[float, float], cold_s: float,
                 overhead_s: float, price: tuple[float, float]) -> None:  # fmt: skip
        self.env, self.batch_size, self.timeout_s = env, args.batch_size, args.timeout_ms / 1000.0
        self.base_s, self.per_item_s = curve
        self.cold_s, self.overhead_s, self.keep_alive_s = cold_s, overhead_s, args.keep_alive_s
        self.per_ms, self.per_request = price
        self.rng = np.random.default_rng(args.seed)
        self.sigma = args.jitter
        self.open: list[int] = []  # indices of the requests in the open batch
        self.generation = 0  # which batch a pending timer belongs to
        self.free_at: list[float] = []  # heap: when each environment was last freed
        self.starts: list[float] = []  # per batch: when it was invoked
        self.delays: list[float] = []  # per batch: overhead + cold start + service
        self.sizes: list[int] = []
        self.colds = 0
        self.cost = 0.0

    def arrivals(self, times: list[float]):  # noqa: ANN201 (a SimPy process)
        env = self.env
        for i, t in enumerate(times):
            yield env.timeout(t - env.now)
            if not self.open:
                self.generation += 1
                timer = env.timeout(self.timeout_s)
                timer.callbacks.append(lambda _e, g=self.generation: self._timed_out(g))
            self.open.append(i)
            if len(self.open) >= self.batch_size:
                self._close()

    def _timed_out(self, generation: int) -> None:
        if generation == self.generation and self.open:
            self._close()

    def _close(self) -> None:
        size = len(self.open)
        self.open = []
        self.generation += 1
        now = self.env.now
        free_at = self.free_at
        while free_at and now - free_at[0] >= self.keep_alive_s:
            heapq.heappop(free_at)  # reclaimed
        cold = not (free_at and free_at[0] <= now)
        if not cold:
            heapq.heappop(free_at)
        factor = float(self.rng.lognormal(-self.sigma**2 / 2, self.sigma)) if self.sigma > 0 else 1.0
        service = (self.base_s + self.per_item_s * size) * factor
        delay = self.overhead_s + (self.cold_s if cold else 0.0) + service
        self.colds += cold
        self.cost += max(1.0, math.ceil(round(service * 1000.0, 6))) * self.per_ms + self.per_request
        self.starts.append(now)
        self.delays.append(delay)
        self.sizes.append(size)
        done = self.env.timeout(delay)
        done.callbacks.append(lambda _e: heapq.heappush(free_at, self.env.now))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--duration", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=10.0)
    parser.add_argument("--keep-alive-s", type=float, default=600.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--slo-ms", type=float, default=100.0)
    args = parser.parse_args()
    with open(args.profile) as f:
        faas = json.load(f)["faas"]
    point = faas["memory_mb"][str(args.memory_mb)]
    per_ms = args.memory_mb / 1024.0 * faas["price_per_gb_s"] / 1000.0
    times = poisson_arrivals(args.rate, args.duration, args.seed)
    env = simpy.Environment(initial_time=float(times[0]))
    model = FaasModel(env, args, (point["base_ms"] / 1e3, point["per_item_ms"] / 1e3), faas.get("cold_start_ms", 0.0) / 1e3,
                      faas.get("invoke_overhead_ms", 0.0) / 1e3, (per_ms, faas.get("price_per_request", 0.0)))  # fmt: skip
    env.process(model.arrivals(times.tolist()))
    env.run()
    sizes = np.array(model.sizes)
    latency = np.repeat(np.array(model.starts) + np.array(model.delays), sizes) - times
    p50, p95, p99 = np.percentile(latency, [50, 95, 99]) * 1000.0
    print(json.dumps({
        "requests": len(times), "batches": len(sizes), "mean_batch_size": float(sizes.mean()),
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": float(latency.max()) * 1e3, "mean": float(latency.mean()) * 1e3},
        "slo_attainment": float(np.count_nonzero(latency <= args.slo_ms / 1e3)) / len(times),
        "cost_usd": model.cost, "cold_starts": model.colds,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
