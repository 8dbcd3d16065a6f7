"""`sluice faas-emulator`: serve ONNX functions through AWS Lambda's Invoke API on this machine.

With `--port 0` it binds a free port and prints one JSON line `{"event": "ready",
"port": P}` on stdout once it serves, as `sluice worker` does. `--handler NAME=FILE.py`
swaps a function's handler (default: backends/lambda_function/handler.py) for any
file defining `handler(event, context)`: the tests use it for a function that
sleeps, to hold concurrency without burning the machine's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from .. import aio
from .config import FunctionConfig
from .emulator import FaasEmulator

log = logging.getLogger("sluice.faas_emulator")
_PROG = "sluice faas-emulator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--function", action="append", required=True, metavar="NAME=PATH.onnx",
                        help="a function running this ONNX model (repeatable)")  # fmt: skip
    parser.add_argument("--handler", action="append", metavar="NAME=FILE.py",
                        help="run function NAME with this handler file instead of the ONNX batch handler")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port and prints it")
    parser.add_argument("--memory-mb", type=int, default=1024, help="memory size of every function: billed, and CPU in proportion (one vCPU at 1769 MB)")
    parser.add_argument("--max-concurrency", type=int, default=10, help="invocations in flight per function")
    parser.add_argument("--keep-alive-s", type=float, default=600.0, help="idle time before a warm environment goes")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="longest an invocation may run")
    parser.add_argument("--init-timeout-s", type=float, default=10.0, help="longest a cold start's init may take")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} takes NAME=PATH, got {value!r}")
        if name in pairs:
            raise ValueError(f"{flag} {name!r} given twice")
        pairs[name] = path
    return pairs


def function_configs(args: argparse.Namespace) -> list[FunctionConfig]:
    """The functions the flags describe; ValueError says which flag is wrong."""
    models = _pairs(args.function, "--function")
    handlers = _pairs(args.handler, "--handler")
    unknown = sorted(set(handlers) - set(models))
    if unknown:
        raise ValueError(f"--handler for {unknown}, which no --function declares")
    common = {
        "memory_mb": args.memory_mb, "max_concurrency": args.max_concurrency, "keep_alive_s": args.keep_alive_s,
        "timeout_s": args.timeout_s, "init_timeout_s": args.init_timeout_s,
    }  # fmt: skip
    configs = []
    for name, path in models.items():
        extra = {"handler_path": handlers[name]} if name in handlers else {}
        configs.append(FunctionConfig(name, path, **extra, **common))
    return configs


async def _watch_parent(parent: int) -> None:
    """Exit when the process that started us is gone, so no emulator outlives it."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("parent %d exited; faas emulator stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


async def serve(emulator: FaasEmulator, parent_pid: int = 0) -> None:
    """Serve until SIGINT or SIGTERM, then stop every environment."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await emulator.start()
    try:
        print(json.dumps({"event": "ready", "port": emulator.port}), flush=True)
        watchdog = asyncio.create_task(_watch_parent(parent_pid)) if parent_pid else None
        await stop.wait()
        if watchdog:
            watchdog.cancel()
    finally:
        await emulator.stop()


def run(args: argparse.Namespace) -> int:
    try:
        emulator = FaasEmulator(function_configs(args), args.host, args.port)
    except ValueError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s faas-emulator %(levelname)s %(message)s"
    )
    try:
        aio.run(serve(emulator, args.parent_pid))
    except OSError as exc:
        print(f"{_PROG}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
