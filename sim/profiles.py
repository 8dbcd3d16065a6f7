"""Service profiles: how long a batch of b requests takes on a target, and what it costs.

The simulator knows a backend only through this file (DESIGN.md, "Service profiles").
A service-time curve is either linear, s(b) = base_ms + per_item_ms * b, or a table of
measured points {"batch_ms": {"1": 4.1, "2": 4.9, ...}}: linear between measured batch
sizes, and extended along the line through the last two points beyond the largest
(the first two below the smallest), never below zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from scheduler import Prices


class ProfileError(ValueError):
    """A service profile that cannot be used, with the reason."""


@dataclass(frozen=True, eq=False)
class ServiceCurve:
    """Service time in milliseconds as a function of batch size, on measured points."""

    sizes: np.ndarray  # int batch sizes, increasing; two points for a linear curve
    ms: np.ndarray

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> ServiceCurve:
        if not isinstance(doc, dict):
            raise ProfileError(f"{where}: expected an object with base_ms/per_item_ms or batch_ms")
        if "batch_ms" in doc:
            table = doc["batch_ms"]
            if not isinstance(table, dict) or len(table) < 2:
                raise ProfileError(f"{where}.batch_ms: expected at least two measured points, as {{\"1\": 4.1, \"2\": 4.9}}")
            points = sorted((_batch_size(key, f"{where}.batch_ms"), _number(v, f"{where}.batch_ms[{key}]", positive=True)) for key, v in table.items())
            sizes = [size for size, _ in points]
            if len(set(sizes)) != len(sizes):
                raise ProfileError(f"{where}.batch_ms: a batch size is given twice")
            return cls(np.array(sizes, dtype=float), np.array([ms for _, ms in points]))
        if "base_ms" in doc or "per_item_ms" in doc:
            base = _number(doc.get("base_ms"), f"{where}.base_ms")
            per_item = _number(doc.get("per_item_ms"), f"{where}.per_item_ms")
            if base + per_item <= 0:
                raise ProfileError(f"{where}: a batch of one must take some time (base_ms + per_item_ms > 0)")
            return cls(np.array([1.0, 2.0]), np.array([base + per_item, base + 2 * per_item]))
        raise ProfileError(f"{where}: expected base_ms and per_item_ms, or a batch_ms table")

    def seconds(self, batch_size: Any) -> Any:
        """Service time in seconds for a batch size or an array of them."""
        b = np.asarray(batch_size, dtype=float)
        if (b < 1).any():
            raise ValueError(f"batch size must be at least 1, got {batch_size!r}")
        sizes, ms = self.sizes, self.ms
        inside = np.interp(b, sizes, ms)
        above = ms[-1] + (b - sizes[-1]) * (ms[-1] - ms[-2]) / (sizes[-1] - sizes[-2])
        below = ms[0] + (b - sizes[0]) * (ms[1] - ms[0]) / (sizes[1] - sizes[0])
        out = np.where(b > sizes[-1], above, np.where(b < sizes[0], below, inside))
        out = np.maximum(out, 0.0) / 1000.0
        return float(out) if out.ndim == 0 else out


@dataclass(frozen=True, eq=False)
class FaasProfile:
    curves: dict[int, ServiceCurve]  # by memory size in MB
    invoke_overhead_ms: float
    cold_start_ms: float
    price_per_gb_s: float
    price_per_request: float


@dataclass(frozen=True, eq=False)
class IaasProfile:
    curve: ServiceCurve
    max_batch_size: int | None
    price_per_hour: float
    startup_s: float


@dataclass(frozen=True, eq=False)
class ServiceProfile:
    """A model's service times and prices on FaaS and/or an IaaS pool."""

    name: str
    faas: FaasProfile | None
    iaas: IaasProfile | None

    @classmethod
    def load(cls, path: str | Path) -> ServiceProfile:
        try:
            doc = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{path}: not valid JSON: {exc}") from None
        try:
            return cls.from_dict(doc)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> ServiceProfile:
        if not isinstance(doc, dict):
            raise ProfileError("a service profile must be a JSON object")
        if doc.get("faas") is None and doc.get("iaas") is None:
            raise ProfileError("a service profile needs a 'faas' or an 'iaas' section")
        return cls(
            name=str(doc.get("name", "")),
            faas=_faas(doc["faas"]) if doc.get("faas") is not None else None,
            iaas=_iaas(doc["iaas"]) if doc.get("iaas") is not None else None,
        )

    # -- FaaS ------------------------------------------------------------------

    @property
    def memory_sizes(self) -> list[int]:
        return sorted(self._faas.curves) if self.faas else []

    @overload
    def faas_service_s(self, batch_size: int, memory_mb: int) -> float: ...
    @overload
    def faas_service_s(self, batch_size: np.ndarray, memory_mb: int) -> np.ndarray: ...
    def faas_service_s(self, batch_size, memory_mb):
        """Seconds a function with `memory_mb` takes for a batch (no overhead, no cold start)."""
        curve = self._faas.curves.get(int(memory_mb)) if float(memory_mb).is_integer() else None
        if curve is None:
            raise ValueError(f"profile {self.name!r} has no FaaS memory size {memory_mb}; it has {self.memory_sizes}")
        return curve.seconds(batch_size)

    @overload
    def faas_batch_cost(self, service_s: float, memory_mb: int) -> float: ...
    @overload
    def faas_batch_cost(self, service_s: np.ndarray, memory_mb: int) -> np.ndarray: ...
    def faas_batch_cost(self, service_s, memory_mb):
        """USD for one invocation: billed duration rounded up to whole milliseconds (at least 1)
        x memory in GB x price per GB-second, plus the per-request price."""
        return self.prices(memory_mb).faas_batch_cost(service_s)

    def prices(self, memory_mb: int | None = None, instance_min_billed_s: float = 60.0) -> Prices:
        """The profile's prices as the scheduler and the bill take them (`scheduler.Prices`)."""
        faas, iaas = self.faas, self.iaas
        return Prices(
            instance_per_hour=iaas.price_per_hour if iaas else 0.0, instance_min_billed_s=instance_min_billed_s,
            faas_per_gb_s=faas.price_per_gb_s if faas else 0.0, faas_per_request=faas.price_per_request if faas else 0.0,
            faas_memory_mb=int(memory_mb) if memory_mb else 1024,
        )  # fmt: skip

    @property
    def _faas(self) -> FaasProfile:
        if self.faas is None:
            raise ValueError(f"profile {self.name!r} has no 'faas' section")
        return self.faas

    # -- IaaS ------------------------------------------------------------------

    @overload
    def iaas_service_s(self, batch_size: int) -> float: ...
    @overload
    def iaas_service_s(self, batch_size: np.ndarray) -> np.ndarray: ...
    def iaas_service_s(self, batch_size):
        """Seconds a pool instance takes for a batch."""
        if self.iaas is None:
            raise ValueError(f"profile {self.name!r} has no 'iaas' section")
        limit = self.iaas.max_batch_size
        if limit is not None and np.max(batch_size) > limit:
            raise ValueError(f"batch of {np.max(batch_size)} exceeds the pool's max_batch_size {limit}")
        return self.iaas.curve.seconds(batch_size)


