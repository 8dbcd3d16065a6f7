"""What the gateway says about itself and its models: health, metadata, readiness, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .runner import RequestFailed

if TYPE_CHECKING:
    from .app import Gateway


def add_routes(app: web.Application, gateway: Gateway, version: str) -> None:
    """`version`: the gateway's own, for the server metadata."""

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        ok = (not gateway.draining and not gateway.starting and bool(gateway.models)
              and all(v.ready for v in gateway.models.values()))  # fmt: skip
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def server_metadata(request: web.Request) -> web.Response:
        return web.json_response({"name": "sluice", "version": version, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: web.Request) -> web.Response:
        """A version's metadata; the model's (no version named) lists every version serving."""
        if "version" in request.match_info:
            return web.json_response(gateway.model(request).metadata.to_json())
        versions = gateway.versions(request)
        serving = versions.versions()
        if not serving:
            raise RequestFailed(503, f"no version of model {versions.name!r} is serving", retry_after=1.0)
        doc = versions.served[serving[0]].metadata.to_json()
        doc["versions"] = serving
        return web.json_response(doc)

    async def model_ready(request: web.Request) -> web.Response:
        if "version" in request.match_info:
            model = gateway.model(request)
            name, ok = model.name, model.ready
        else:
            versions = gateway.versions(request)
            name, ok = versions.name, versions.ready
        ok = ok and not gateway.draining
        return web.json_response({"name": name, "ready": ok}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=gateway.metrics.render(), headers={"Content-Type": gateway.metrics.content_type})

    r = app.router
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    r.add_get("/v2", server_metadata)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        r.add_get(prefix, model_metadata)
        r.add_get(prefix + "/ready", model_ready)
    r.add_get("/v1/models/{model}", model_ready)
    r.add_get("/metrics", metrics)
