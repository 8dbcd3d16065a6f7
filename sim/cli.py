"""`sluice sim`: what a batching policy would do on a trace or a synthetic load, at virtual time."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from batching import BatchPolicy, FixedPolicy, NoBatchingPolicy
from scheduler.keepwarm import KeepWarmPolicy
from scheduler.prior import WEIGHT_S as PRIOR_WEIGHT_S

from . import compare, report
from .profiles import ServiceProfile
from .simulate import TARGETS, simulate
from .sources import parse_arrivals, read_stamped_trace

POLICIES = ("fixed", "none", "adaptive")
# Builds the adaptive policy from the parsed arguments and the service profile.
PolicyFactory = Callable[[argparse.Namespace, ServiceProfile], BatchPolicy]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", metavar="FILE", help="arrival times: one per line, or a CSV whose first column is a timestamp")
    source.add_argument("--arrivals", metavar="SPEC", help="synthetic arrivals: poisson:rate=R, mmpp2:rates=R1,R2;switch=S1,S2, map:D0=a,b,c,d;D1=e,f,g,h, gamma:rate=R,cv=C, diurnal:rate=R,amplitude=A,period=P[,burst=B,every=E,length=L]")
    parser.add_argument("--duration", type=float, metavar="S", help="seconds of synthetic arrivals (required with --arrivals); with --trace, only its first S seconds")
    parser.add_argument("--profile", required=True, metavar="FILE", help="service profile JSON (service times and prices)")
    parser.add_argument("--config", metavar="FILE", help="simulate a model as `sluice serve --config FILE` would serve it: "
                        "its policy, SLO, admission, pool, function, scheduler and prices (the options below are then ignored)")
    parser.add_argument("--model", metavar="NAME", help="with --config: the model to simulate (needed if it has several)")
    parser.add_argument("--edge-ms", type=float, metavar="MS",
                        help="with --config: what the gateway adds to each answer outside its core (default 2, the allowance the adaptive policy plans with)")
    parser.add_argument("--fail-probability", type=float, default=0.0, metavar="P",
                        help="with --config: each batch on a server fails as unreachable with probability P, and is retried (default 0)")
    parser.add_argument("--slo-ms", type=float, help="latency objective in milliseconds (required without --config)")
    parser.add_argument("--percentile", type=float, help="the latency percentile the SLO is about (default 99, or the model's)")
    parser.add_argument("--policy", choices=POLICIES, default="fixed", help="batching policy (default fixed)")
    parser.add_argument("--batch-size", type=int, default=32, help="fixed policy: largest batch (default 32)")
    parser.add_argument("--timeout-ms", type=float, default=5.0, help="fixed policy: longest wait of a batch's oldest request (default 5)")
    parser.add_argument("--memory-mb", type=int, help="FaaS memory size from the profile (needed if it has several)")
    parser.add_argument("--target", choices=TARGETS, default="faas", help="serverless functions or a server pool (default faas)")
    parser.add_argument("--instances", type=int, default=1, help="pool instances (default 1)")
    parser.add_argument("--concurrency-limit", type=int, help="FaaS: most invocations at once; more wait (default unlimited)")
    parser.add_argument("--keep-alive-s", type=float, default=600.0, help="FaaS: idle seconds before an environment is reclaimed (default 600)")
    parser.add_argument("--warm-environments", type=int, default=0, help="FaaS: environments already warm at the start (the gateway warms one at startup; default 0)")
    parser.add_argument("--keep-warm", action="store_true", help="FaaS: ping environments warm when the idle-time histogram says a batch is likely (scheduler.keepwarm)")
    parser.add_argument("--scheduler", metavar="NAME", help="place batches on the profile's pool and FaaS with a scheduler: hybrid, faas-only, pool-only, mark, or module:Class")
    parser.add_argument("--compare", metavar="A,B,...", help="run several schedulers on the same arrivals and print one table (with --json: an object keyed by scheduler)")
    parser.add_argument("--prior-trace", metavar="FILE", help="hybrid: recorded traffic to start from (a file --trace reads; scheduler.prior), as a model's prior_trace; with date-times in both, read from the trace's time of day")
    parser.add_argument("--prior-weight-s", type=float, default=PRIOR_WEIGHT_S, metavar="S", help=f"hybrid: how many seconds of the record ahead of each plan weigh in its fixed count (default {PRIOR_WEIGHT_S:g})")
    parser.add_argument("--jitter", type=float, default=0.0, help="service-time noise: log-sd of a mean-1 lognormal factor (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic arrivals and jitter (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: the summary and the settings used")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the latency CDF and batch sizes over time (needs matplotlib)")


def run(args: argparse.Namespace, policy_factory: PolicyFactory | None = None) -> int:
    """Run the simulation the arguments describe; the exit status (2 on bad input)."""
    try:
        problem = _check(args, policy_factory)
        if problem:
            return _fail(problem)
        profile = ServiceProfile.load(args.profile)
        arrivals, first = load_arrivals(args)
        policy = _policy(args, profile, policy_factory)
        if args.scheduler or args.compare:
            results = compare.run_schedulers(args, profile, arrivals, lambda: _policy(args, profile, policy_factory), first)
            compare.print_results(results, args)
            return 0
        keep_warm = None
        if args.keep_warm:
            if args.target != "faas" or profile.faas is None:
                raise ValueError("--keep-warm needs the faas target and a profile with a 'faas' section")
            keep_warm = KeepWarmPolicy(args.keep_alive_s, profile.faas.cold_start_ms / 1000.0)
        result = simulate(
            arrivals, policy, profile, target=args.target, memory_mb=args.memory_mb, instances=args.instances,
            concurrency_limit=args.concurrency_limit, keep_alive_s=args.keep_alive_s, keep_warm=keep_warm,
            warm_environments=args.warm_environments, jitter=args.jitter,
            seed=args.seed, slo_s=args.slo_ms / 1000.0, progress=_progress_line() if sys.stderr.isatty() else None,
        )  # fmt: skip
    except (ValueError, OSError) as exc:
        return _fail(str(exc))

    output: dict[str, Any] = result.summary()
    at_percentile = output["latency_ms"].get(f"p{args.percentile:g}", math.nan)  # p50, p95, p99: computed once
    if at_percentile is not None and math.isnan(at_percentile):
        at_percentile = result.percentile_ms(args.percentile)
    output["percentile"] = args.percentile
    output["latency_ms_at_percentile"] = at_percentile
    output["meets_slo"] = at_percentile is not None and at_percentile <= args.slo_ms
    output["settings"] = _settings(args, policy, result.memory_mb, result.path)
    if args.json:
        print(json.dumps(output))
    else:
        print(report.format_table(output))
    if args.plot:
        report.plot(result, args.slo_ms / 1000.0, args.percentile, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _check(args: argparse.Namespace, policy_factory: PolicyFactory | None) -> str | None:
    """What is wrong with the arguments before any work is done, if anything."""
    if args.arrivals and args.duration is None:
        return "--arrivals needs --duration SECONDS"
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        return f"--duration must be a positive number of seconds, got {args.duration:g}"
    if args.slo_ms is None:
        return "--slo-ms is required (or --config FILE)"
    if args.percentile is None:
        args.percentile = 99.0
    if not (math.isfinite(args.slo_ms) and args.slo_ms > 0):
        return f"--slo-ms must be positive, got {args.slo_ms:g}"
    if not 0 < args.percentile <= 100:
        return f"--percentile must be in (0, 100], got {args.percentile:g}"
    if args.policy == "fixed" and (args.batch_size < 1 or not args.timeout_ms >= 0):
        return "--batch-size must be at least 1 and --timeout-ms non-negative"
    if args.policy == "adaptive" and policy_factory is None:
        return "--policy adaptive needs the SLO tuner, which this build of `sluice sim` does not have; use --policy fixed or none"
    if args.prior_trace is not None:
        named = [n.strip() for n in (args.compare or args.scheduler or "").split(",")]
        if "hybrid" not in named:
            return "--prior-trace is for the hybrid scheduler: name it in --scheduler or --compare"
    if not (math.isfinite(args.prior_weight_s) and args.prior_weight_s >= 0):
        return f"--prior-weight-s must be 0 or more, got {args.prior_weight_s:g}"
    if args.plot and not report.have_matplotlib():
        return "--plot needs matplotlib (pip install matplotlib)"
    return None


def load_arrivals(args: argparse.Namespace) -> tuple[np.ndarray, datetime | None]:
    """Arrival times from --trace (cut at --duration) or from --arrivals and --duration, and the
    first arrival's date-time (None for synthetic arrivals or a trace of plain seconds)."""
    if args.arrivals:
        return parse_arrivals(args.arrivals, args.duration, args.seed), None
    times, first = read_stamped_trace(args.trace)
    if args.duration is not None:
        times = times[: int(np.searchsorted(times, args.duration, side="left"))]
    return times, first


