"""A model as the gateway serves it: its pool, its metadata, its runner."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from backends import BackendError, LocalWorkerPool, ModelMetadata, Pool, UpstreamPool
from backends.registered_pool import RegisteredPool
from backends.faas_pool import FaasPool
from backends.mixed_pool import MixedPool
from backends.lambda_backend import InvocationReport, LambdaBackend
from backends.profiling import measure_batch_times, service_curve
from batching import BatchPolicy, FixedPolicy, NoBatchingPolicy
from batching.adaptive import AdaptivePolicy
from batching.coldtune import Warmth
from batching.tuner import MAX_BATCH, Target

from scheduler import Dispatcher, Fleet, FunctionSettings, HybridScheduler, Prices, Scheduler, load_scheduler
from scheduler.keepwarm import KeepWarmPolicy
from sim.counts import model_directory
from sim.sources import read_prior

from .config import FaasConfig, ModelConfig
from .keepwarm import KeepWarmLoop
from .metrics import Metrics, ModelMetrics
from .retune import RetuneLoop
from .capture.writer import Capture
from .drift_watch import DriftWatch, load_reference
from .rollout import Outcomes
from .scheduling import PlanLoop
from .runner import ModelRunner

log = logging.getLogger("sluice.gateway")

_METADATA_WAIT_S = 60.0
EDGE_ALLOWANCE_S = 0.002  # parse, validate, respond: about 0.3 ms warm, several times that cold


@dataclass
class ServedModel:
    config: ModelConfig
    pool: Pool
    metadata: ModelMetadata
    runner: ModelRunner
    retune: RetuneLoop | None = None
    keep_warm: KeepWarmLoop | None = None
    plan: PlanLoop | None = None
    retired: bool = False  # unloaded: out of routing, answering what it holds
    outcomes: Outcomes = field(default_factory=Outcomes)  # its recent answers, for a rollout's guard
    drift: DriftWatch | None = None  # its data against a reference ([models.<name>.drift])
    capture: Capture | None = None  # sampled requests to files or S3 ([models.<name>.capture]), offered by the app

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def key(self) -> str:
        """How replicas know this version's shared state: the model's name for version 1."""
        return self.config.key

    @property
    def ready(self) -> bool:
        return any(i.healthy for i in self.pool.instances)


def make_servers(config: ModelConfig) -> Pool | None:
    """The model's server pool, if it has one: local workers, upstream URLs, or self-registering servers."""
    if config.path:
        return LocalWorkerPool(
            config.path, config.name, config.workers, threads=config.worker_threads, timeout_s=config.backend_timeout_s
        )
    if config.upstream:
        return UpstreamPool(
            list(config.upstream), config.name, max_inflight=config.upstream_max_inflight,
            binary=config.upstream_binary, timeout_s=config.backend_timeout_s,
        )  # fmt: skip
    if config.registered:
        return RegisteredPool(
            config.name, max_ttl_s=config.lease_s, max_inflight=config.upstream_max_inflight,
            binary=config.upstream_binary, timeout_s=config.backend_timeout_s,
        )  # fmt: skip
    return None


def make_pool(config: ModelConfig, metrics: ModelMetrics | None = None) -> Pool:
    """Servers, a function, or both under a scheduler (a `MixedPool`)."""
    servers = make_servers(config)
    if config.faas is None:
        assert servers is not None
        return servers
    faas = FaasPool(make_lambda_backend(config.faas, metrics), config.faas.concurrency)
    return faas if servers is None else MixedPool(servers, faas)


def registry_of(pool: Pool) -> RegisteredPool | None:
    """Where the admin endpoint registers a model's servers, if they register themselves."""
    servers = pool.servers if isinstance(pool, MixedPool) else pool
    return servers if isinstance(servers, RegisteredPool) else None


class FunctionBill:
    """Hears each invocation's REPORT line: the function's metrics, and its bill, which the
    model's fleet keeps (`Fleet.faas_billed`) once it serves (before: the measurement's
    invocations, priced by the same formula)."""

    def __init__(self, faas: FaasConfig, metrics: ModelMetrics | None) -> None:
        self.faas, self.metrics = faas, metrics
        self.fleet: Fleet | None = None

    def __call__(self, r: InvocationReport) -> None:
        cost = 0.0
        if r.billed_ms is not None:
            cost = self.fleet.faas_billed(r.billed_ms) if self.fleet is not None else self.faas.prices.faas_bill(r.billed_ms)
        if self.metrics is not None:
            outcome = "ping" if r.ping else "ok" if r.ok else ("throttled" if r.billed_ms is None and r.throttles else "error")
            self.metrics.faas_invocation(r.function, outcome, r.throttles, r.billed_ms, r.cold, cost)


