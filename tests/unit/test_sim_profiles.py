"""Service profiles: service-time curves, billing, and validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.profiles import ProfileError, ServiceProfile

PRICE = 0.0000166667
DEMO: dict[str, Any] = {
    "name": "demo",
    "faas": {
        "memory_mb": {
            "2048": {"base_ms": 25, "per_item_ms": 4},
            "1024": {"base_ms": 40, "per_item_ms": 8},
            "512": {"batch_ms": {"1": 4.1, "2": 4.9, "4": 6.5, "8": 9.7}},
        },
        "cold_start_ms": 900,
        "price_per_gb_s": PRICE,
        "price_per_request": 0.0000002,
    },
    "iaas": {"base_ms": 3, "per_item_ms": 0.8, "max_batch_size": 64, "price_per_hour": 0.085, "startup_s": 60},
}


@pytest.fixture
def profile() -> ServiceProfile:
    return ServiceProfile.from_dict(DEMO)


def test_linear_curves_are_base_plus_per_item_times_b(profile: ServiceProfile) -> None:
    assert profile.memory_sizes == [512, 1024, 2048]
    assert profile.faas_service_s(1, 1024) == pytest.approx(0.048)
    assert profile.faas_service_s(10, 2048) == pytest.approx(0.065)
    assert profile.iaas_service_s(64) == pytest.approx(0.0542)
    assert isinstance(profile.faas_service_s(3, 1024), float)
    assert profile.faas.invoke_overhead_ms == 0.0 and profile.faas.cold_start_ms == 900.0


def test_measured_table_interpolates_and_extrapolates_linearly(profile: ServiceProfile) -> None:
    ms = lambda b: profile.faas_service_s(b, 512) * 1000  # noqa: E731
    assert ms(1) == pytest.approx(4.1) and ms(4) == pytest.approx(6.5)
    assert ms(3) == pytest.approx(5.7)  # halfway between 2 and 4
    assert ms(6) == pytest.approx(8.1)  # halfway between 4 and 8
    assert ms(10) == pytest.approx(9.7 + 2 * 0.8)  # slope of the last two points: 0.8 ms per item
    assert ms(64) == pytest.approx(9.7 + 56 * 0.8)


def test_table_below_its_smallest_size_extends_the_first_segment() -> None:
    doc = copy.deepcopy(DEMO)
    doc["iaas"] = {"batch_ms": {"2": 5.0, "4": 6.0}, "price_per_hour": 1.0}
    assert ServiceProfile.from_dict(doc).iaas_service_s(1) == pytest.approx(0.0045)


def test_vectorized_service_times_equal_scalar_ones(profile: ServiceProfile) -> None:
    sizes = np.array([1, 2, 3, 5, 8, 9, 33])
    for memory in profile.memory_sizes:
        vector = profile.faas_service_s(sizes, memory)
        assert isinstance(vector, np.ndarray)
        assert vector.tolist() == [profile.faas_service_s(int(b), memory) for b in sizes]
    assert profile.iaas_service_s(sizes).tolist() == [profile.iaas_service_s(int(b)) for b in sizes]


def test_billing_rounds_up_to_whole_milliseconds(profile: ServiceProfile) -> None:
    per_request = 0.0000002
    gb_ms = PRICE / 1000  # one GB for one millisecond
    assert profile.faas_batch_cost(0.0041, 1024) == pytest.approx(5 * gb_ms + per_request, rel=1e-12)
    assert profile.faas_batch_cost(0.0041, 2048) == pytest.approx(10 * gb_ms + per_request, rel=1e-12)
    assert profile.faas_batch_cost(0.0041, 512) == pytest.approx(2.5 * gb_ms + per_request, rel=1e-12)
    # 9 * 1e-3 is 0.009000000000000001: float noise must not add a millisecond.
    assert profile.faas_batch_cost(9 * 1e-3, 1024) == pytest.approx(9 * gb_ms + per_request, rel=1e-12)
    assert profile.faas_batch_cost(0.0090001, 1024) == pytest.approx(10 * gb_ms + per_request, rel=1e-12)
    assert profile.faas_batch_cost(0.0000001, 1024) == pytest.approx(1 * gb_ms + per_request, rel=1e-12)  # at least 1 ms
    vector = profile.faas_batch_cost(np.array([0.0041, 9 * 1e-3, 0.0090001]), 1024)
    assert vector.tolist() == [profile.faas_batch_cost(s, 1024) for s in (0.0041, 9 * 1e-3, 0.0090001)]


def test_unknown_memory_size_and_oversized_pool_batch(profile: ServiceProfile) -> None:
    with pytest.raises(ValueError, match=r"no FaaS memory size 3008; it has \[512, 1024, 2048\]"):
        profile.faas_service_s(1, 3008)
    with pytest.raises(ValueError, match="exceeds the pool's max_batch_size 64"):
        profile.iaas_service_s(65)
    with pytest.raises(ValueError, match="at least 1"):
        profile.faas_service_s(0, 1024)


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(DEMO))
    assert ServiceProfile.load(path).faas_service_s(2, 2048) == pytest.approx(0.033)
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        ServiceProfile.load(path)


def test_a_profile_with_only_one_section() -> None:
    only_faas = ServiceProfile.from_dict({"faas": DEMO["faas"]})
    with pytest.raises(ValueError, match="no 'iaas' section"):
        only_faas.iaas_service_s(1)
    only_iaas = ServiceProfile.from_dict({"iaas": DEMO["iaas"]})
    assert only_iaas.memory_sizes == []
    with pytest.raises(ValueError, match="no 'faas' section"):
        only_iaas.faas_service_s(1, 1024)


def _broken(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DEMO)
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("faas/price_per_gb_s", _DELETE, "faas.price_per_gb_s is missing"),
        ("faas/cold_start_ms", -5, "must be non-negative"),
        ("faas/cold_start_ms", "slow", "must be a finite number"),
        ("faas/memory_mb", {}, "faas.memory_mb: expected a table"),
        ("faas/memory_mb/1024", {"base_ms": 40}, r"faas.memory_mb\[1024\].per_item_ms is missing"),
        ("faas/memory_mb/1024", {"speed": 1}, "expected base_ms and per_item_ms"),
        ("faas/memory_mb/1024", {"base_ms": 0, "per_item_ms": 0}, "must take some time"),
        ("faas/memory_mb/512", {"batch_ms": {"1": 4.1}}, "at least two measured points"),
        ("faas/memory_mb/512", {"batch_ms": {"1": 4.1, "two": 4.9}}, "'two' is not a positive whole number"),
        ("faas/memory_mb/512", {"batch_ms": {"1": 4.1, "2": 0}}, "must be positive"),
        ("faas/memory_mb/lots", {"base_ms": 1, "per_item_ms": 1}, "'lots' is not a positive whole number"),
        ("iaas/price_per_hour", _DELETE, "iaas.price_per_hour is missing"),
        ("iaas/max_batch_size", 0, "iaas.max_batch_size: 0 is not a positive whole number"),
        ("faas", None, None),  # only the iaas section left: valid
    ],
)
def test_validation_says_what_is_wrong(path: str, value: Any, message: str | None) -> None:
    doc = _broken(path, value)
    if message is None:
        ServiceProfile.from_dict(doc)
        return
    with pytest.raises(ProfileError, match=message):
        ServiceProfile.from_dict(doc)


def test_a_profile_needs_a_section() -> None:
    with pytest.raises(ProfileError, match="needs a 'faas' or an 'iaas' section"):
        ServiceProfile.from_dict({"name": "empty"})
    with pytest.raises(ProfileError, match="must be a JSON object"):
        ServiceProfile.from_dict([1, 2])
