"""`sluice sim --config FILE [--model NAME]`: a model simulated as `sluice serve` would serve it.

The same TOML file, read by the same loader, gives everything the dispatch core needs:
the batching policy (fixed, none, or adaptive for the SLO, built by the same function
as live, from the profile's s(b) instead of a measurement), the SLO and admission
limits, the request timeout, retries and the outage grace, the server pool (local
workers, upstreams, registered servers) and its bounds, the function and its
concurrency, memory, keep-alive and keep-warm, the scheduler and its planning period,
the prices. The service profile (`sluice profile --config`) says how long a batch takes
on each; `sim.served` runs the core at virtual time. Each answer's latency also carries
the gateway's own handling of the request (reading it, writing its answer), taken as
the same `EDGE_ALLOWANCE_S` the adaptive policy plans with (`--edge-ms` to change it).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

import numpy as np

from batching import BatchPolicy, FixedPolicy, NoBatchingPolicy
from batching.tuner import MAX_BATCH
from scheduler import FunctionSettings
from sim.cli import load_arrivals
from sim.profiles import ServiceProfile
from sim.results import SimResult
from sim.served import Serving, simulate_served

from .config import ConfigError, GatewayConfig, ModelConfig
from .config import load as load_config
from .served import EDGE_ALLOWANCE_S, adaptive_for, make_scheduler, prices_of


def pick_model(config: GatewayConfig, name: str | None) -> ModelConfig:
    if name is not None:
        if name not in config.models:
            raise ConfigError(f"no model {name!r} in the config (it has {', '.join(sorted(config.models))})")
        return config.models[name]
    if len(config.models) != 1:
        raise ConfigError(f"the config has several models ({', '.join(sorted(config.models))}); choose one with --model")
    return next(iter(config.models.values()))


def serving_of(
    config: GatewayConfig, model: ModelConfig, profile: ServiceProfile, *, jitter: float = 0.0, seed: int = 0,
    fail_probability: float = 0.0, edge_s: float = EDGE_ALLOWANCE_S,
) -> Serving:  # fmt: skip
    """How `sluice serve` would serve `model`, as the simulator takes it."""
    if model.path:
        servers, slots = model.workers, 1  # local workers: one batch each at a time
    elif model.upstream:
        servers, slots = len(model.upstream), model.upstream_max_inflight
    elif model.registered:
        servers, slots = 1, model.upstream_max_inflight  # at least one has registered before it serves
    else:
        servers, slots = 0, 1
    if servers and profile.iaas is None:
        raise ValueError(f"model {model.name!r} has servers but profile {profile.name!r} has no 'iaas' section")
    faas = model.faas
    if faas is not None and profile.faas is None:
        raise ValueError(f"model {model.name!r} has a function but profile {profile.name!r} has no 'faas' section")
    memory = None
    if faas is not None:
        sizes = profile.memory_sizes
        memory = faas.memory_mb if faas.memory_mb in sizes else (sizes[0] if len(sizes) == 1 else None)
        if memory is None:
            raise ValueError(f"profile {profile.name!r} has no FaaS memory size {faas.memory_mb} (it has {sizes})")
    return Serving(
        servers=servers, server_slots=slots, max_servers=model.max_workers if model.hybrid else servers,
        function=faas is not None, concurrency=faas.concurrency if faas else None, memory_mb=memory,
        keep_alive_s=faas.keep_alive_s if faas else 600.0, keep_warm=bool(faas and faas.keep_warm),
        warm_environments=1 if faas else 0,  # the gateway's startup measurement warms one
        function_belief=FunctionSettings(faas.keep_alive_s, faas.overhead_ms / 1e3, faas.cold_start_ms / 1e3) if faas else None,
        as_measured=True, timeout_s=config.request_timeout_s, slo_s=(model.slo_ms or 1000.0) / 1e3,
        admit_on_slo=model.slo_ms is not None, max_pending=model.max_pending, max_attempts=model.max_attempts,
        outage_grace_s=model.unavailable_grace_s, prices=prices_of(model), jitter=jitter, seed=seed,
        fail_probability=fail_probability, edge_s=edge_s,
    )  # fmt: skip


def policy_of(model: ModelConfig, profile: ServiceProfile, serving: Serving) -> BatchPolicy:
    """The batching policy `sluice serve` would build, s(b) taken from the profile as the
    gateway measures it (on the first server, else on the function, round trip included)."""
    if model.policy == "none":
        return NoBatchingPolicy()
    if model.policy == "fixed":
        return FixedPolicy(model.batch_size, model.timeout_ms / 1000.0)
    sizes = np.arange(1, MAX_BATCH + 1)
    if serving.servers and profile.iaas is not None:
        limit = profile.iaas.max_batch_size or MAX_BATCH
        service = np.asarray(profile.iaas_service_s(np.minimum(sizes, limit)), dtype=float)
    else:
        assert profile.faas is not None
        service = np.asarray(profile.faas_service_s(sizes, serving.memory_mb), dtype=float) + profile.faas.invoke_overhead_ms / 1e3
    return adaptive_for(model, service, inline=True)


def simulate_config(
    config: GatewayConfig, model: ModelConfig, profile: ServiceProfile, arrivals: np.ndarray, *,
    jitter: float = 0.0, seed: int = 0, fail_probability: float = 0.0, edge_s: float = EDGE_ALLOWANCE_S,
    first: datetime | None = None,
) -> SimResult:  # fmt: skip
    """`model` served as `config` says on `arrivals` (`first`: the first one's date-time, if the
    trace has one: a `prior_trace` is read from its time of day)."""
    serving = serving_of(config, model, profile, jitter=jitter, seed=seed, fail_probability=fail_probability, edge_s=edge_s)
    policy = policy_of(model, profile, serving)
    scheduler = make_scheduler(model, first) if model.hybrid else None
    slo_s = model.slo_ms / 1e3 if model.slo_ms is not None else None
    return simulate_served(arrivals, policy, profile, serving, scheduler, slo_s=slo_s)


def run(args: argparse.Namespace) -> int:
    """`sluice sim --config`: the exit status (2 on bad input)."""
    try:
        config = load_config(args.config)
        model = pick_model(config, args.model)
        profile = ServiceProfile.load(args.profile)
        if args.arrivals and args.duration is None:
            raise ValueError("--arrivals needs --duration SECONDS")
        if not 0.0 <= args.fail_probability < 1.0:
            raise ValueError(f"--fail-probability must be in [0, 1), got {args.fail_probability:g}")
        arrivals, first = load_arrivals(args)
        edge_s = EDGE_ALLOWANCE_S if args.edge_ms is None else args.edge_ms / 1e3
        result = simulate_config(config, model, profile, arrivals, jitter=args.jitter, seed=args.seed, first=first,
                                 fail_probability=args.fail_probability, edge_s=edge_s)  # fmt: skip
    except (ValueError, OSError) as exc:  # ConfigError and ProfileError are ValueErrors
        print(f"sluice sim: {exc}", file=sys.stderr)
        return 2
    percentile = model.percentile if args.percentile is None else args.percentile
    output: dict[str, Any] = result.summary()
    at = result.percentile_ms(percentile)
    output["percentile"] = percentile
    output["latency_ms_at_percentile"] = at
    output["meets_slo"] = None if model.slo_ms is None else (at is not None and at <= model.slo_ms)
    output["settings"] = {
        "config": args.config, "model": model.name, "profile": args.profile, "policy": model.policy,
        "scheduler": model.scheduler if model.hybrid else None, "source": args.trace or f"{args.arrivals} for {args.duration:g} s",
        "seed": args.seed, "jitter": args.jitter, "fail_probability": args.fail_probability, "edge_ms": edge_s * 1e3,
    }  # fmt: skip
    print(json.dumps(output) if args.json else format_served(output))
    return 0


def format_served(out: dict[str, Any]) -> str:
    s, lat = out["settings"], out["latency_ms"]
    lines = [f"{out['requests']:,} requests from {s['source']}; model {s['model']} as {s['config']} serves it"
             + (f" (scheduler {s['scheduler']})" if s["scheduler"] else "")]  # fmt: skip
    if lat["p50"] is not None:
        lines.append("latency ms   " + "   ".join(f"{key} {lat[key]:.1f}" for key in ("p50", "p95", "p99", "max", "mean")))
    if out["slo_ms"] is not None and out["latency_ms_at_percentile"] is not None:
        verdict = "met" if out["meets_slo"] else "MISSED"
        lines.append(f"p{out['percentile']:g} latency  {out['latency_ms_at_percentile']:.1f} ms vs SLO {out['slo_ms']:g} ms: "
                     f"{verdict} ({out['slo_attainment']:.2%} of requests within the SLO)")  # fmt: skip
    lines.append(f"answers      {out['completed']:,} served, {out['refused']:,} refused (429), "
                 f"{out['timed_out']:,} past their deadline (504), {out['failed']:,} failed")  # fmt: skip
    lines.append(f"cost         ${out['cost_usd']:.6g}" + (f", {out['instance_hours'] * 3600:.1f} instance-seconds"
                                                          if out.get("instance_hours") is not None else ""))  # fmt: skip
    mean = out["mean_batch_size"]
    lines.append(f"batches      {out['batches']:,}" + (f" (mean size {mean:.2f})" if mean else "")
                 + f", {out['faas_share']:.1%} on the function, cold starts {out['cold_starts']:,}")  # fmt: skip
    lines.append(f"simulated in {out['wall_s']:.2f} s")
    return "\n".join(lines)