def make_lambda_backend(faas: FaasConfig, metrics: ModelMetrics | None) -> LambdaBackend:
    """The function's backend; each invocation's REPORT line feeds the FaaS metrics and bill."""
    keep_warm = KeepWarmPolicy(faas.keep_alive_s, cold_start_s=1.0) if faas.keep_warm else None
    return LambdaBackend(
        faas.function, region=faas.region, endpoint_url=faas.endpoint_url, qualifier=faas.qualifier,
        timeout_s=faas.timeout_s, max_concurrency=faas.concurrency, on_report=FunctionBill(faas, metrics),
        keep_warm=keep_warm,
    )  # fmt: skip


def make_policy(config: ModelConfig, metadata: ModelMetadata) -> BatchPolicy:
    if config.policy == "none" or not metadata.batchable:
        return NoBatchingPolicy()
    return FixedPolicy(config.batch_size, config.timeout_ms / 1000.0)


async def make_adaptive_policy(config: ModelConfig, metadata: ModelMetadata, pool: Pool) -> AdaptivePolicy:
    """Measure s(b) on one instance, then build the policy for the SLO: on a function,
    tuned to the cheapest (B, T) that meets it; on a pool, work-conserving with the
    largest batch the SLO allows (the most capacity, and no wait while an instance idles)."""
    healthy = [i for i in pool.instances if i.healthy]
    if not healthy:
        raise RuntimeError(f"model {config.name!r}: no healthy instance to measure service times on")
    try:
        measured = await measure_batch_times(healthy[0].backend, metadata)
    except BackendError as exc:
        raise RuntimeError(f"model {config.name!r}: measuring service times failed: {exc}") from exc
    service = service_curve(measured, MAX_BATCH)
    log.info("measured service times", extra={"model": config.name, "ms": _ms(measured)})
    return adaptive_for(config, service, inline=False)


def adaptive_for(config: ModelConfig, service: np.ndarray, *, inline: bool) -> AdaptivePolicy:
    """The adaptive policy for the SLO, from s(b) (measured live, or a profile's in
    `sluice sim --config`): on a function, tuned to the cheapest (B, T) that meets it; on
    a pool, work-conserving with the largest batch the SLO allows. `inline`: re-tune in
    the caller (the simulator) rather than in the gateway's background solver."""
    assert config.slo_ms is not None
    # The model covers the wait and the measured batch time (which includes the hop to
    # the worker, or the invocation); the gateway's own handling of the request is on top.
    if config.faas is not None:
        # A function bills each batch (its duration, at most the round trip measured here).
        cost = np.asarray(config.faas.prices.faas_batch_cost(service), dtype=float)
        # Its cold starts as the config expects them, with the provider's keep-alive and the
        # concurrency: the tuner counts the share of requests that meet one (`batching.coldtune`).
        faas = config.faas
        target = Target(f"faas-{faas.memory_mb}mb", service, cost, overhead_s=EDGE_ALLOWANCE_S,
                        cold_start_s=faas.cold_start_ms / 1e3, memory_mb=faas.memory_mb)  # fmt: skip
        warmth = Warmth(faas.keep_alive_s, faas.concurrency)
        return AdaptivePolicy([target], config.slo_ms / 1e3, config.percentile / 100.0, inline=inline, warmth=warmth)
    # A pool is paid for whether it runs or idles: batches go whenever an instance is free.
    target = Target("pool", service, service.copy(), overhead_s=EDGE_ALLOWANCE_S)
    return AdaptivePolicy([target], config.slo_ms / 1e3, config.percentile / 100.0, inline=inline, work_conserving=True)


def make_fleet(config: ModelConfig, pool: Pool) -> Fleet:
    """The core's view of the pool: servers (grown by the planner when they are local
    workers) and the function, with the prices and the function's settings."""
    servers: Pool | None = pool.servers if isinstance(pool, MixedPool) else None if isinstance(pool, FaasPool) else pool
    faas = pool.faas if isinstance(pool, MixedPool) else pool if isinstance(pool, FaasPool) else None
    settings = None
    if config.faas is not None:
        f = config.faas
        settings = FunctionSettings(f.keep_alive_s, f.overhead_ms / 1e3, f.cold_start_ms / 1e3)
    started = getattr(servers, "startup_seconds", None)  # local workers time their own start
    return Fleet(
        (lambda: servers.instances) if servers is not None else (lambda: ()),
        (lambda: faas.instances[0] if faas.instances else None) if faas is not None else (lambda: None),
        prices=prices_of(config), function_settings=settings, max_instances=config.max_workers,
        startup_s=max(started) if started else 1.0,
    )  # fmt: skip


