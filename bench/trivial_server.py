"""Do-nothing aiohttp server used to measure the load generator's own ceiling.

It answers immediately, so any latency or throughput limit seen against it
belongs to the client side (plus the shared CPU), not to a real backend.
"""
from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

try:
    import uvloop
except ImportError:  # the stdlib loop is fine, just slower
    uvloop = None

OK_BODY = b'{"ok":true}'


async def echo(request: web.Request) -> web.Response:
    """Read the body so keep-alive stays valid, then reply with a tiny fixed JSON."""
    await request.read()
    return web.Response(body=OK_BODY, content_type="application/json")


async def ok(request: web.Request) -> web.Response:
    return web.Response(body=OK_BODY, content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/ok", ok)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()
    loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # No access log: formatting a log line per request would dominate the cost.
    # A deep backlog avoids dropped SYNs (1 s retransmits) when the client opens
    # hundreds of connections in a burst.
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None,
                print=None, loop=loop, backlog=2048)


if __name__ == "__main__":
    main()
