"""Configuration: built-in defaults < the TOML file (`--config`) < command-line flags.

```toml
[server]
host = "127.0.0.1"
port = 8000
max_body_bytes = 8388608
request_timeout_s = 30

[batching]            # defaults for every model
policy = "fixed"      # fixed | none
batch_size = 32
timeout_ms = 5.0
workers = 2

[models.demo]         # a local ONNX file, served by `workers` worker processes
path = "/models/demo.onnx"

[models.resnet]       # or any server that speaks the Open Inference Protocol
upstream = ["http://127.0.0.1:8001"]
batch_size = 8

[models.ranker]       # or servers that register themselves (`sluice worker --register URL`),
registered = true     # with [server] admin_token (or SLUICE_ADMIN_TOKEN) as their credential

[state]               # several replicas: share arrivals, membership, the plan and the
url = "redis://10.0.0.5:6379/0"   # function's concurrency in Redis (default: in memory)

[models.bert.faas]    # or a serverless function: every batch is one invocation
function = "bert-batch"
region = "us-east-1"  # endpoint_url = "http://127.0.0.1:9000" for `sluice faas-emulator`
memory_mb = 2048
concurrency = 20
```
A flag such as `--batch-size` applies to every model and wins over the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from scheduler import Prices
from scheduler.prior import WEIGHT_S as PRIOR_WEIGHT_S
from sim.sources import read_trace

from .capture.settings import CaptureConfig
from .drift_watch import DriftConfig

POLICIES = ("fixed", "none", "adaptive")


class ConfigError(ValueError):
    pass


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class FaasConfig:
    """A model's serverless function (AWS Lambda, or anything speaking its Invoke API).
    Region, endpoint and credentials not given here come from boto3's usual chain."""

    function: str
    region: str | None = None
    endpoint_url: str | None = None
    qualifier: str | None = None
    memory_mb: int = 1024  # what the function is configured with: the bill is per GB-second
    concurrency: int = 10  # batches in flight at once: the function's limit, or this gateway's share
    timeout_s: float = 60.0
    price_per_gb_s: float = 0.0000166667  # AWS Lambda, x86, us-east-1
    price_per_request: float = 0.0000002
    keep_warm: bool = False  # ping environments warm when the idle-time histogram expects a batch
    keep_alive_s: float = 600.0  # how long the provider keeps an idle environment (AWS: unpublished, minutes)
    cold_start_ms: float = 1000.0  # what a cold environment adds, as the scheduler expects it
    overhead_ms: float = 0.0  # what an invocation adds beyond the measured s(b) (the measure includes the round trip)

    def check(self, model: str) -> None:
        if not self.function:
            raise ConfigError(f"model {model!r}: [faas] needs a function name")
        if self.cold_start_ms < 0 or self.overhead_ms < 0:
            raise ConfigError(f"model {model!r}: [faas] cold_start_ms and overhead_ms must not be negative")
        if self.memory_mb < 128 or self.concurrency < 1 or self.timeout_s <= 0 or self.keep_alive_s <= 0:
            raise ConfigError(
                f"model {model!r}: [faas] memory_mb >= 128, concurrency >= 1, timeout_s > 0 and keep_alive_s > 0"
            )
        if self.price_per_gb_s < 0 or self.price_per_request < 0:
            raise ConfigError(f"model {model!r}: [faas] prices must not be negative")
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(f"model {model!r}: [faas] endpoint_url {self.endpoint_url!r} is not an http(s) URL")

    @property
    def prices(self) -> Prices:
        return Prices(faas_per_gb_s=self.price_per_gb_s, faas_per_request=self.price_per_request, faas_memory_mb=self.memory_mb)

    def batch_cost(self, billed_ms: float) -> float:
        """One invocation's bill (`Prices.faas_bill`, the one formula)."""
        return self.prices.faas_bill(billed_ms)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str = "1"  # of a model repository's version directory; "1" for a model in [models]
    path: str | None = None
    upstream: tuple[str, ...] = ()
    policy: str = "fixed"  # fixed | none | adaptive (the default when an SLO is given)
    slo_ms: float | None = None  # the latency SLO the adaptive policy meets at the percentile
    percentile: float = 99.0
    batch_size: int = 32
    timeout_ms: float = 5.0
    workers: int = field(default_factory=_default_workers)
    threads: int = 0  # onnxruntime threads per worker; 0: cores / workers
    upstream_binary: bool = False  # send the binary tensor extension upstream
    upstream_max_inflight: int = 4
    backend_timeout_s: float = 30.0
    max_attempts: int = 3
    max_pending: int = 4096  # requests admitted and not yet answered; more are refused with 429
    unavailable_grace_s: float = 5.0  # with no healthy instance, how long batches wait before a 503
    registered: bool = False  # servers join by themselves: POST /admin/models/{name}/instances
    lease_s: float = 30.0  # the longest a registration lasts without renewal
    faas: FaasConfig | None = None  # alone: every batch goes to the function; with a server pool: a hybrid
    drift: DriftConfig | None = None  # [models.<name>.drift]: watch inputs and outputs against a reference
    capture: CaptureConfig | None = None  # [models.<name>.capture]: sampled requests to files or S3
    # With both a server pool and [faas]: who places batches and sizes the pool.
    scheduler: str = "hybrid"  # hybrid | faas-only | pool-only[:T] | mark[:H] | fixed[:N] | module:Class
    max_workers: int = 8
    instance_price_per_hour: float = 0.085  # what one worker's machine costs (for the scheduler)
    instance_min_billed_s: float = 60.0
    plan_interval_s: float = 10.0  # the hybrid scheduler's planning period
    scale_in_after_s: float = 60.0  # fewer workers must have been enough this long before any stop
    # Recorded arrivals (a trace file, as `sluice sim --trace` reads) for the hybrid planner to start
    # from, read in step from its first plan (with date-times: from the time of day the gateway
    # starts at): its first pool, and what comes next for its fixed count (`scheduler.prior`).
    prior_trace: str | None = None
    prior_weight_s: float = PRIOR_WEIGHT_S  # how many seconds of the record ahead of each plan weigh in its fixed count
    # A directory where the gateway logs the model's arrivals per second, a file per UTC day
    # (`gateway.traffic_log`); without a prior_trace, the hybrid planner reads it as its prior.
    traffic_log: str | None = None

    def check(self) -> None:
        servers = bool(self.path) + bool(self.upstream) + self.registered
        if servers > 1 or (servers == 0 and self.faas is None):
            raise ConfigError(
                f"model {self.name!r}: give one server pool ('path' to an ONNX file, 'upstream' URLs or"
                " 'registered = true'), a [faas] table, or one server pool and [faas] together (placed by the scheduler)"
            )
        if self.max_pending < 1 or self.max_attempts < 1:
            raise ConfigError(f"model {self.name!r}: max_pending and max_attempts must be >= 1")
        if self.lease_s <= 0:
            raise ConfigError(f"model {self.name!r}: lease_s must be positive")
        if self.faas is not None:
            self.faas.check(self.name)
        if self.drift is not None:
            try:
                self.drift.check(self.name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.capture is not None:
            try:
                self.capture.check(self.name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.max_workers < 1 or self.instance_price_per_hour < 0 or self.instance_min_billed_s < 0:
            raise ConfigError(f"model {self.name!r}: max_workers >= 1, prices and minimum billing not negative")
        if self.policy == "adaptive" and self.slo_ms is None:
            raise ConfigError(f"model {self.name!r}: the adaptive policy needs slo_ms")
        if self.slo_ms is not None and self.slo_ms <= 0 or not 0 < self.percentile < 100:
            raise ConfigError(f"model {self.name!r}: slo_ms must be positive and percentile in (0, 100)")
        if self.policy not in POLICIES:
            raise ConfigError(f"model {self.name!r}: policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.batch_size < 1 or self.timeout_ms < 0 or self.workers < 1:
            raise ConfigError(f"model {self.name!r}: batch_size and workers must be >= 1, timeout_ms >= 0")
        if self.prior_trace is not None and (self.scheduler != "hybrid" or self.faas is None or servers == 0):
            raise ConfigError(f"model {self.name!r}: prior_trace is for the hybrid scheduler of a server pool with [faas]")
        if self.prior_trace is not None:
            try:
                read_trace(self.prior_trace)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"model {self.name!r}: prior_trace: {exc}") from None
        if not self.prior_weight_s >= 0:
            raise ConfigError(f"model {self.name!r}: prior_weight_s must be 0 or more")
        if self.traffic_log is not None and Path(self.traffic_log).exists() and not Path(self.traffic_log).is_dir():
            raise ConfigError(f"model {self.name!r}: traffic_log {self.traffic_log!r} is a file, not a directory")
        for url in self.upstream:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"model {self.name!r}: upstream {url!r} is not an http(s) URL")

    @property
    def key(self) -> str:
        """How replicas know this version's shared state (`gateway.replicas`): the model's
        name for version 1, name@version for the others."""
        return self.name if self.version == "1" else f"{self.name}@{self.version}"

    @property
    def hybrid(self) -> bool:
        return self.faas is not None and bool(self.path or self.upstream or self.registered)

    @property
    def worker_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)


