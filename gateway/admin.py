"""The control endpoints, under `/admin`, each behind a bearer token.

Servers of a model with `registered = true` join its pool here and renew their lease
while they live (`sluice worker --register` does both):

    POST   /admin/models/{model}/instances   {"url": "http://10.0.0.7:8001", "ttl_s": 15}
    DELETE /admin/models/{model}/instances   {"url": "http://10.0.0.7:8001"}
    GET    /admin/models/{model}/instances

With no token configured (`[server] admin_token` or `SLUICE_ADMIN_TOKEN`) every
control endpoint refuses: nothing is open by default.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from .codec import error_response

_MAX_BODY = 16 << 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



def _authorized(token: str | None, request: web.Request) -> web.Response | None:
    """None when the request carries the token; else the response that refuses it."""
    if not token:
        return error_response(403, "control endpoints are disabled: set [server] admin_token or SLUICE_ADMIN_TOKEN")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return error_response(401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer realm="sluice"'})
    return None


async def _json_body(request: web.Request) -> dict:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise ValueError(f"body larger than {_MAX_BODY} bytes")
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise ValueError(f"body larger than {_MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def server_url(value: object) -> str:
    """An http(s) URL with a host, normalised (no trailing slash): how a member is known."""
    if not isinstance(value, str) or len(value) > 2048:
        raise ValueError("url must be a string")
    try:
        url = URL(value)
    except ValueError:
        raise ValueError(f"url {value!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ValueError(f"url {value!r} must be http(s)://host[:port][/path], without query or fragment")
    return str(url).rstrip("/")


def add_routes(app: web.Application, gateway) -> None:
    """`gateway`: the app's `Gateway` (its config, its registries of self-registering pools)."""

    def guarded(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = _authorized(gateway.config.admin_token, request)
            if refused is not None:
                return refused
            name = request.match_info["model"]
            if name not in gateway.registries:
                known = name in gateway.config.models
                why = "does not take registrations (set registered = true)" if known else "is unknown"
                return error_response(409 if known else 404, f"model {name!r} {why}")
            try:
                return await handler(request)
            except ValueError as exc:
                return error_response(400, str(exc))

        return checked

    @guarded
    async def register(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        body = await _json_body(request)
        url = server_url(body.get("url"))
        lease = gateway.config.models[name].lease_s
        ttl = body.get("ttl_s", lease)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
            raise ValueError("ttl_s must be a positive number of seconds")
        new = gateway.registries[name].register(url, float(ttl))
        granted = min(float(ttl), lease)
        await gateway.cluster.member_renewed(name, url, granted)  # so that every replica serves through it
        return web.json_response({"model": name, "url": url, "ttl_s": granted, "new": new}, status=201 if new else 200)

    @guarded
    async def deregister(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        body = await _json_body(request)
        url = server_url(body.get("url", request.query.get("url")))
        if not gateway.registries[name].deregister(url):
            return error_response(404, f"{url} is not a member of model {name!r}")
        await gateway.cluster.member_left(name, url)
        return web.json_response({"model": name, "url": url, "left": True})

    @guarded
    async def members(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        now = time.monotonic()
        listed = [
            {"url": url, "healthy": m.instance.healthy, "leaving": m.leaving, "inflight": m.instance.inflight,
             "expires_in_s": round(m.expires - now, 3)}
            for url, m in gateway.registries[name].members.items()
        ]  # fmt: skip
        return web.json_response({"model": name, "instances": listed})

    path = "/admin/models/{model}/instances"
    app.router.add_post(path, register)
    app.router.add_delete(path, deregister)
    app.router.add_get(path, members)
