"""`sluice sim --scheduler NAME` and `sluice sim --compare A,B,...`: batches placed by schedulers
on the profile's pool and FaaS together (`sim.scheduled`), one or several on the same arrivals."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

import numpy as np

from batching import BatchPolicy
from scheduler import HybridScheduler, Scheduler, load_scheduler

from .profiles import ServiceProfile
from .scheduled import simulate_scheduled
from .sources import read_prior


def run_schedulers(args: argparse.Namespace, profile: ServiceProfile, arrivals: np.ndarray,
                   make_policy: Any, first: datetime | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The `sim` summary (plus instance_hours and faas_share) per scheduler, in the order given.
    `first`: the first arrival's date-time, if the trace has one (hybrid's record is read from its
    time of day)."""
    names = [n.strip() for n in (args.compare or args.scheduler).split(",") if n.strip()]
    if not names:
        raise ValueError("name at least one scheduler")
    schedulers = {name: _scheduler(name, args, first) for name in names}  # fail on a bad name before any work
    results = {}
    for name, scheduler in schedulers.items():
        policy: BatchPolicy = make_policy()
        result = simulate_scheduled(
            arrivals, policy, profile, scheduler, slo_s=args.slo_ms / 1000.0, memory_mb=args.memory_mb,
            keep_alive_s=args.keep_alive_s, concurrency_limit=args.concurrency_limit,
        )  # fmt: skip
        summary = result.summary()
        at_percentile = result.percentile_ms(args.percentile)
        summary["latency_ms_at_percentile"] = at_percentile
        summary["meets_slo"] = at_percentile is not None and at_percentile <= args.slo_ms
        results[name] = summary
    return results


def _scheduler(name: str, args: argparse.Namespace, first: datetime | None) -> Scheduler:
    """The scheduler by name; hybrid with `--prior-trace`'s record, if one is given."""
    if name == "hybrid" and getattr(args, "prior_trace", None):
        return HybridScheduler(prior=read_prior(args.prior_trace, args.prior_weight_s, first))
    return load_scheduler(name)


def print_results(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(results if args.compare else next(iter(results.values()))))
        return
    p = f"p{args.percentile:g}"
    print(f"| scheduler | $ per million | {p} ms | meets the SLO | SLO attainment | instance-hours | FaaS share | cold starts |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['cost_per_million_usd']:.4f} | {r['latency_ms_at_percentile']:.1f} | {'yes' if r['meets_slo'] else 'no'} | "
              f"{r['slo_attainment'] * 100:.2f}% | {r['instance_hours']:.3f} | {r['faas_share'] * 100:.1f}% | {r['cold_starts']} |")  # fmt: skip
    if len(results) > 1:  # the question a comparison asks: which one to run
        meeting = [name for name, r in results.items() if r["meets_slo"]]
        slo = f"{p} <= {args.slo_ms:g} ms"
        if meeting:
            best = min(meeting, key=lambda name: results[name]["cost_per_million_usd"])
            print(f"\nCheapest that meets the SLO ({slo}): {best}, ${results[best]['cost_per_million_usd']:.4f} per million")
        else:
            print(f"\nNone meets the SLO ({slo}).")