@dataclass(frozen=True)
class StateConfig:
    """Where replicas share state (`gateway.cluster`): in memory (one replica), or Redis."""

    url: str | None = None  # redis://host:port/db (rediss:// for TLS); none: in memory
    prefix: str = "sluice:"  # of every key, so that several clusters can share one Redis
    replica: str | None = None  # this replica's id; default host:port:pid:random
    sync_s: float = 0.5  # how often a replica writes and reads the shared state
    leader_lease_s: float = 10.0  # a leader that stops renewing is replaced after this

    def check(self) -> None:
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"[state] url {self.url!r} must be redis://, rediss:// or unix://")
        if self.sync_s <= 0 or self.leader_lease_s < 2 * self.sync_s:
            raise ConfigError("[state] sync_s must be positive and leader_lease_s at least twice sync_s")


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 << 20
    request_timeout_s: float = 30.0
    shutdown_timeout_s: float = 30.0
    shutdown_grace_s: float = 0.5  # after SIGTERM, still listening (answering 503) this long before the socket closes
    log_level: str = "info"
    access_log: bool = True
    admin_token: str | None = None  # bearer token of the /admin endpoints (or SLUICE_ADMIN_TOKEN); none: they refuse
    model_repository: str | None = None  # a directory of models in Triton's layout (`gateway.repository`)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    state: StateConfig = field(default_factory=StateConfig)
    model_defaults: dict[str, Any] = field(default_factory=dict)  # [batching] and model flags, for the repository's models


