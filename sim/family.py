"""A seeded family of scheduling problems: workloads, pools, functions and SLOs never tuned on.

A scheduler that wins on the four traces it was developed on may lose on traffic it has
not seen (issue 15). Each `Member` of the family is one problem, drawn from a seed:
- traffic: a diurnal curve (period 10-60 min, amplitude up to 0.9), bursts of 2x-10x
  lasting 5-120 s at random intervals (on a flat or a diurnal base), a two-level MMPP,
  or an Azure LLM trace (code or conv) time-scaled and overlaid with shifted copies of
  itself to reach the member's rate;
- a pool whose instances start in 10-180 s, priced so that a fully used instance is
  2x-20x cheaper per request than the function; a function of 512-3008 MB with cold
  starts of 0.3-1.5 s;
- an SLO (p99) from 100 ms to 2 s, and a batch size and timeout that fit it.

A light member (`light=True`) serves a model ten times lighter: one instance takes 2-20x
the mean rate, and the batch is the largest that fits the SLO (up to 64) whether or not the
traffic fills it within the timeout, as a policy tuned for the function alone would set it.
There the question is one instance or none, and the function's batches are part-full, so a
request costs it more than a full batch says (`scheduler.fill`).

Everything is a pure function of the member's seed: the same member is the same problem
in every process (the benchmark runs members in parallel) and in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler import batch_fill

from .profiles import ServiceProfile
from .sources import read_trace

KINDS = ("diurnal", "bursts", "diurnal+bursts", "mmpp", "azure-code", "azure-conv")
TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
FAAS_PER_GB_S, FAAS_PER_REQUEST = 0.0000166667, 0.0000002
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Member:
    """One problem of the family: how its traffic is made, and how it is served."""

    seed: int
    kind: str
    duration_s: float
    mean_rate: float  # requests/s, about
    traffic: dict[str, float]  # the kind's parameters (periods, amplitudes, burst sizes, ...)
    slo_s: float
    batch_size: int
    timeout_s: float
    capacity: float  # requests/s a fully used instance serves at `batch_size`
    startup_s: float
    cheaper: float  # how many times cheaper per request a fully used instance is than the function
    memory_mb: int
    cold_start_ms: float
    overhead_ms: float
    min_billed_s: float = 60.0
    light: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind}#{self.seed}" + ("/light" if self.light else "")

    @property
    def busy_at_mean(self) -> float:
        """Instances the mean rate keeps busy. A light member's batches are part-full at its
        rate (`scheduler.fill`), each request carrying more of a batch's fixed time; the
        others' batch rule keeps them nearly full, and they count full batches, as every
        figure of the family before light members did."""
        if not self.light:
            return self.mean_rate / self.capacity
        fill = float(batch_fill(np.array([self.mean_rate]), self.batch_size, self.timeout_s)[0])
        return self.mean_rate / fill * self.pool_service_s(fill)

    def pool_service_s(self, b: float) -> float:
        """s(b) on an instance: a quarter fixed, the rest per item; s(B) = B / capacity."""
        full = self.batch_size / self.capacity
        return 0.25 * full + 0.75 * full * b / self.batch_size

    def profile_dict(self) -> dict:
        """The member's service profile (the JSON form `ServiceProfile.from_dict` reads)."""
        full_ms = 1000.0 * self.batch_size / self.capacity
        base_ms, per_item_ms = 0.25 * full_ms, 0.75 * full_ms / self.batch_size
        speed = 1024.0 / min(self.memory_mb, 1769)  # CPU grows with memory up to one vCPU
        faas = {"base_ms": 2.0 * base_ms * speed + 5.0, "per_item_ms": 2.0 * per_item_ms * speed}
        faas_s = (faas["base_ms"] + faas["per_item_ms"] * self.batch_size) / 1000.0
        per_request = (math.ceil(faas_s * 1000) / 1000 * self.memory_mb / 1024 * FAAS_PER_GB_S + FAAS_PER_REQUEST) / self.batch_size
        price_per_hour = 3600.0 * per_request * self.capacity / self.cheaper
        return {
            "name": self.name,
            "faas": {"memory_mb": {str(self.memory_mb): faas}, "cold_start_ms": self.cold_start_ms,
                     "invoke_overhead_ms": self.overhead_ms, "price_per_gb_s": FAAS_PER_GB_S,
                     "price_per_request": FAAS_PER_REQUEST},
            "iaas": {"base_ms": base_ms, "per_item_ms": per_item_ms, "max_batch_size": 64,
                     "price_per_hour": price_per_hour, "startup_s": self.startup_s},
        }  # fmt: skip

    def profile(self) -> ServiceProfile:
        return ServiceProfile.from_dict(self.profile_dict())

    def arrivals(self, draw: int = 0) -> np.ndarray:
        """The member's arrival times (sorted seconds from 0), the same for the same seed; `draw`
        > 0: another draw of the same traffic (`sim.exante`)."""
        rng = np.random.default_rng([self.seed, 1, draw] if draw else [self.seed, 1])
        if self.kind.startswith("azure-"):
            return _azure(self.kind.removeprefix("azure-"), self.traffic, self.duration_s, self.mean_rate, rng)
        return _from_rates(self.rates(draw), rng)

    def rates(self, draw: int = 0) -> np.ndarray:
        """The expected rate in each second (requests/s): what an oracle planner would know.
        (For the Azure kinds, the arrivals themselves per second.) Another draw keeps the
        member's level: its bursts are scaled as the member's are."""
        seconds = np.arange(int(self.duration_s), dtype=float)
        p = self.traffic
        if self.kind.startswith("azure-"):
            return np.bincount(self.arrivals(draw).astype(int), minlength=len(seconds))[: len(seconds)].astype(float)
        if self.kind == "mmpp":
            return self.mean_rate * self.levels(draw)
        base = np.ones_like(seconds)
        if "diurnal" in self.kind:
            base = 1.0 + p["amplitude"] * np.sin(2 * np.pi * seconds / p["period_s"] + p["phase"])
        shaped = base * self.levels(draw)
        scale = shaped.mean() if not draw else (base * self.levels()).mean()
        return self.mean_rate * shaped / scale

    def levels(self, draw: int = 0) -> np.ndarray:
        """The traffic's random multiplier in each second: the MMPP's level, a burst's factor
        (1 between bursts), or 1 throughout for the kinds without one."""
        rng = np.random.default_rng([self.seed, 2, draw] if draw else [self.seed, 2])
        seconds = int(self.duration_s)
        if self.kind == "mmpp":
            return _mmpp_levels(self.traffic, seconds, rng)
        if "bursts" in self.kind:
            return _bursts(self.traffic, seconds, rng)
        return np.ones(seconds)


