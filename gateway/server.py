"""Run the gateway until SIGTERM or SIGINT, then stop gracefully.

The order matters: stop admitting (503 with Retry-After for anything new, open
batches closed at once) while still listening for `shutdown_grace_s`, so that a
request already on its way gets an answer and not a reset; then stop listening,
answer every queued and in-flight request, and stop the workers. aiohttp's runner
closes the socket and calls our hooks for the rest (see `gateway.app`).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import signal

from aiohttp import web

from .app import GATEWAY, create_app
from .config import GatewayConfig

log = logging.getLogger("sluice.gateway")

# A stop that overruns these says what it waits on, in the log (see `_report_slow_stop`).
SLOW_STOP_S = 5.0
SLOW_EXIT_S = 5.0


async def serve(config: GatewayConfig) -> None:
    app = create_app(config)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=config.shutdown_timeout_s + 5,
        # A client that disconnects cancels its handler, so its request leaves the queue
        # (`ModelRunner._abandoned`) instead of being served to nobody.
        handler_cancellation=True,
    )
    await runner.setup()  # starts the pools: workers are up before we listen
    # Move everything loaded so far out of the collector's sight: full collections
    # then scan only what requests allocate. Measured: about 12-17% less gateway
    # CPU per request at 3000 req/s (bench/sweep.py settings, paired runs).
    gc.collect()
    gc.freeze()
    watchdog: asyncio.Task | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        app[GATEWAY].lag.start()  # from now on: the stalls of starting up are not load
        host, port = runner.addresses[0][:2]
        log.info("serving", extra={"url": f"http://{host}:{port}", "port": port, "models": sorted(config.models)})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        watchdog = asyncio.create_task(_report_slow_stop(SLOW_STOP_S))
        app[GATEWAY].stop_admitting()
        await asyncio.sleep(config.shutdown_grace_s)
    finally:
        try:
            await runner.cleanup()
        finally:
            if watchdog is not None:
                watchdog.cancel()
    log.info("stopped")
    # Threads still running (a function invocation in flight) are joined at exit; if
    # that hangs, their stacks go to stderr, where the logs go.
    faulthandler.dump_traceback_later(SLOW_EXIT_S, exit=False)


async def _report_slow_stop(after_s: float) -> None:
    """Every `after_s` of a stop: a warning naming each task still running and the line it
    waits at, so that a stop that hangs can be read from the log alone."""
    while True:
        await asyncio.sleep(after_s)
        me = asyncio.current_task()
        waiting = sorted(_where(task) for task in asyncio.all_tasks() if task is not me)
        log.warning("stop is taking long", extra={"waiting_on": waiting})


def _where(task: asyncio.Task) -> str:
    """The chain of coroutines `task` is suspended in, outermost first."""
    steps, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        frame = coro.cr_frame
        if frame is not None:
            steps.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        coro = coro.cr_await
    return " > ".join(steps) or repr(task.get_coro())