def _policy(args: argparse.Namespace, profile: ServiceProfile, policy_factory: PolicyFactory | None) -> BatchPolicy:
    if args.policy == "none":
        return NoBatchingPolicy()
    if args.policy == "fixed":
        return FixedPolicy(args.batch_size, args.timeout_ms / 1000.0)
    assert policy_factory is not None
    return policy_factory(args, profile)


def _settings(args: argparse.Namespace, policy: BatchPolicy, memory: int | None, path: str) -> dict[str, Any]:
    fixed = type(policy) in (FixedPolicy, NoBatchingPolicy)
    limits = policy.limits(0.0) if fixed else None
    if args.arrivals:
        source = f"{args.arrivals} for {args.duration:g} s (seed {args.seed})"
    else:
        source = args.trace + (f" (first {args.duration:g} s)" if args.duration is not None else "")
    return {
        "source": source,
        "trace": args.trace,
        "arrivals": args.arrivals,
        "duration_s": args.duration,
        "profile": args.profile,
        "policy": args.policy,
        "batch_size": limits.max_size if limits else None,
        "timeout_ms": limits.max_wait * 1000.0 if limits else None,
        "target": args.target,
        "memory_mb": memory,
        "instances": args.instances if args.target == "pool" else None,
        "concurrency_limit": args.concurrency_limit if args.target == "faas" else None,
        "keep_alive_s": args.keep_alive_s if args.target == "faas" else None,
        "keep_warm": bool(args.keep_warm),
        "jitter": args.jitter,
        "seed": args.seed,
        "slo_ms": args.slo_ms,
        "percentile": args.percentile,
        "path": path,
    }


def _fail(message: str) -> int:
    print(f"sluice sim: {message}", file=sys.stderr)
    return 2


def _progress_line() -> Callable[[float], None]:
    """Redraws one line on stderr; cleared when the simulation ends."""

    def show(fraction: float) -> None:
        if fraction >= 1.0:
            sys.stderr.write("\r\x1b[K")
        else:
            sys.stderr.write(f"\rsimulating... {fraction:6.1%}")
        sys.stderr.flush()

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice sim", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