_SERVER_KEYS = {f.name for f in fields(GatewayConfig)} - {"models", "state", "model_defaults"}
_STATE_KEYS = {f.name for f in fields(StateConfig)}
_MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"name", "version"}


def _checked(where: str, values: dict[str, Any], cls: type) -> dict[str, Any]:
    """Refuse values of the wrong type, with the setting's name, before they reach code."""
    kinds = {f.name: f.type for f in fields(cls)}
    for key, value in values.items():
        kind = kinds[key]
        if kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "str | None":
            ok = value is None or isinstance(value, str)
        elif kind == "float | None":
            ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        elif kind == "tuple[str, ...]":
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"{where}: {key} = {value!r} is not a valid {kind}")
    return values


def model_config(name: str, values: dict[str, Any], version: str = "1") -> ModelConfig:
    """A model version's settings from the keys of a `[models.<name>]` table (not yet checked)."""
    return replace(_model(name, values), version=version)


def _table(model: str, key: str, table: Any, cls: type, needs: tuple[str, str] | None) -> Any:
    """A model's sub-table (`[models.<name>.faas]`, `.drift`, `.capture`) as its dataclass."""
    if not isinstance(table, dict):
        raise ConfigError(f"model {model!r}: {key} must be a table")
    unknown = table.keys() - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"model {model!r}: unknown [{key}] setting(s) {sorted(unknown)}")
    if needs is not None and needs[0] not in table:
        raise ConfigError(f"model {model!r}: [{key}] needs {needs[1]}")
    return cls(**_checked(f"model {model!r} [{key}]", table, cls))


