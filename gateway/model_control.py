"""Loading and unloading model versions while the gateway serves: the repository extension.

    POST /v2/repository/index                  [{"name", "version", "state", "reason"}]
    POST /v2/repository/models/{model}/load    load the versions not serving yet
    POST /v2/repository/models/{model}/unload  {"parameters": {"version": "1"}} for one, else all
    GET, PUT /admin/models/{model}/traffic      weights, sticky_header, shadow (`gateway.traffic`)
    GET /admin/status                           every model at a glance (`sluice status`)
    GET /admin/models/{model}/drift             the last window's drift scores, per version and feature

all behind the admin token, as Triton serves them (its states: READY, LOADING,
UNLOADING, UNAVAILABLE). Loading starts a version's pool, measures it as at startup,
and only then gives it a place among the model's versions: no request ever waits on a
version that is starting. Unloading takes the version out of routing first, then
answers everything it holds (its batches close at once), then stops its loops and
its pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .admin import _authorized, _json_body
from .codec import error_response
from .config import ConfigError, ModelConfig
from .repository import ModelRepository, RepositoryModel
from .served import make_pool, registry_of, start_model
from .versions import version_order

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("sluice.gateway")


class ModelControl:
    """The gateway's loads and unloads, one at a time per model."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = gateway.config
        self.repository = ModelRepository(config.model_repository, config.model_defaults) if config.model_repository else None
        self.loading: dict[str, set[str]] = {}  # model -> versions starting
        self.unloading: dict[str, set[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def read(self, name: str) -> RepositoryModel:
        """What `name` has to serve: its repository directory, or its [models] table."""
        if self.repository is not None and (self.repository.root / name).is_dir():
            return self.repository.read(name)
        config = self.gateway.config.models.get(name)
        if config is None:
            raise ConfigError(f"unknown model {name!r}: not in [models] nor in the model repository")
        return RepositoryModel(name, {config.version: config})

    def names(self) -> list[str]:
        return sorted(set(self.gateway.config.models) | set(self.repository.names() if self.repository else ()))

    async def load(self, name: str) -> RepositoryModel:
        """Start every version of `name` that does not serve yet; the failures stay listed with their reasons."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            found = self.read(name)
            versions = self.gateway.versions_of(name)
            for version, reason in found.failed.items():
                versions.fail(version, reason)
            wanted = [v for v in sorted(found.configs, key=version_order) if v not in versions.served]
            self.loading[name] = set(wanted)
            try:
                for version in wanted:
                    await self._start(found.configs[version], found)
            finally:
                self.loading.pop(name, None)
            if found.traffic and versions.served:
                try:
                    versions.set_traffic({k: (dict(v) if isinstance(v, dict) else v) for k, v in found.traffic.items()})
                except ValueError as exc:  # the versions it names did not all load: the weights stand as they were
                    log.warning("traffic settings not applied", extra={"model": name, "error": str(exc)})
            return found

    async def _start(self, config: ModelConfig, found: RepositoryModel) -> None:
        versions = self.gateway.versions_of(config.name)
        try:
            pool = make_pool(config, self.gateway.metrics.for_model(config.name, config.version))
            await pool.start()
            if registry_of(pool) is not None:
                await pool.stop()
                raise ConfigError("registered servers are configured in [models], not in a model repository")
            served = await start_model(config, self.gateway.metrics, pool)
        except Exception as exc:  # the version never gets traffic; the others serve on
            log.warning("version failed to load", extra={"model": config.name, "version": config.version, "error": str(exc)})
            found.failed[config.version] = str(exc)
            versions.fail(config.version, str(exc))
            return
        self.gateway.serving(served)
        log.info("version loaded", extra={"model": config.name, "version": config.version,
                                          "weight": versions.weights.get(config.version)})  # fmt: skip

    async def unload(self, name: str, version: str | None = None) -> list[str]:
        """Take versions out of routing, answer what they hold, stop them. Returns the versions unloaded."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions = self.gateway.versions_of(name)
            chosen = [version] if version is not None else versions.versions()
            retired = [m for m in (versions.remove(v) for v in chosen) if m is not None]
            self.unloading[name] = {m.version for m in retired}
            try:
                await asyncio.gather(*(self.gateway.retire(m) for m in retired))
            finally:
                self.unloading.pop(name, None)
            if not versions.served and not versions.failed:
                self.gateway.models.pop(name, None)
            for m in retired:
                log.info("version unloaded", extra={"model": name, "version": m.version})
            return [m.version for m in retired]

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every version of every model the gateway knows, with its state, as Triton lists them."""
        rows: list[dict[str, str]] = []
        for name in self.names():
            versions = self.gateway.models.get(name)
            try:
                found = self.read(name)
                known = set(found.configs) | set(found.failed)
            except ConfigError:
                found, known = None, set()
            if versions is not None:
                known |= set(versions.served) | set(versions.failed)
            known |= self.loading.get(name, set()) | self.unloading.get(name, set())
            for version in sorted(known, key=version_order):
                state, reason = self._state(name, version, versions, found)
                if not ready_only or state == "READY":
                    rows.append({"name": name, "version": version, "state": state, "reason": reason})
        return rows

    def _state(self, name: str, version: str, versions: Any, found: RepositoryModel | None) -> tuple[str, str]:
        if version in self.unloading.get(name, ()):
            return "UNLOADING", ""
        if version in self.loading.get(name, ()):
            return "LOADING", ""
        if versions is not None and version in versions.served:
            return "READY", ""
        if versions is not None and version in versions.failed:
            return "UNAVAILABLE", versions.failed[version].reason
        if found is not None and version in found.failed:
            return "UNAVAILABLE", found.failed[version]
        return "UNAVAILABLE", "unloaded"


def add_routes(app: web.Application, gateway: Gateway) -> None:
    control = gateway.control

    def guarded(handler):
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = _authorized(gateway.config.admin_token, request)
            if refused is not None:
                return refused
            try:
                return await handler(request, await _json_body(request))
            except ConfigError as exc:
                return error_response(404 if "unknown model" in str(exc) or "is not in the" in str(exc) else 400, str(exc))
            except ValueError as exc:
                return error_response(400, str(exc))

        return checked

    @guarded
    async def index(request: web.Request, body: dict) -> web.Response:
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise ValueError("ready must be true or false")
        return web.json_response(control.index(ready_only=ready))

    @guarded
    async def load(request: web.Request, body: dict) -> web.Response:
        name = request.match_info["model"]
        if gateway.draining:
            return error_response(503, "the gateway is shutting down", {"Retry-After": "1"})
        found = await control.load(name)
        versions = gateway.versions_of(name)
        doc = {"name": name, "versions": versions.versions(), "weights": versions.weights,
               "failed": {v: versions.failed[v].reason for v in found.failed if v in versions.failed}}  # fmt: skip
        if doc["failed"]:
            failures = "; ".join(f"version {v}: {why}" for v, why in doc["failed"].items())
            return error_response(400, f"failed to load model {name!r}: {failures}")
        return web.json_response(doc)

    @guarded
    async def unload(request: web.Request, body: dict) -> web.Response:
        name = request.match_info["model"]
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ValueError("parameters must be an object")
        version = parameters.get("version")
        if version is not None and not isinstance(version, str):
            raise ValueError("parameters.version must be a string")
        versions = gateway.models.get(name)
        if versions is None or (version is not None and version not in versions.served):
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            return error_response(404, f"{what} is not loaded")
        unloaded = await control.unload(name, version)
        return web.json_response({"name": name, "unloaded": unloaded})

    def known(name: str):
        versions = gateway.models.get(name)
        if versions is None:
            raise ConfigError(f"unknown model {name!r}")
        return versions

    @guarded
    async def traffic(request: web.Request, body: dict) -> web.Response:
        versions = known(request.match_info["model"])
        if request.method == "PUT":
            policy = versions.set_traffic(body)
            await gateway.shared.publish(versions.name, policy)  # every replica takes it
            log.info("traffic changed", extra={"model": versions.name, **policy.to_json()})
        return web.json_response({"model": versions.name, "versions": versions.versions(), **versions.traffic.to_json(),
                                  "shadow_comparison": versions.shadow_stats.to_json()})  # fmt: skip

    @guarded
    async def status(request: web.Request, body: dict) -> web.Response:
        return web.json_response(status_of(gateway, time.monotonic()))

    @guarded
    async def drift(request: web.Request, body: dict) -> web.Response:
        versions = known(request.match_info["model"])
        watched = [m.drift.to_json() for m in versions if m.drift is not None]
        if not watched:
            return error_response(404, f"model {versions.name!r} has no [drift] settings")
        return web.json_response({"model": versions.name, "versions": watched})

    app.router.add_get("/admin/status", status)
    app.router.add_get("/admin/models/{model}/drift", drift)
    app.router.add_get("/admin/models/{model}/traffic", traffic)
    app.router.add_put("/admin/models/{model}/traffic", traffic)
    app.router.add_post("/v2/repository/index", index)
    app.router.add_post("/v2/repository/models/{model}/load", load)
    app.router.add_post("/v2/repository/models/{model}/unload", unload)



def status_of(gateway: Gateway, now: float, window_s: float = 60.0) -> dict[str, Any]:
    """Per model: its versions (weight, B and T in force, the last minute's answers and latency
    at the SLO percentile), the traffic policy, the shadow's comparison, the rollout."""
    models = []
    for name in sorted(gateway.models):
        versions = gateway.models[name]
        rows = []
        for version in versions.versions():
            served = versions.served[version]
            limits = served.runner.core.policy.limits(now)
            recent = served.outcomes.since(now - window_s)
            percentile = served.config.percentile / 100.0
            rows.append({"version": version, "weight": versions.weights.get(version, 0.0), "ready": served.ready,
                         "batch_size": limits.max_size, "timeout_ms": round(limits.max_wait * 1e3, 3),
                         "slo_ms": served.config.slo_ms, "percentile": served.config.percentile,
                         **recent.summary(percentile)})  # fmt: skip
        loop = gateway.rollouts.loops.get(name)
        rollout = None
        if loop is not None:
            r = loop.rollout
            rollout = {"version": r.candidate, "stable": r.stable, "state": r.state, "step": r.step, "weight": r.weight,
                       "last_decision": r.history[-1]["decision"] if r.history else "start"}  # fmt: skip
        models.append({"name": name, "versions": rows, "failed": {v: f.reason for v, f in versions.failed.items()},
                       "traffic": versions.traffic.to_json(), "shadow": versions.shadow_stats.to_json()
                       if versions.traffic.shadow else None, "rollout": rollout})  # fmt: skip
    return {"window_s": window_s, "models": models}
