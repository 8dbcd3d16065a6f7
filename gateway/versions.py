"""A model's versions as the gateway serves them, and which one takes a request.

Each version is served apart: its own pool, batch queue, batching policy and metrics
(a batch never mixes versions). A request names its version (the versioned route, or
an `X-Sluice-Version` header) or follows the model's traffic weights. The first
version a model has takes all its traffic; a version loaded while another serves
takes none until the weights give it some.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .served import ServedModel

VERSION_HEADER = "X-Sluice-Version"


def version_order(version: str) -> tuple[int, int | str]:
    """Numeric versions in numeric order (Triton's are positive integers), then any others."""
    return (0, int(version)) if version.isdigit() else (1, version)


def choose(weights: Mapping[str, float], u: float) -> str | None:
    """The version whose share of [0, 1) holds `u` (uniform in [0, 1)), by weight, in
    version order; None when no version has weight."""
    names = sorted((v for v, w in weights.items() if w > 0), key=version_order)
    if not names:
        return None
    bounds = list(itertools.accumulate(weights[v] for v in names))
    at = bisect.bisect_right(bounds, u * bounds[-1])
    return names[min(at, len(names) - 1)]


@dataclass(frozen=True)
class Failure:
    """A version that did not load, and why; it never gets traffic."""

    version: str
    reason: str


class ModelVersions:
    """One model: the versions serving, the ones that failed to load, and the traffic weights."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.served: dict[str, ServedModel] = {}
        self.failed: dict[str, Failure] = {}
        self.weights: dict[str, float] = {}  # percent of the model's traffic, by serving version

    def add(self, model: ServedModel) -> None:
        """A version that now serves: all the traffic if it is the only one, else none yet."""
        version = model.config.version
        self.failed.pop(version, None)
        self.served[version] = model
        self.weights[version] = 100.0 if not any(self.weights.values()) else 0.0

    def fail(self, version: str, reason: str) -> None:
        self.failed[version] = Failure(version, reason)

    def remove(self, version: str) -> ServedModel | None:
        """Stop routing to `version`; its traffic goes to the others by their weights (all to
        the lowest serving version if none has any)."""
        model = self.served.pop(version, None)
        self.weights.pop(version, None)
        if self.served and not any(self.weights.values()):
            self.weights[min(self.served, key=version_order)] = 100.0
        return model

    def pick(self, pinned: str | None, u: float) -> ServedModel | None:
        """The version for a request: the pinned one if it serves, else by weight (None: none serves)."""
        if pinned is not None:
            return self.served.get(pinned)
        chosen = choose(self.weights, u)
        return self.served.get(chosen) if chosen is not None else None

    def versions(self) -> list[str]:
        return sorted(self.served, key=version_order)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self.served.values()))

    @property
    def ready(self) -> bool:
        return any(m.ready for m in self.served.values())
