"""`sluice worker`: one process, one ONNX model, Open Inference Protocol infer for whole batches.

The worker runs each batch inline on its event loop: the gateway gives it one
batch at a time, so there is nothing to overlap, and a thread hop would only add
latency. When started with `--port 0` it binds a free port and prints one JSON
line `{"event": "ready", "port": P}` on stdout once it serves, which is how a
local pool learns where it is without racing for ports.

With `--register GATEWAY_URL` it joins the pool of a gateway model configured with
`registered = true` instead, renews its lease every third of `--lease-s`, and leaves
(the gateway finishes its batches first) when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from aiohttp import web

from .. import aio
from .membership import Membership
from ..oip import HEADER_LENGTH, ProtocolError, decode_request, encode_response
from .onnx_model import OnnxModel

log = logging.getLogger("sluice.worker")


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(model: OnnxModel, max_body_bytes: int = 64 << 20) -> web.Application:
    name = model.metadata.name
    meta = model.metadata.to_json()
    app = web.Application(client_max_size=max_body_bytes)

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def metadata(request: web.Request) -> web.Response:
        if request.match_info["model"] != name:
            return _json_error(404, f"unknown model {request.match_info['model']!r}")
        return web.json_response(meta)

    async def infer(request: web.Request) -> web.Response:
        if request.match_info["model"] != name:
            return _json_error(404, f"unknown model {request.match_info['model']!r}")
        body = await request.read()
        try:
            header = request.headers.get(HEADER_LENGTH)
            parsed = decode_request(body, int(header) if header is not None else None)
            model.validate(parsed.inputs)
            outputs = model.run(parsed.inputs, parsed.outputs)
        except (ProtocolError, ValueError) as exc:
            return _json_error(400, str(exc))
        except Exception as exc:  # onnxruntime failures: the batch fails, the worker lives on
            log.exception("inference failed")
            return _json_error(500, f"inference failed: {exc}")
        binary = True if parsed.binary_default and parsed.outputs is None else parsed.binary_outputs
        payload, header_length = encode_response(name, "1", outputs, parsed.id, binary)
        if header_length is None:
            return web.Response(body=payload, content_type="application/json")
        return web.Response(
            body=payload, content_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)}
        )

    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(prefix, metadata)
        app.router.add_get(prefix + "/ready", ready)
        app.router.add_post(prefix + "/infer", infer)
    return app


async def _watch_parent(parent: int) -> None:
    """Exit when the process that started us is gone, so no worker outlives its gateway."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("parent %d exited; worker stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


async def serve(args: argparse.Namespace) -> None:
    model = OnnxModel(args.model, args.name or os.path.splitext(os.path.basename(args.model))[0], args.threads)
    runner = web.AppRunner(make_app(model), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"event": "ready", "port": port, "model": model.metadata.name}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watch_parent(args.parent_pid)) if args.parent_pid else None
    membership = None
    if args.register:
        advertise = args.advertise or f"http://{args.host}:{port}"
        membership = Membership(args.register, args.register_as or model.metadata.name, advertise,
                                args.token or os.environ.get("SLUICE_ADMIN_TOKEN", ""), args.lease_s)  # fmt: skip
        await membership.start()
    await stop.wait()
    if watchdog:
        watchdog.cancel()
    if membership is not None:
        await membership.leave()  # the gateway stops sending batches, then we stop serving
    await runner.cleanup()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="path of the .onnx file")
    parser.add_argument("--name", help="model name to serve it under (default: the file's stem)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port and prints it")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    parser.add_argument("--register", metavar="GATEWAY_URL", help="join the pool of a gateway model with registered = true")
    parser.add_argument("--register-as", metavar="MODEL", help="the gateway's model name (default: --name)")
    parser.add_argument("--advertise", metavar="URL", help="the URL the gateway reaches this worker at (default: http://HOST:PORT)")
    parser.add_argument("--token", help="the gateway's admin token (default: $SLUICE_ADMIN_TOKEN)")
    parser.add_argument("--lease-s", type=float, default=15.0, help="registration lease; renewed every third of it")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sluice worker", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s worker %(levelname)s %(message)s")
    aio.run(serve(args))

