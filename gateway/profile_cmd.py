"""`sluice profile`: measure a real backend and write the service profile `sluice sim` and `sluice tune` read.

- `--target worker --model PATH.onnx`: starts a local worker for the model (timing
  its startup too) and measures it through the same hop the gateway uses.
- `--target upstream --url URL --model-name NAME`: any Open Inference Protocol server.
- `--target faas --function NAME`: a Lambda function (or `sluice faas-emulator`, with
  `--endpoint-url`). The warm time per batch size is the function's own REPORT
  Duration (what is billed); the invocation overhead is the rest of the round trip;
  the cold start is measured by forcing new execution environments (a configuration
  update, as on AWS) and timing the first invocation. With `--memory-mb 1024,2048`
  each memory size is set in turn and measured.

- `--config FILE [--model NAME]`: every backend the config names for the model (its
  local workers, or its first upstream, and its function), with the config's prices,
  into one profile: what `sluice sim --config FILE` needs to simulate that model.

Batch times are measured as the gateway measures them (`backends.profiling`); the
result follows DESIGN.md's profile contract, with measured tables (`batch_ms`), and is
checked by the same parser `sluice sim` reads it with (`sim.profiles`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backends import AiohttpTransport, BackendError, HttpV2Backend, LocalWorkerPool
from backends.lambda_backend import InvocationReport, LambdaBackend
from backends.pool import new_session
from backends.profiling import measure_batch_times, synthetic_inputs
from sim.profiles import ServiceProfile

from .config import load as load_config
from .simulated import pick_model

TARGETS = ("worker", "faas", "upstream")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=TARGETS, help="what to measure (or --config)")
    parser.add_argument("--config", metavar="FILE", help="measure every backend of a model as `sluice serve --config FILE` runs it")
    parser.add_argument("--model", metavar="PATH.onnx|NAME", help="worker: the model to start a worker for; "
                        "with --config: the model's name in it (needed if it has several)")
    parser.add_argument("--threads", type=int, default=1, help="worker: onnxruntime threads (default 1)")
    parser.add_argument("--url", help="upstream: the server's base URL")
    parser.add_argument("--model-name", help="upstream: the model's name on the server")
    parser.add_argument("--function", help="faas: the function name")
    parser.add_argument("--endpoint-url", help="faas: e.g. http://127.0.0.1:9000 for sluice faas-emulator")
    parser.add_argument("--region", help="faas: AWS region (default: boto3's chain)")
    parser.add_argument("--memory-mb", help="faas: memory sizes to set and measure in turn, e.g. 1024,2048")
    parser.add_argument("--cold-starts", type=int, default=3, help="faas: cold starts to time (default 3)")
    parser.add_argument("--batch-sizes", help="comma-separated (default 1,2,4,8,16,32; with --config the gateway's 1,2,4,...,64)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per batch size (median; default 7)")
    parser.add_argument("--name", help="the profile's name (default: the model or function)")
    parser.add_argument("--price-per-hour", type=float, default=0.085, help="worker/upstream: instance price")
    parser.add_argument("--price-per-gb-s", type=float, default=0.0000166667, help="faas: price per GB-second")
    parser.add_argument("--price-per-request", type=float, default=0.0000002, help="faas: price per invocation")
    parser.add_argument("--output", metavar="FILE", help="write the profile here")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the profile) on stdout")


def _sizes(text: str, flag: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated whole numbers, got {text!r}") from None
    if not values or values[0] < 1:
        raise ValueError(f"{flag} must be positive whole numbers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    try:
        default = "1,2,4,8,16,32,64" if args.config else "1,2,4,8,16,32"
        sizes = _sizes(args.batch_sizes or default, "--batch-sizes")
        if len(sizes) < 2:
            raise ValueError("--batch-sizes needs at least two sizes (a profile's curve needs two points)")
        if args.repeats < 1 or args.cold_starts < 0:
            raise ValueError("--repeats must be at least 1 and --cold-starts not negative")
        if args.config:
            profile = asyncio.run(_measure_config(args, sizes))
            return _write(args, profile)
        if args.target is None:
            raise ValueError("give --target worker|upstream|faas, or --config FILE")
        needed = {"worker": ("model",), "upstream": ("url", "model_name"), "faas": ("function",)}[args.target]
        missing = [f"--{n.replace('_', '-')}" for n in needed if not getattr(args, n)]
        if missing:
            raise ValueError(f"--target {args.target} needs {' and '.join(missing)}")
        memories = _sizes(args.memory_mb, "--memory-mb") if args.memory_mb else []
        profile = asyncio.run(_measure(args, sizes, memories))
        return _write(args, profile)
    except (ValueError, OSError, RuntimeError, BackendError, ClientError, BotoCoreError) as exc:
        print(f"sluice profile: {exc}", file=sys.stderr)
        return 2


def _write(args: argparse.Namespace, profile: dict[str, Any]) -> int:
    ServiceProfile.from_dict(profile)  # what `sluice sim` will read: refuse to write what it cannot
    text = json.dumps(profile, indent=None if args.json else 2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    if args.json:
        print(text)
    elif not args.output:
        print(text)
    else:
        print(f"wrote {args.output}")
    return 0


async def _measure(args: argparse.Namespace, sizes: list[int], memories: list[int]) -> dict[str, Any]:
    if args.target == "faas":
        return await _measure_faas(args, sizes, memories)
    if args.target == "worker":
        pool = LocalWorkerPool(args.model, "profiled", 1, threads=args.threads)
        await pool.start()
        try:
            if not pool.instances or not pool.instances[0].healthy:
                raise RuntimeError(f"the worker for {args.model} did not start")
            startup_s = pool.startup_seconds[0] if pool.startup_seconds else 0.0
            batch_ms = await _warm_times(pool.instances[0].backend, sizes, args.repeats)
        finally:
            await pool.stop()
        name = args.name or args.model.rsplit("/", 1)[-1].removesuffix(".onnx")
    else:
        session = new_session()
        try:
            backend = HttpV2Backend(AiohttpTransport(args.url, session, 60.0), args.model_name, name=args.url)
            startup_s = 60.0  # an upstream's startup is not ours to see
            batch_ms = await _warm_times(backend, sizes, args.repeats)
        finally:
            await session.close()
        name = args.name or args.model_name
    iaas = {"batch_ms": batch_ms, "max_batch_size": max(sizes), "price_per_hour": args.price_per_hour,
            "startup_s": round(startup_s, 3)}  # fmt: skip
    return {"name": name, "iaas": iaas}


async def _warm_times(backend: Any, sizes: list[int], repeats: int) -> dict[str, float]:
    """Median ms per batch size through the backend, as the gateway measures s(b)."""
    measured = await measure_batch_times(backend, await backend.metadata(), sizes, repeats)
    return {str(size): round(seconds * 1e3, 4) for size, seconds in measured.items()}


async def _measure_config(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    """One profile for a model of a config: its servers ('iaas') and its function ('faas')."""
    config = load_config(args.config)
    model = pick_model(config, args.model)
    doc: dict[str, Any] = {"name": args.name or model.name}
    if model.path or model.upstream:
        servers = argparse.Namespace(
            **{**vars(args), "target": "worker" if model.path else "upstream", "model": model.path,
               "threads": model.worker_threads, "url": model.upstream[0] if model.upstream else None,
               "model_name": model.name, "price_per_hour": model.instance_price_per_hour},
        )  # fmt: skip
        doc["iaas"] = (await _measure(servers, sizes, []))["iaas"]
        del doc["iaas"]["max_batch_size"]  # the largest size measured, not a limit of the model's servers
    elif model.registered:
        print("sluice profile: registered servers are not known before they register; measure one with "
              "--target upstream --url URL", file=sys.stderr)  # fmt: skip
    if model.faas is not None:
        f = model.faas
        function = argparse.Namespace(
            **{**vars(args), "function": f.function, "endpoint_url": f.endpoint_url, "region": f.region,
               "price_per_gb_s": f.price_per_gb_s, "price_per_request": f.price_per_request},
        )  # fmt: skip
        doc["faas"] = (await _measure_faas(function, sizes, []))["faas"]
    if "iaas" not in doc and "faas" not in doc:
        raise ValueError(f"model {model.name!r}: nothing to measure")
    return doc


async def _measure_faas(args: argparse.Namespace, sizes: list[int], memories: list[int]) -> dict[str, Any]:
    reports: list[InvocationReport] = []
    backend = LambdaBackend(args.function, region=args.region, endpoint_url=args.endpoint_url, on_report=reports.append)
    loop = asyncio.get_running_loop()
    original = await loop.run_in_executor(None, lambda: backend.client.get_function_configuration(FunctionName=backend.function))
    try:
        metadata = await backend.metadata()
        curves: dict[str, dict[str, Any]] = {}
        overheads: list[float] = []
        colds: list[float] = []
        for memory in memories or [None]:
            if memory is not None:
                await _configure(backend, {"MemorySize": memory})
            current = memory or await _memory_of(backend)
            one = synthetic_inputs(metadata, 1)
            for _ in range(args.cold_starts):  # a new configuration retires every warm environment
                await _configure(backend, {"Environment": {"Variables": {"SLUICE_PROFILE_NONCE": uuid.uuid4().hex}}})
                reports.clear()
                await backend.infer(one)
                cold = reports[-1]
                if not cold.cold:
                    raise RuntimeError("a configuration update did not start a new environment: cannot time a cold start")
                warm_round_trips = []
                for _ in range(3):
                    reports.clear()
                    await backend.infer(one)
                    warm_round_trips.append(reports[-1].duration_s)
                colds.append(cold.duration_s - statistics.median(warm_round_trips))
            batch_ms = {}
            for size in sizes:
                inputs = synthetic_inputs(metadata, size)
                await backend.infer(inputs)
                inside, overhead = [], []
                for _ in range(args.repeats):
                    reports.clear()
                    await backend.infer(inputs)
                    report = reports[-1]
                    if report.report is None:
                        raise RuntimeError("the function sent no REPORT line in its log tail (LogType=Tail)")
                    inside.append(report.report.duration_ms)
                    overhead.append(report.duration_s * 1e3 - report.report.duration_ms)
                batch_ms[str(size)] = round(statistics.median(inside), 4)
                overheads.extend(overhead)
            curves[str(current)] = {"batch_ms": batch_ms}
    finally:
        try:  # leave the function as it was found
            await _configure(backend, {"MemorySize": original["MemorySize"],
                                       "Environment": {"Variables": original.get("Environment", {}).get("Variables", {})}},
                             merge=False)  # fmt: skip
        finally:
            await backend.close()
    return {
        "name": args.name or args.function,
        "faas": {
            "memory_mb": curves,
            "invoke_overhead_ms": round(statistics.median(overheads), 4),
            "cold_start_ms": round(statistics.median(colds) * 1e3, 3) if colds else 0.0,
            "price_per_gb_s": args.price_per_gb_s,
            "price_per_request": args.price_per_request,
        },
    }


async def _configure(backend: LambdaBackend, changes: dict[str, Any], merge: bool = True) -> None:
    """UpdateFunctionConfiguration (environment variables merged into the current ones
    unless `merge` is off), then wait until the function has taken it."""
    client = backend.client
    loop = asyncio.get_running_loop()
    if "Environment" in changes and merge:
        current = await loop.run_in_executor(None, lambda: client.get_function_configuration(FunctionName=backend.function))
        variables = {**current.get("Environment", {}).get("Variables", {}), **changes["Environment"]["Variables"]}
        changes = {**changes, "Environment": {"Variables": variables}}
    await loop.run_in_executor(None, lambda: client.update_function_configuration(FunctionName=backend.function, **changes))
    for _ in range(120):
        state = await loop.run_in_executor(None, lambda: client.get_function_configuration(FunctionName=backend.function))
        status = state.get("LastUpdateStatus", "Successful")
        if status == "Successful":
            return
        if status == "Failed":
            raise RuntimeError(f"function {backend.function} failed to update: {state.get('LastUpdateStatusReason', '')}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"function {backend.function} did not finish updating its configuration")


async def _memory_of(backend: LambdaBackend) -> int:
    loop = asyncio.get_running_loop()
    state = await loop.run_in_executor(None, lambda: backend.client.get_function_configuration(FunctionName=backend.function))
    return int(state["MemorySize"])