def _from_rates(rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson arrivals at `rates[k]` in second k."""
    counts = rng.poisson(rates)
    starts = np.repeat(np.arange(len(rates), dtype=float), counts)
    return np.sort(starts + rng.uniform(0.0, 1.0, len(starts)))


def _bursts(p: dict[str, float], seconds: int, rng: np.random.Generator) -> np.ndarray:
    """A multiplier per second: `factor` during each burst, bursts starting at exponential gaps."""
    level = np.ones(seconds)
    t = rng.exponential(p["every_s"])
    while t < seconds:
        length = rng.uniform(p["min_length_s"], p["max_length_s"])
        level[int(t) : int(t + length)] = rng.uniform(2.0, p["factor"])
        t += length + rng.exponential(p["every_s"])
    return level


def _mmpp_levels(p: dict[str, float], seconds: int, rng: np.random.Generator) -> np.ndarray:
    """Two levels, low and `ratio` x low, held for exponential sojourns; mean 1 in expectation."""
    low_s, high_s, ratio = p["low_s"], p["high_s"], p["ratio"]
    low = (low_s + high_s) / (low_s + ratio * high_s)
    level = np.empty(seconds)
    t, high = 0, bool(rng.random() < high_s / (low_s + high_s))
    while t < seconds:
        hold = max(1, round(rng.exponential(high_s if high else low_s)))
        level[t : t + hold] = ratio * low if high else low
        t, high = t + hold, not high
    return level


def _azure(name: str, p: dict[str, float], duration_s: float, mean_rate: float, rng: np.random.Generator) -> np.ndarray:
    """The trace's hour compressed `speed`x, tiled to the duration, and overlaid with copies of
    itself shifted circularly at random, as many as the rate needs."""
    times = read_trace(TRACES / f"azure_llm_2023_{name}.csv")
    times = (times - times[0]) / p["speed"]
    span = float(times[-1]) + 1e-3
    tiled = np.concatenate([times + k * span for k in range(math.ceil(duration_s / span))])
    tiled = tiled[tiled < duration_s]
    copies = max(1, round(mean_rate * duration_s / len(tiled)))
    parts = [tiled] + [np.sort((tiled + rng.uniform(0, duration_s)) % duration_s) for _ in range(copies - 1)]
    return np.sort(np.concatenate(parts))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def member(seed: int, kind: str | None = None, duration_s: float = 1200.0, light: bool = False) -> Member:
    """The family's member drawn from `seed` (its kind drawn too unless given); `light`: its
    model ten times lighter, its batch the largest that fits (the module's docstring)."""
    rng = np.random.default_rng([seed, 0])
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    slo = _log_uniform(rng, 0.1, 2.0)
    timeout = min(0.05, 0.15 * slo)
    memory = int(rng.choice([512, 1024, 2048, 3008]))
    mean_rate = _log_uniform(rng, 20.0, 100.0)
    per_instance = float(rng.uniform(0.5, 5.0)) / (10.0 if light else 1.0)  # instances the mean rate fills
    capacity = mean_rate / per_instance
    cold_ms = float(rng.uniform(300.0, 1500.0))
    overhead_ms = float(rng.uniform(5.0, 20.0))
    speed = 1024.0 / min(memory, 1769)
    room = 0.6 * slo - timeout - 0.005 - overhead_ms / 1000.0  # for s(b) on the function: 2 x the pool's x speed
    capacity = max(capacity, 2.0 * speed / room)  # a batch of one must fit, on either side
    batch = 1
    for b in BATCH_SIZES + ((64,) if light else ()):  # the largest batch that fits (and that the mean rate fills within twice the timeout)
        if 2.0 * speed * b / capacity <= room and (light or b <= 2.0 * mean_rate * timeout):
            batch = b
    traffic: dict[str, float] = {}
    if "diurnal" in kind:
        traffic |= {"period_s": float(rng.uniform(600.0, 3600.0)), "amplitude": float(rng.uniform(0.2, 0.9)),
                    "phase": float(rng.uniform(0, 2 * math.pi))}  # fmt: skip
    if "bursts" in kind:
        traffic |= {"factor": float(rng.uniform(2.0, 10.0)), "every_s": float(rng.uniform(60.0, 600.0)),
                    "min_length_s": 5.0, "max_length_s": float(rng.uniform(5.0, 120.0))}  # fmt: skip
    if kind == "mmpp":
        traffic |= {"ratio": float(rng.uniform(2.0, 10.0)), "low_s": _log_uniform(rng, 20.0, 600.0),
                    "high_s": _log_uniform(rng, 10.0, 300.0)}  # fmt: skip
    if kind.startswith("azure-"):
        traffic |= {"speed": float(rng.uniform(2.0, 12.0))}
    return Member(
        seed=seed, kind=kind, duration_s=duration_s, mean_rate=mean_rate, traffic=traffic, slo_s=slo,
        batch_size=batch, timeout_s=timeout, capacity=capacity, startup_s=float(rng.uniform(10.0, 180.0)),
        cheaper=_log_uniform(rng, 2.0, 20.0), memory_mb=memory, cold_start_ms=cold_ms, overhead_ms=overhead_ms,
        light=light,
    )  # fmt: skip


def family(seeds: range | list[int], duration_s: float = 1200.0, light: bool = False) -> list[Member]:
    """The members drawn from `seeds`, kinds taken in turn so that each is equally represented."""
    return [member(seed, KINDS[i % len(KINDS)], duration_s, light) for i, seed in enumerate(seeds)]
