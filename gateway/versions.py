"""A model's versions as the gateway serves them, and which one takes a request.

Each version is served apart: its own pool, batch queue, batching policy and metrics
(a batch never mixes versions). A request names its version (the versioned route, or
an `X-Sluice-Version` header) or follows the model's traffic policy
(`gateway.traffic`). The first version a model has takes all its traffic; a version
loaded while another serves takes none until the policy gives it some.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from .served import ServedModel
from .shadow import ShadowStats
from .traffic import TrafficPolicy, choose, sticky_point, version_order

VERSION_HEADER = "X-Sluice-Version"


@dataclass(frozen=True)
class Failure:
    """A version that did not load, and why; it never gets traffic."""

    version: str
    reason: str


class ModelVersions:
    """One model: the versions serving, the ones that failed to load, its traffic policy
    and what its shadow has shown."""

    def __init__(self, name: str, traffic: TrafficPolicy | None = None) -> None:
        self.name = name
        self.served: dict[str, ServedModel] = {}
        self.failed: dict[str, Failure] = {}
        self.traffic = traffic or TrafficPolicy()
        self.shadow_stats = ShadowStats()

    @property
    def weights(self) -> dict[str, float]:
        return self.traffic.weights

    def add(self, model: ServedModel) -> None:
        """A version that now serves: all the traffic if no other has any, else none yet."""
        version = model.config.version
        self.failed.pop(version, None)
        self.served[version] = model
        weights = dict(self.traffic.weights)
        weights[version] = weights.get(version, 0.0)
        if not any(weights.get(v, 0.0) > 0 for v in self.served):
            weights = {v: (100.0 if v == version else 0.0) for v in weights}
        self.traffic = replace(self.traffic, weights={v: w for v, w in weights.items() if v in self.served})

    def fail(self, version: str, reason: str) -> None:
        self.failed[version] = Failure(version, reason)

    def remove(self, version: str) -> ServedModel | None:
        """Stop routing to `version`; its share goes to the others by their weights (all to
        the lowest serving version if none has any)."""
        model = self.served.pop(version, None)
        self.traffic = self.traffic.without(version)
        if self.served and not any(self.traffic.weights.get(v, 0.0) > 0 for v in self.served):
            first = min(self.served, key=version_order)
            self.traffic = replace(self.traffic, weights={v: (100.0 if v == first else 0.0) for v in self.served})
        return model

    def set_traffic(self, doc: Mapping) -> TrafficPolicy:
        """Change the policy (ValueError, and nothing changed, where `doc` does not hold)."""
        self.traffic = self.traffic.changed(doc, set(self.served))
        return self.traffic

    def pick(self, pinned: str | None, headers: Mapping[str, str], u: float) -> ServedModel | None:
        """The version for a request: the pinned one if it serves, else by weight, drawn by
        the sticky header's value when the policy names one and the request carries it
        (None: no version serves)."""
        if pinned is not None:
            return self.served.get(pinned)
        header = self.traffic.sticky_header
        if header is not None and headers.get(header):
            u = sticky_point(headers[header])
        chosen = choose(self.traffic.weights, u)
        return self.served.get(chosen) if chosen is not None else None

    def shadow_for(self, primary: ServedModel, u: float) -> ServedModel | None:
        """The shadow version to copy a request to (sampled by `u`), if any and not the primary."""
        shadow = self.traffic.shadow
        if shadow is None or shadow == primary.version or u >= self.traffic.shadow_fraction:
            return None
        return self.served.get(shadow)

    def versions(self) -> list[str]:
        return sorted(self.served, key=version_order)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self.served.values()))

    @property
    def ready(self) -> bool:
        return any(m.ready for m in self.served.values())
