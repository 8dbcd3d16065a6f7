"""The HTTP routes: AWS Lambda's Invoke API (2015-03-31), plus /metrics and /health.

Everything a client can see follows the service: status codes, `x-amzn-ErrorType`,
the `X-Amz-*` response headers and the error bodies, so that boto3 (or any AWS SDK)
given `endpoint_url` needs no change.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import aws
from .config import PAYLOAD_LIMIT_BYTES
from .pool import FunctionPool, PoolStopped, Throttled

if TYPE_CHECKING:
    from .emulator import FaasEmulator

INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
LOG_TYPES = ("None", "Tail")


def function_name(path_value: str) -> str:
    """FunctionName may be a name, a partial ARN or a full ARN, with an optional `:qualifier`."""
    parts = path_value.split(":")
    if "function" in parts[:-1]:
        return parts[parts.index("function") + 1]
    return parts[0]


def _client_context(header: str | None) -> Any:
    """AWS passes base64 JSON; the handler sees it decoded as `context.client_context`."""
    if not header:
        return None
    try:
        return json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("Client context must be a valid Base64-encoded JSON object.") from None


def make_app(emulator: FaasEmulator) -> web.Application:
    app = web.Application(client_max_size=PAYLOAD_LIMIT_BYTES)

    async def invoke(request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        name = function_name(request.match_info["name"])
        pool = emulator.pools.get(name)
        if pool is None:
            return aws.not_found(name, request_id)
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        log_type = request.headers.get("X-Amz-Log-Type", "None")
        if invocation_type not in INVOCATION_TYPES:
            return aws.invalid_parameter(f"Unsupported invocation type {invocation_type!r}", request_id)
        if log_type not in LOG_TYPES:
            return aws.invalid_parameter(f"Unsupported log type {log_type!r}", request_id)
        if (request.content_length or 0) > PAYLOAD_LIMIT_BYTES:
            return aws.request_too_large(request_id)
        try:
            payload = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body without a length
            return aws.request_too_large(request_id)
        try:
            if payload:
                orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return aws.invalid_content(f"Could not parse request body into json: {exc}", request_id)
        try:
            client_context = _client_context(request.headers.get("X-Amz-Client-Context"))
        except ValueError as exc:
            return aws.invalid_content(str(exc), request_id)
        headers = {"x-amzn-RequestId": request_id}
        if invocation_type == "DryRun":
            return web.Response(status=204, headers=headers)
        if invocation_type == "Event":
            emulator.run_in_background(_invoke_event(pool, payload, request_id, client_context))
            return web.Response(status=202, headers=headers)
        try:
            result = await pool.invoke(payload, request_id, client_context)
        except Throttled:
            return aws.throttled(request_id)
        except PoolStopped:
            return aws.service_unavailable("The emulator is shutting down.", request_id)
        headers["X-Amz-Executed-Version"] = "$LATEST"
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        if log_type == "Tail":
            headers["X-Amz-Log-Result"] = aws.log_tail(result.log)
        return web.Response(body=result.payload, content_type="application/json", headers=headers)

    async def get_configuration(request: web.Request) -> web.Response:
        name = function_name(request.match_info["name"])
        pool = emulator.pools.get(name)
        if pool is None:
            return aws.not_found(name, str(uuid.uuid4()))
        return web.json_response(aws.configuration(pool.config))

    async def update_configuration(request: web.Request) -> web.Response:
        """UpdateFunctionConfiguration: memory, timeout and environment variables."""
        request_id = str(uuid.uuid4())
        name = function_name(request.match_info["name"])
        pool = emulator.pools.get(name)
        if pool is None:
            return aws.not_found(name, request_id)
        try:
            changes = await request.json()
            config = aws.updated(pool.config, changes)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return aws.invalid_parameter(str(exc), request_id)
        pool.reconfigure(config)
        return web.json_response(aws.configuration(config), headers={"x-amzn-RequestId": request_id})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=emulator.metrics.render(), headers={"Content-Type": emulator.metrics.content_type})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    app.router.add_get("/2015-03-31/functions/{name}/configuration", get_configuration)
    app.router.add_put("/2015-03-31/functions/{name}/configuration", update_configuration)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app


async def _invoke_event(pool: FunctionPool, payload: bytes, request_id: str, client_context: Any) -> None:
    """AWS queues an asynchronous invocation and runs it when concurrency allows; so do we."""
    try:
        await pool.invoke(payload, request_id, client_context, wait=True)
    except PoolStopped:
        pass
