"""The `sluice` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from importlib import import_module

from . import config as config_mod

# Each subcommand's module (and what it imports) loads only when that subcommand runs or
# --help lists them all: `sluice sim` does not import the server, boto3 or scipy.
SUBCOMMANDS = {
    "worker": ("backends.worker.server", "serve one ONNX model for whole batches (used by local pools)"),
    "sim": ("sim.cli", "what-if: batching latency and cost on a trace, at virtual time"),
    "tune": ("sim.tune", "choose batch size, timeout and memory for an SLO at the lowest cost"),
    "faas-emulator": ("backends.faas_emulator.cli", "a local AWS Lambda Invoke API running ONNX functions"),
    "profile": ("gateway.profile_cmd", "measure a backend's batch times; write a service profile"),
    "status": ("gateway.status_cmd", "a running gateway's models at a glance: versions, traffic, rollouts"),
    "reference": ("gateway.reference_cmd", "write a drift reference (sketches) from a model and its training data"),
    "capture": ("gateway.capture_cmd", "read captured requests back: `sluice capture read PATH` writes an .npz"),
}


def _pairs(values: list[str] | None, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values or []:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise config_mod.ConfigError(f"{flag} takes NAME=VALUE, got {value!r}")
        pairs.append((name, target))
    return pairs


def _serve_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Only what the user gave, so that the config file fills in the rest."""
    flags: dict[str, Any] = {}
    for key in ("host", "port", "max_body_bytes", "request_timeout_s", "log_level", "model_repository"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    if args.no_access_log:
        flags["access_log"] = False
    for key in ("workers", "threads", "batch_size", "timeout_ms", "policy", "slo_ms", "percentile", "scheduler"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    models: dict[str, dict[str, Any]] = {}
    for name, path in _pairs(args.model, "--model"):
        models[name] = {"path": path}
    for name, url in _pairs(args.upstream, "--upstream"):
        models.setdefault(name, {"upstream": []})["upstream"].append(url)
    for name in args.registered or []:
        models[name] = {"registered": True}
    if models:
        flags["models"] = models
    state = {key: getattr(args, flag) for key, flag in (("url", "state"), ("replica", "replica_id"))
             if getattr(args, flag) is not None}  # fmt: skip
    if state:
        flags["state"] = state
    return flags


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gateway", description="Run the gateway. With no model given, serves the demo model.")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--model", action="append", metavar="NAME=PATH.onnx", help="serve an ONNX file from local workers (repeatable)")
    p.add_argument("--upstream", action="append", metavar="NAME=URL", help="serve a model from an Open Inference Protocol server (repeatable)")
    p.add_argument("--model-repository", metavar="DIR",
                   help="serve every model of a repository in Triton's layout, DIR/<model>/<version>/model.onnx "
                        "(with DIR/<model>/sluice.toml for its settings); load and unload through /v2/repository")
    p.add_argument("--registered", action="append", metavar="NAME",
                   help="serve a model from servers that register themselves (`sluice worker --register`); "
                        "needs SLUICE_ADMIN_TOKEN (repeatable)")  # fmt: skip
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8000; 0 picks a free one)")
    p.add_argument("--workers", type=int, help="worker processes per local model (default: min(2, cores))")
    p.add_argument("--threads", type=int, help="onnxruntime threads per worker (default: cores / workers)")
    p.add_argument("--batch-size", type=int, help="largest batch, in rows (default 32)")
    p.add_argument("--timeout-ms", type=float, help="longest wait of a batch's oldest request (default 5)")
    p.add_argument("--policy", choices=config_mod.POLICIES, help="batching policy (default: adaptive with --slo-ms, else fixed)")
    p.add_argument("--slo-ms", type=float, help="latency SLO: batch size and timeout are re-tuned to meet it at --percentile")
    p.add_argument("--percentile", type=float, help="the SLO's percentile (default 99)")
    p.add_argument("--scheduler", metavar="NAME|MODULE:CLASS",
                   help="for models with servers and [faas]: hybrid (default), faas-only, pool-only, mark, fixed, or your own")
    p.add_argument("--state", metavar="redis://HOST:PORT/DB",
                   help="share arrivals, servers, the plan and FaaS concurrency with other replicas in Redis")
    p.add_argument("--replica-id", help="this replica's name in the shared state (default host:port:pid:random)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 8 MiB)")
    p.add_argument("--request-timeout-s", type=float, help="longest a request may take end to end (default 30)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")


def _adaptive_policy(args: argparse.Namespace, profile: Any) -> Any:
    """`sluice sim --policy adaptive`'s policy (the tuner, and scipy, load only for it)."""
    return import_module("sim.tune").adaptive_policy(args, profile)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice: an adaptive-batching inference gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    if chosen not in SUBCOMMANDS:  # serve, or none given (--help), or a typo: list them all
        _add_serve(sub)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if chosen == name or chosen not in SUBCOMMANDS:
            import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.command == "sim" and args.config:
        from . import simulated

        sys.exit(simulated.run(args))
    if args.command == "sim":
        sys.exit(import_module("sim.cli").run(args, policy_factory=_adaptive_policy))
    if args.command == "worker":
        import_module("backends.worker.server").run(args)
        return
    if args.command != "serve":
        sys.exit(import_module(SUBCOMMANDS[args.command][0]).run(args))
    from backends import aio
    from backends.worker.demo import demo_model_path

    from . import logs

    try:
        config = config_mod.load(args.config, _serve_flags(args), demo=lambda: str(demo_model_path()))
    except config_mod.ConfigError as exc:
        parser.exit(2, f"sluice serve: {exc}\n")
    logs.setup(config.log_level)
    try:
        aio.run(serve_main(config))
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # a model that could not start: say so plainly
        logging.getLogger("sluice.gateway").error("startup failed", extra={"error": str(exc)})
        parser.exit(1, f"sluice serve: {exc}\n")


async def serve_main(config: config_mod.GatewayConfig) -> None:
    from .server import serve

    await serve(config)


if __name__ == "__main__":
    sys.exit(main())