def prices_of(config: ModelConfig) -> Prices:
    faas = config.faas
    return Prices(
        instance_per_hour=config.instance_price_per_hour, instance_min_billed_s=config.instance_min_billed_s,
        faas_per_gb_s=faas.price_per_gb_s if faas else Prices.faas_per_gb_s,
        faas_per_request=faas.price_per_request if faas else Prices.faas_per_request,
        faas_memory_mb=faas.memory_mb if faas else Prices.faas_memory_mb,
    )  # fmt: skip


def make_scheduler(config: ModelConfig, start: datetime | None) -> Scheduler:
    """The model's scheduler. `start`: when its first plan comes (the wall clock live, the
    trace's first arrival in `sluice sim --config`; None if unknown), the time of day a
    `prior_trace` with date-times is read from. Without a `prior_trace`, the model's own
    `traffic_log`, once it holds a day (`gateway.traffic_log`)."""
    if config.scheduler == "hybrid":
        record = config.prior_trace or own_log(config)
        prior = read_prior(record, config.prior_weight_s, start) if record else None
        return HybridScheduler(
            plan_interval_s=config.plan_interval_s, step_s=config.plan_interval_s, scale_in_after_s=config.scale_in_after_s,
            prior=prior,
        )  # fmt: skip
    return load_scheduler(config.scheduler)


def own_log(config: ModelConfig) -> str | None:
    """The model's traffic log, if it has logged any day; None, saying so, if it has not."""
    if config.traffic_log is None:
        return None
    directory = model_directory(config.traffic_log, config.key)
    if not any(directory.glob("*.csv")):
        log.info("no traffic log to plan from yet", extra={"model": config.name, "path": str(directory)})
        return None
    return str(directory)


def make_core(config: ModelConfig, policy: BatchPolicy, fleet: Fleet, scheduler: Scheduler | None = None,
              pool_service=None, faas_service=None) -> Dispatcher:  # fmt: skip
    """The model's dispatch core live. `sluice sim --config` gives its own the same
    settings from the same config (`gateway.simulated.serving_of`)."""
    return Dispatcher(
        policy, fleet, name=config.name, scheduler=scheduler, slo_s=(config.slo_ms or 1000.0) / 1e3,
        pool_service=pool_service, faas_service=faas_service, max_attempts=config.max_attempts,
        max_pending=config.max_pending, outage_grace_s=config.unavailable_grace_s,
    )  # fmt: skip


async def measure_scheduled(
    config: ModelConfig, metadata: ModelMetadata, pool: MixedPool, scheduler: Scheduler
) -> tuple[np.ndarray, np.ndarray | None]:
    """s(b) on the function and on a server, for the scheduler. Servers that have not
    joined yet (registered ones) are measured when the first does (None until then)."""
    try:
        on_function = await measure_batch_times(pool.faas.instances[0].backend, metadata)
        first = next((i for i in pool.servers.instances if i.healthy), None)
        on_server = await measure_batch_times(first.backend, metadata) if first is not None else None
    except (BackendError, IndexError) as exc:
        raise RuntimeError(f"model {config.name!r}: measuring service times failed: {exc}") from exc
    log.info("scheduler ready", extra={"model": config.name, "scheduler": getattr(scheduler, "name", config.scheduler),
                                       "server_ms": _ms(on_server) if on_server else None,
                                       "function_ms": _ms(on_function)})  # fmt: skip
    return service_curve(on_function, MAX_BATCH), service_curve(on_server, MAX_BATCH) if on_server else None


def curve_function(curve: np.ndarray):
    """s(b) from a measured curve (indexed by b - 1; the last point beyond it)."""
    return lambda b: float(curve[min(max(1, b), len(curve)) - 1])


def _ms(measured: dict[int, float]) -> dict[str, float]:
    return {str(b): round(s * 1e3, 3) for b, s in measured.items()}


async def _fetch_metadata(name: str, pool: Pool, wait_s: float | None = _METADATA_WAIT_S) -> ModelMetadata:
    """Ask the first instance that answers; the backend read it from the model itself.
    `wait_s=None` waits for as long as it takes (servers that have yet to register)."""
    give_up = None if wait_s is None else time.monotonic() + wait_s
    last: Exception | None = None
    while True:
        for instance in pool.instances:
            try:
                return (await instance.backend.metadata()).renamed(name)
            except BackendError as exc:
                last = exc
        if give_up is not None and (time.monotonic() > give_up or not pool.instances):
            raise RuntimeError(f"no backend of model {name!r} gave its metadata: {last or 'no instances'}")
        await asyncio.sleep(0.5)