def _model(name: str, values: dict[str, Any]) -> ModelConfig:
    unknown = values.keys() - _MODEL_KEYS
    if unknown:
        raise ConfigError(f"model {name!r}: unknown setting(s) {sorted(unknown)}")
    values = dict(values)
    if "policy" not in values and values.get("slo_ms") is not None:
        values["policy"] = "adaptive"  # an SLO without a policy asks for the adaptive one
    for key, cls, needs in (("faas", FaasConfig, ("function", "a function name")),
                            ("drift", DriftConfig, None),
                            ("capture", CaptureConfig, ("destination", "a destination (file://DIR or s3://BUCKET/PREFIX)"))):  # fmt: skip
        if values.get(key) is not None:
            values[key] = _table(name, key, values[key], cls, needs)
    upstream = values.get("upstream")
    if isinstance(upstream, str):
        values["upstream"] = (upstream,)
    elif isinstance(upstream, list):
        values["upstream"] = tuple(upstream)
    return ModelConfig(name=name, **_checked(f"model {name!r}", values, ModelConfig))


def load(
    path: str | None = None, flags: dict[str, Any] | None = None, demo: Callable[[], str] | None = None
) -> GatewayConfig:
    """Build the configuration. `flags` holds only the options the user gave:
    server keys, model defaults, and `models` as {name: {"path" or "upstream": ...}}.
    With no model configured anywhere, `demo()` gives the path of the embedded demo model."""
    doc: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, ValueError) as exc:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    unknown = doc.keys() - {"server", "batching", "models", "state"}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)} in {path}")
    for section in ("server", "batching", "models", "state"):
        if not isinstance(doc.get(section, {}), dict):
            raise ConfigError(f"[{section}] must be a table")
    flags = dict(flags or {})
    flag_models = flags.pop("models", {})
    state = {**doc.get("state", {}), **flags.pop("state", {})}
    if state.keys() - _STATE_KEYS:
        raise ConfigError(f"unknown [state] setting(s) {sorted(state.keys() - _STATE_KEYS)}")
    state_config = StateConfig(**_checked("[state]", state, StateConfig))
    state_config.check()
    server = {**doc.get("server", {}), **{k: v for k, v in flags.items() if k in _SERVER_KEYS}}
    if server.keys() - _SERVER_KEYS:
        raise ConfigError(f"unknown server setting(s) {sorted(server.keys() - _SERVER_KEYS)}")
    model_flags = {k: v for k, v in flags.items() if k in _MODEL_KEYS}
    defaults = doc.get("batching", {})
    tables = dict(doc.get("models", {}))
    for name, values in flag_models.items():
        tables[name] = values  # a flag replaces the file's model of the same name
    repository = server.get("model_repository")
    if not tables and demo is not None and repository is None:
        tables["demo"] = {"path": demo()}
    models = {}
    for name, values in tables.items():
        if not isinstance(values, dict):
            raise ConfigError(f"model {name!r}: expected a table of settings, not {values!r}")
        models[name] = _model(name, {**defaults, **values, **model_flags})
    for model in models.values():
        model.check()
    if server.get("admin_token") is None and os.environ.get("SLUICE_ADMIN_TOKEN"):
        server["admin_token"] = os.environ["SLUICE_ADMIN_TOKEN"]
    model_defaults = {**defaults, **model_flags}
    if repository is not None:
        _check_repository(repository, models, model_defaults)
    return GatewayConfig(**_checked("[server]", server, GatewayConfig), models=models, state=state_config,
                         model_defaults=model_defaults)  # fmt: skip


def _check_repository(root: str, models: dict[str, ModelConfig], defaults: dict[str, Any]) -> None:
    """The repository is a directory, and names no model that [models] names too."""
    from .repository import ModelRepository

    both = set(ModelRepository(root, defaults).names()) & set(models)
    if both:
        raise ConfigError(f"model(s) {sorted(both)} are both in [models] and in the model repository {root!r}")

