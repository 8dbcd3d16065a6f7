"""A model as the gateway serves it: its pool, its metadata, its runner."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from backends import BackendError, LocalWorkerPool, ModelMetadata, Pool, UpstreamPool
from batching import BatchPolicy, FixedPolicy, NoBatchingPolicy

from .config import ModelConfig
from .metrics import Metrics
from .runner import ModelRunner

log = logging.getLogger("sluice.gateway")

_METADATA_WAIT_S = 60.0


@dataclass
class ServedModel:
    config: ModelConfig
    pool: Pool
    metadata: ModelMetadata
    runner: ModelRunner

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.metadata.versions[0] if self.metadata.versions else "1"

    @property
    def ready(self) -> bool:
        return any(i.healthy for i in self.pool.instances)


def make_pool(config: ModelConfig) -> Pool:
    if config.path:
        return LocalWorkerPool(
            config.path, config.name, config.workers, threads=config.worker_threads, timeout_s=config.backend_timeout_s
        )
    return UpstreamPool(
        list(config.upstream), config.name, max_inflight=config.upstream_max_inflight,
        binary=config.upstream_binary, timeout_s=config.backend_timeout_s,
    )  # fmt: skip


def make_policy(config: ModelConfig, metadata: ModelMetadata) -> BatchPolicy:
    if config.policy == "none" or not metadata.batchable:
        return NoBatchingPolicy()
    return FixedPolicy(config.batch_size, config.timeout_ms / 1000.0)


async def _fetch_metadata(name: str, pool: Pool) -> ModelMetadata:
    """Ask the first instance that answers; the backend read it from the model itself."""
    give_up = time.monotonic() + _METADATA_WAIT_S
    last: Exception | None = None
    while True:
        for instance in pool.instances:
            try:
                return (await instance.backend.metadata()).renamed(name)
            except BackendError as exc:
                last = exc
        if time.monotonic() > give_up or not pool.instances:
            raise RuntimeError(f"no backend of model {name!r} gave its metadata: {last or 'no instances'}")
        await asyncio.sleep(0.5)


async def start_model(config: ModelConfig, metrics: Metrics) -> ServedModel:
    pool = make_pool(config)
    started = time.monotonic()
    await pool.start()
    try:
        metadata = await _fetch_metadata(config.name, pool)
    except BaseException:
        await pool.stop()
        raise
    policy = make_policy(config, metadata)
    runner = ModelRunner(
        config.name, policy, pool, metrics.for_model(config.name),
        max_attempts=config.max_attempts, outage_grace_s=config.unavailable_grace_s,
    )  # fmt: skip
    log.info(
        "model ready",
        extra={
            "model": config.name, "instances": len(pool.instances), "policy": repr(policy),
            "batchable": metadata.batchable, "startup_s": round(time.monotonic() - started, 3),
        },
    )  # fmt: skip
    return ServedModel(config, pool, metadata, runner)
