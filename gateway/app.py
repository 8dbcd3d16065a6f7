"""The aiohttp application: Open Inference Protocol V2, KServe V1, health and metrics.

Lifecycle: `on_startup` starts every model's pool; `on_shutdown` (after the
listening socket is closed) closes every open batch at once and waits until all
admitted requests are answered; `on_cleanup` stops the pools.
"""

from __future__ import annotations

import asyncio
import logging
import itertools
import math
import os
import random
import re
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from backends import ProtocolError, decode_request, encode_response
from backends.faas_pool import FaasPool
from backends.mixed_pool import MixedPool
from backends.oip import HEADER_LENGTH
from backends.registered_pool import RegisteredPool
from sim.counts import model_directory

from . import admin, health, model_control, rollout_loop
from .codec import check_outputs, decode_v1, encode_v1, error_response, validate_inputs
from .config import GatewayConfig, ModelConfig
from .lag import LoopLag
from .metrics import Metrics
from .replicas import Cluster, MemoryState, StateStore, default_replica_id
from .runner import RequestFailed
from .served import ServedModel, make_pool, registry_of, start_model
from .model_control import ModelControl
from .shadow import Shadowing
from .shared_drift import SharedDrift
from .shared_traffic import SharedTraffic
from .traffic_log import TrafficLog
from .versions import VERSION_HEADER, ModelVersions

log = logging.getLogger("sluice.gateway")
access = logging.getLogger("sluice.access")

try:
    VERSION = version("sluice-gateway")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"

_REQUEST_ID = re.compile(r"^[\w.:\-]{1,128}$")
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)
_MAX_ELEMENTS = 16 << 20