def _faas(doc: Any) -> FaasProfile:
    if not isinstance(doc, dict):
        raise ProfileError("faas: expected an object")
    table = doc.get("memory_mb")
    if not isinstance(table, dict) or not table:
        raise ProfileError('faas.memory_mb: expected a table such as {"1024": {"base_ms": 40, "per_item_ms": 8}}')
    curves = {}
    for key, curve in table.items():
        memory = _batch_size(key, "faas.memory_mb")
        curves[memory] = ServiceCurve.from_dict(curve, f"faas.memory_mb[{key}]")
    return FaasProfile(
        curves=curves,
        invoke_overhead_ms=_number(doc.get("invoke_overhead_ms", 0.0), "faas.invoke_overhead_ms"),
        cold_start_ms=_number(doc.get("cold_start_ms", 0.0), "faas.cold_start_ms"),
        price_per_gb_s=_number(doc.get("price_per_gb_s"), "faas.price_per_gb_s"),
        price_per_request=_number(doc.get("price_per_request", 0.0), "faas.price_per_request"),
    )


def _iaas(doc: Any) -> IaasProfile:
    if not isinstance(doc, dict):
        raise ProfileError("iaas: expected an object")
    limit = doc.get("max_batch_size")
    return IaasProfile(
        curve=ServiceCurve.from_dict(doc, "iaas"),
        max_batch_size=None if limit is None else _batch_size(limit, "iaas.max_batch_size"),
        price_per_hour=_number(doc.get("price_per_hour"), "iaas.price_per_hour"),
        startup_s=_number(doc.get("startup_s", 0.0), "iaas.startup_s"),
    )


def _number(value: Any, where: str, positive: bool = False) -> float:
    if value is None:
        raise ProfileError(f"{where} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"{where} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ProfileError(f"{where} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


def _batch_size(value: Any, where: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ProfileError(f"{where}: {value!r} is not a positive whole number")
    return number


def resolved_memory(profile: ServiceProfile, memory_mb: int | None) -> int:
    """The FaaS memory size to use: the one given, or the profile's only one."""
    sizes = profile.memory_sizes
    if memory_mb is None:
        if len(sizes) != 1:
            raise ValueError(f"profile {profile.name!r} has FaaS memory sizes {sizes}; choose one (memory_mb)")
        return sizes[0]
    if memory_mb not in sizes:
        raise ValueError(f"profile {profile.name!r} has no FaaS memory size {memory_mb}; it has {sizes}")
    return int(memory_mb)
