"""A model's traffic policy: weights per version (canary), sticky assignment, a shadow.

- weights: the percent of the model's unpinned requests each serving version takes;
- sticky_header: a request header (a user id, say) whose value picks the version
  instead of a random draw, so one user sees one version while the weights hold;
- shadow: a version that receives a sampled copy (`shadow_fraction`) of the requests
  some other version answers; its answers are never returned, only compared
  (`gateway.shadow`).

Set in a model repository's `sluice.toml` (`[traffic]`), and at run time through
`PUT /admin/models/{m}/traffic`. Which version takes a request is `choose`: a pure
function of the weights and a number in [0, 1).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


def version_order(version: str) -> tuple[int, int | str]:
    """Numeric versions in numeric order (Triton's are positive integers), then any others."""
    return (0, int(version)) if version.isdigit() else (1, version)


def choose(weights: Mapping[str, float], u: float) -> str | None:
    """The version whose share of [0, 1) holds `u`, by weight, in version order; None
    when no version has weight."""
    names = sorted((v for v, w in weights.items() if w > 0), key=version_order)
    if not names:
        return None
    bounds = list(itertools.accumulate(weights[v] for v in names))
    at = bisect.bisect_right(bounds, u * bounds[-1])
    return names[min(at, len(names) - 1)]


def sticky_point(value: str) -> float:
    """A stable number in [0, 1) for a header value: the same user, the same draw."""
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class TrafficPolicy:
    weights: dict[str, float] = field(default_factory=dict)  # percent, by serving version
    sticky_header: str | None = None
    shadow: str | None = None  # the version that gets copies
    shadow_fraction: float = 1.0  # of the requests another version answers

    def to_json(self) -> dict[str, Any]:
        return {"weights": dict(sorted(self.weights.items(), key=lambda kv: version_order(kv[0]))),
                "sticky_header": self.sticky_header, "shadow": self.shadow, "shadow_fraction": self.shadow_fraction}  # fmt: skip

    def changed(self, doc: Mapping[str, Any], serving: set[str]) -> TrafficPolicy:
        """This policy with the fields `doc` gives, checked against the serving versions
        (ValueError with the reason, and nothing changed, where they do not hold)."""
        unknown = set(doc) - {"weights", "sticky_header", "shadow", "shadow_fraction"}
        if unknown:
            raise ValueError(f"unknown traffic setting(s) {sorted(unknown)}")
        policy = self
        if "weights" in doc:
            policy = replace(policy, weights=checked_weights(doc["weights"], serving))
        if "sticky_header" in doc:
            header = doc["sticky_header"]
            if header is not None and (not isinstance(header, str) or not header or len(header) > 128):
                raise ValueError("sticky_header must be a header name, or null")
            policy = replace(policy, sticky_header=header)
        if "shadow" in doc:
            shadow = doc["shadow"]
            if shadow is not None and (not isinstance(shadow, str) or shadow not in serving):
                raise ValueError(f"shadow version {shadow!r} is not serving (serving: {', '.join(sorted(serving)) or 'none'})")
            policy = replace(policy, shadow=shadow)
        if "shadow_fraction" in doc:
            fraction = doc["shadow_fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                raise ValueError("shadow_fraction must be a number in [0, 1]")
            policy = replace(policy, shadow_fraction=float(fraction))
        return policy

    def without(self, version: str) -> TrafficPolicy:
        """After `version` leaves: its weight goes, and with it its shadow role."""
        weights = {v: w for v, w in self.weights.items() if v != version}
        return replace(self, weights=weights, shadow=None if self.shadow == version else self.shadow)


def checked_weights(given: Any, serving: set[str]) -> dict[str, float]:
    """Weights in percent for serving versions, summing to 100."""
    if not isinstance(given, dict) or not given:
        raise ValueError("weights must be an object of version: percent")
    weights: dict[str, float] = {}
    for version, weight in given.items():
        if version not in serving:
            raise ValueError(f"version {version!r} is not serving (serving: {', '.join(sorted(serving)) or 'none'})")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of version {version!r} must be a percent >= 0")
        weights[version] = float(weight)
    if abs(sum(weights.values()) - 100.0) > 1e-6:
        raise ValueError(f"weights must sum to 100, not {sum(weights.values()):g}")
    return weights