class Gateway:
    """Everything the handlers share: configuration, served models, metrics."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.models: dict[str, ModelVersions] = {}
        self.registries: dict[str, RegisteredPool] = {}  # models whose servers register themselves
        self.starting: dict[str, asyncio.Task] = {}  # models waiting for their first server
        self.draining = False
        self._drains: asyncio.Future | None = None  # the runners' drains, once stopping
        self.cluster = self._make_cluster()
        self.lag = LoopLag()
        self.traffic_log = TrafficLog()  # the models with `traffic_log` set: arrivals per second, a file per day
        self.metrics.loop_lag.set_function(lambda: self.lag.seconds)
        self.control = ModelControl(self)  # loads and unloads versions: the model repository
        self.shadowing = Shadowing(self)  # copies to shadow versions, and their comparisons
        self.rollouts = rollout_loop.Rollouts(self)
        self.shared = SharedTraffic(self, config.state.sync_s)  # traffic and rollouts across replicas
        self.shared_drift = SharedDrift(self, config.state.sync_s)  # drift scored on every replica's sketches

    def _make_cluster(self) -> Cluster:
        state = self.config.state
        if state.url:
            from .replicas.redis_state import RedisState

            store: StateStore = RedisState(state.url, prefix=state.prefix)
        else:
            store = MemoryState()
        replica = state.replica or default_replica_id(self.config.port)
        lease = max((m.lease_s for m in self.config.models.values()), default=30.0)
        return Cluster(store, replica, self.metrics, sync_s=state.sync_s, lease_s=state.leader_lease_s,
                       member_lease_s=lease)  # fmt: skip

    async def startup(self, app: web.Application) -> None:
        self.cluster.start()
        self.traffic_log.start()
        self.shared.start()
        if self.config.state.url:
            self.shared_drift.start()
        log.info("cluster state", extra={"store": self.cluster.store.name, "replica": self.cluster.replica})
        try:
            for config in self.config.models.values():
                pool = make_pool(config, self.metrics.for_model(config.name, config.version))
                await pool.start()
                registry = registry_of(pool)
                if registry is not None:
                    self.registries[config.name] = registry
                    self.cluster.watch(config.name, registry=registry)
                if pool is registry:  # nothing to serve with until a server joins: start once one has
                    self.starting[config.name] = asyncio.create_task(self._start_later(config, pool))
                else:  # start_model stops the pool if the model fails to start
                    self.serving(await start_model(config, self.metrics, pool))
            for name in self.control.repository.names() if self.control.repository else ():
                await self.control.load(name)  # a version that fails is listed UNAVAILABLE, with its reason
        except BaseException:
            await self.cleanup(app)  # no worker of an earlier model outlives a failed start
            raise

    async def _start_later(self, config: ModelConfig, pool: RegisteredPool) -> None:
        log.info("waiting for a server to register", extra={"model": config.name})
        try:
            self.serving(await start_model(config, self.metrics, pool))
        except Exception:
            log.exception("model failed to start", extra={"model": config.name})
        finally:
            del self.starting[config.name]

    def versions_of(self, name: str) -> ModelVersions:
        return self.models.setdefault(name, ModelVersions(name))

    def serving(self, model: ServedModel) -> None:
        """A version starts taking traffic (all of it if it is its model's first)."""
        self.models.setdefault(model.name, ModelVersions(model.name)).add(model)
        if model.drift is not None and self.config.state.url:
            model.drift.share()  # several replicas: windows by wall-clock slot, scored on the merge
        pool = model.pool
        faas = pool.faas if isinstance(pool, MixedPool) else pool if isinstance(pool, FaasPool) else None
        runner = model.runner
        self.cluster.watch(model.key, runner_arrivals=lambda: runner.arrivals, plan=model.plan, faas=faas,
                           fleet=runner.core.fleet)  # fmt: skip
        if model.config.traffic_log is not None:
            self.traffic_log.watch(model.key, model_directory(model.config.traffic_log, model.key), lambda: runner.arrivals)

    async def retire(self, model: ServedModel) -> None:
        """A version taken out of routing: answer everything it holds, then stop it."""
        model.retired = True
        await model.runner.drain()
        await asyncio.gather(*(loop.stop() for loop in (model.retune, model.keep_warm, model.plan) if loop is not None),
                             return_exceptions=True)  # fmt: skip
        await model.pool.stop()
        if model.capture is not None:  # after the last answers: writes what it holds, closes its file
            await model.capture.stop()
        self.cluster.forget(model.key)
        await self.traffic_log.forget(model.key)
        self.metrics.forget(model.name, model.version)

    def served(self) -> Iterator[ServedModel]:
        """Every version of every model that serves."""
        for versions in list(self.models.values()):
            yield from versions

    def stop_admitting(self) -> None:
        """The first step of a stop: open batches close at once, new requests get 503 with
        Retry-After (and their connection closed after it), readiness says no. The socket
        may go on listening a while (`shutdown_grace_s`), so that a request already on its
        way gets that clear answer instead of a reset connection."""
        if self.draining:
            return
        self.draining = True
        waiting = sum(m.runner.waiting for m in self.served())
        log.info("draining", extra={"waiting": waiting})
        self._drains = asyncio.gather(*(m.runner.drain() for m in self.served()))

    async def shutdown(self, app: web.Application) -> None:
        self.stop_admitting()
        await self.cluster.stop()
        await self.cluster.leave()  # another replica leads at once, not a lease later
        try:
            await asyncio.wait_for(self._drains, self.config.shutdown_timeout_s)
        except asyncio.TimeoutError:
            error = RequestFailed(503, "the gateway stopped before this request could be served", retry_after=1.0)
            for model in self.served():
                model.runner.fail_pending(error)
        log.info("drained")

    async def cleanup(self, app: web.Application) -> None:
        await self.lag.stop()
        await self.traffic_log.stop()  # after the drain: every arrival counted
        await self.rollouts.stop()
        await self.shared.stop()
        await self.shared_drift.stop()
        await self.cluster.stop()
        await self.cluster.store.close()
        for task in list(self.starting.values()):
            task.cancel()
        await asyncio.gather(*(r.stop() for n, r in self.registries.items() if n not in self.models),
                             return_exceptions=True)  # fmt: skip
        served = list(self.served())
        loops = [loop for m in served for loop in (m.retune, m.keep_warm, m.plan, m.capture) if loop is not None]
        await asyncio.gather(*(loop.stop() for loop in loops), return_exceptions=True)
        await asyncio.gather(*(m.pool.stop() for m in served), return_exceptions=True)

    # -- helpers --------------------------------------------------------------

    def versions(self, request: web.Request) -> ModelVersions:
        name = request.match_info["model"]
        versions = self.models.get(name)
        if versions is None and name in self.starting:
            raise RequestFailed(503, f"model {name!r} is waiting for its first server to register", retry_after=1.0)
        if versions is None:
            raise web.HTTPNotFound(reason=f"unknown model {name!r}")
        return versions

    def model(self, request: web.Request) -> ServedModel:
        """The version that takes this request: the one its route or `X-Sluice-Version`
        header names, else one by the model's traffic weights."""
        versions = self.versions(request)
        pinned = request.match_info.get("version") or request.headers.get(VERSION_HEADER)
        model = versions.pick(pinned, request.headers, random.random())
        if model is not None:
            return model
        if pinned is None:
            raise RequestFailed(503, f"no version of model {versions.name!r} is serving", retry_after=1.0)
        failed = versions.failed.get(pinned)
        why = f": it failed to load ({failed.reason})" if failed else f" (serving: {', '.join(versions.versions()) or 'none'})"
        raise web.HTTPNotFound(reason=f"model {versions.name!r} version {pinned!r} is not loaded{why}")

    def deadline(self, request: web.Request, parameters: dict) -> float:
        """The request's deadline on the monotonic clock: its own timeout, capped by the server's."""
        timeout_s = self.config.request_timeout_s
        header = request.headers.get("X-Request-Timeout-Ms")
        given = parameters.get("timeout")
        try:
            if header is not None:
                given_ms = float(header)
                if not math.isfinite(given_ms):
                    raise ValueError
                timeout_s = min(timeout_s, given_ms / 1e3)
            if given is not None:
                if isinstance(given, bool) or not isinstance(given, int | float):
                    raise ValueError
                timeout_s = min(timeout_s, given / 1e6)  # the protocol's timeout is in microseconds
        except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
            raise ProtocolError("timeout must be a number (parameters.timeout in us, X-Request-Timeout-Ms in ms)") from None
        if timeout_s <= 0:
            raise ProtocolError("timeout must be positive")
        return time.monotonic() + timeout_s

    def screen(self, model: ServedModel, request: web.Request) -> None:
        """Refuse at once, before the body is read, what admission would refuse anyway."""
        model.runner.screen(self.deadline(request, {}), self.slo_s(model), edge_s=self.lag.edge_s)

    @staticmethod
    def slo_s(model: ServedModel) -> float | None:
        return model.config.slo_ms / 1e3 if model.config.slo_ms is not None else None

    async def serve(
        self, model: ServedModel, request: web.Request, inputs: dict, rows: int, deadline: float, priority: int = 0
    ) -> dict:
        """Queue one request and wait for its outputs, at most until its deadline. Admission
        weighs it against its deadline, and against the model's SLO when that is sooner: a
        request the client gave no deadline is still refused if the backlog would make it
        wait past the SLO."""
        if model.retired:  # unloaded while its body was read: another version takes it, unless it named this one
            pinned = request.match_info.get("version") or request.headers.get(VERSION_HEADER)
            if pinned is not None:
                raise RequestFailed(503, f"model {model.name!r} version {model.version!r} is being unloaded", retry_after=1.0)
            model = self.model(request)
            request["served"] = model
        future = model.runner.submit(
            request["request_id"], inputs, rows, deadline, priority=priority, slo_s=self.slo_s(model), edge_s=self.lag.edge_s
        )
        timer = asyncio.get_running_loop().call_later(deadline - time.monotonic(), _expire, future)
        try:
            return await future
        finally:
            timer.cancel()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(RequestFailed(504, "deadline exceeded before the batch was answered"))


GATEWAY = web.AppKey("gateway", Gateway)


@web.middleware
async def _edge(request: web.Request, handler) -> web.StreamResponse:
    """Request ids, errors as `{"error": ...}`, per-request metrics and the access log."""
    gateway = request.app[GATEWAY]
    started = time.perf_counter()
    given = request.headers.get("X-Request-Id")
    request_id = given if given and _REQUEST_ID.match(given) else f"{_ID_PREFIX}-{next(_ID_COUNTER)}"
    request["request_id"] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = error_response(exc.status, exc.reason or exc.text or "error")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except ProtocolError as exc:
        response = error_response(400, str(exc))
    except RequestFailed as exc:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else None
        response = error_response(exc.status, str(exc), headers)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        response = error_response(500, "internal error")
    response.headers["X-Request-Id"] = request_id
    if gateway.draining:
        response.force_close()  # a client on keep-alive learns to go elsewhere, not by a reset
    elapsed = time.perf_counter() - started
    served: ServedModel | None = request.get("served")
    if served is not None:
        response.headers[VERSION_HEADER] = served.version
        served.outcomes.record(time.monotonic(), response.status, elapsed)
        counted = served.runner.metrics
        counted.requests(response.status).inc()
        if response.status == 200:
            counted.latency.observe(elapsed)
        if served.capture is not None:  # here: every request's final status and latency, and the answer as sent
            served.capture.offer(request_id, response.status, elapsed, request.get("inputs"), request.get("outputs"),
                                 response.body if response.status >= 400 else None)  # fmt: skip
    if gateway.config.access_log:
        access.info(
            "request",
            extra={
                "request_id": request_id, "method": request.method, "path": request.path,
                "status": response.status, "ms": round(elapsed * 1e3, 3),
                "model": served.name if served else None, "version": served.version if served else None,
            },
        )  # fmt: skip
    return response


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await request.read()


async def infer_v2(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    model = gateway.model(request)
    request["served"] = model
    gateway.screen(model, request)
    body = await _body(request, gateway.config.max_body_bytes)
    header = request.headers.get(HEADER_LENGTH)
    try:
        header_length = int(header) if header is not None else None
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer") from None
    parsed = decode_request(body, header_length)
    rows = validate_inputs(model.metadata, parsed.inputs, _MAX_ELEMENTS)
    request["inputs"] = parsed.inputs  # for capture
    check_outputs(model.metadata, parsed.outputs)
    deadline = gateway.deadline(request, parsed.parameters)
    priority = _priority(parsed.parameters)
    copy = gateway.shadowing.copy(model, request["request_id"], parsed.inputs, rows, deadline)
    if copy is None:
        outputs = await gateway.serve(model, request, parsed.inputs, rows, deadline, priority)
    else:
        answered = asyncio.ensure_future(gateway.serve(model, request, parsed.inputs, rows, deadline, priority))
        gateway.shadowing.compare_later(model, copy, answered)
        outputs = await answered
    if parsed.outputs is not None:
        outputs = {name: outputs[name] for name in parsed.outputs}
    request["outputs"] = outputs
    binary = True if parsed.binary_default and parsed.outputs is None else parsed.binary_outputs
    payload, length = encode_response(model.name, model.version, outputs, parsed.id, binary)
    if length is None:
        return web.Response(body=payload, content_type="application/json")
    return web.Response(body=payload, content_type="application/octet-stream", headers={HEADER_LENGTH: str(length)})


def _priority(parameters: dict) -> int:
    """`parameters.priority`: an integer, higher first (0 when absent)."""
    given = parameters.get("priority", 0)
    if isinstance(given, bool) or not isinstance(given, int) or not -(2**31) <= given < 2**31:
        raise ProtocolError("parameters.priority must be an integer (higher is served first)")
    return given


async def predict_v1(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    model = gateway.model(request)
    request["served"] = model
    gateway.screen(model, request)
    inputs = decode_v1(model.metadata, await _body(request, gateway.config.max_body_bytes))
    rows = validate_inputs(model.metadata, inputs, _MAX_ELEMENTS)
    request["inputs"] = inputs  # for capture
    outputs = await gateway.serve(model, request, inputs, rows, gateway.deadline(request, {}))
    request["outputs"] = outputs
    return web.Response(body=encode_v1(outputs), content_type="application/json")


def create_app(config: GatewayConfig) -> web.Application:
    gateway = Gateway(config)
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_edge])
    app[GATEWAY] = gateway
    app.on_startup.append(gateway.startup)
    app.on_shutdown.append(gateway.shutdown)
    app.on_cleanup.append(gateway.cleanup)
    r = app.router
    # aiohttp matches routes in order: the hot ones first.
    r.add_post("/v2/models/{model}/infer", infer_v2)
    r.add_post("/v1/models/{model:[^/:]+}:predict", predict_v1)
    r.add_post("/v2/models/{model}/versions/{version}/infer", infer_v2)
    health.add_routes(app, gateway, VERSION)
    admin.add_routes(app, gateway)
    model_control.add_routes(app, gateway)
    rollout_loop.add_routes(app, gateway)
    return app