async def start_model(config: ModelConfig, metrics: Metrics, pool: Pool | None = None) -> ServedModel:
    """Start serving one model. Given `pool`, it has been started already (a pool of
    registered servers starts empty and waits here for its first member)."""
    model_metrics = metrics.for_model(config.name, config.version)
    started = time.monotonic()
    if pool is None:
        pool = make_pool(config, model_metrics)
        await pool.start()
    try:
        waiting = isinstance(pool, RegisteredPool)
        metadata = (await _fetch_metadata(config.name, pool, None if waiting else _METADATA_WAIT_S)).versioned(config.version)
        while waiting and not any(i.healthy for i in pool.instances):
            await asyncio.sleep(0.1)
        drift = watch_drift(config, metadata, metrics) if config.drift is not None else None  # a bad reference stops here
        capture = None
        if config.capture is not None:  # a destination that does not exist stops here
            capture = Capture(config.capture, config.name, config.version, metadata.batchable, metrics)
            await capture.open()
        if config.policy == "adaptive" and metadata.batchable:
            policy: BatchPolicy = await make_adaptive_policy(config, metadata, pool)
        else:
            policy = make_policy(config, metadata)
        scheduler = make_scheduler(config, datetime.now(timezone.utc)) if isinstance(pool, MixedPool) else None
        curves = await measure_scheduled(config, metadata, pool, scheduler) if isinstance(pool, MixedPool) else None
    except BaseException:
        await pool.stop()
        raise
    fleet = make_fleet(config, pool)
    faas_pool = pool.faas if isinstance(pool, MixedPool) else pool
    if isinstance(faas_pool, FaasPool) and isinstance(faas_pool.backend.on_report, FunctionBill):
        faas_pool.backend.on_report.fleet = fleet
    if curves is not None:
        on_function, on_server = curves
        pool_curve = curve_function(on_server if on_server is not None else on_function)
        core = make_core(config, policy, fleet, scheduler, pool_curve, curve_function(on_function))
    else:
        core = make_core(config, policy, fleet)
    runner = ModelRunner(core, pool, model_metrics)
    if drift is not None:
        runner.observers.append(lambda inputs, outputs: drift.observe(inputs, outputs, time.monotonic(), time.time()))
    log.info(
        "model ready",
        extra={
            "model": config.name, "instances": len(pool.instances), "policy": repr(policy),
            "batchable": metadata.batchable, "startup_s": round(time.monotonic() - started, 3),
        },
    )  # fmt: skip
    served = ServedModel(config, pool, metadata, runner, drift=drift, capture=capture)
    if capture is not None:
        capture.start()
    if curves is not None:
        assert isinstance(pool, MixedPool)
        served.plan = PlanLoop(config.name, core, pool, metadata, model_metrics, servers_measured=curves[1] is not None)
        served.plan.start()
    if isinstance(faas_pool, FaasPool) and isinstance(faas_pool.backend.keep_warm, KeepWarmPolicy):
        served.keep_warm = KeepWarmLoop(faas_pool.backend.keep_warm, faas_pool.backend)
        served.keep_warm.start()
    if config.slo_ms is not None:
        metrics.slo.labels(config.name, f"{config.percentile:g}").set(config.slo_ms / 1e3)
    if isinstance(policy, AdaptivePolicy):
        served.retune = RetuneLoop(config.name, policy, on_change=runner.limits_changed)
        served.retune.start()
        metrics.watch_policy(config.name, config.version, policy)
    else:
        metrics.batch_limit.labels(config.name, config.version).set(policy.limits(0.0).max_size)
        metrics.batch_timeout.labels(config.name, config.version).set(policy.limits(0.0).max_wait)
    return served


def watch_drift(config: ModelConfig, metadata: ModelMetadata, metrics: Metrics) -> DriftWatch:
    """The version's drift watch, its reference read and checked against the model's tensors."""
    drift = config.drift
    assert drift is not None
    reference = None
    if drift.reference is not None:
        shapes = {t.name: tuple(t.shape[1:]) for t in metadata.inputs}
        out_shapes = {t.name: tuple(t.shape[1:]) for t in metadata.outputs}
        try:
            reference = load_reference(drift.reference, shapes, out_shapes, drift.max_features)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"model {config.name!r}: [drift] reference {drift.reference!r}: {exc}") from exc
    return DriftWatch(config.name, config.version, drift, metrics, reference, [t.name for t in metadata.outputs])
