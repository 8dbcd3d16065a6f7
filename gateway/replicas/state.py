"""The state replicas share: what one gateway alone keeps in memory, several keep in Redis.

Four things cross replicas (`Cluster` in `gateway.cluster` reads and writes them):
- arrivals, counted per replica in one-second buckets, so that every replica knows the
  cluster's arrival rate;
- the members of each self-registering pool, each with its lease's expiry, and the
  ones that left on purpose, so that a server registered through one replica serves
  through all of them;
- leases, held by one replica at a time: the leader of a model plans its shared pool;
- small published values (the leader's plan) and each replica's FaaS demand, from
  which every replica computes the same split of the function's concurrency.

Times are wall-clock seconds (`time.time()`), the one clock replicas share. A store that
cannot be reached raises `StateUnavailable`; the caller goes on with local state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class StateUnavailable(Exception):
    """The shared store did not answer; what was asked of it did not happen."""


class StateStore(Protocol):
    name: str  # for logs: "memory", or the Redis address

    async def count_arrivals(self, model: str, replica: str, counts: dict[int, int]) -> None:
        """Add `counts` (bucket -> arrivals; a bucket is a whole second of wall time)."""
        ...

    async def arrivals(self, model: str, first: int, last: int) -> dict[int, dict[str, int]]:
        """Buckets `first`..`last` (inclusive): bucket -> replica -> arrivals. Empty ones are left out."""
        ...

    async def renew_member(self, model: str, url: str, expires: float) -> None:
        """`url` is a member until `expires`; a member that had left is back."""
        ...

    async def remove_member(self, model: str, url: str, now: float, remember_s: float) -> None:
        """`url` left on purpose; other replicas learn it for `remember_s`."""
        ...

    async def members(self, model: str, now: float) -> tuple[dict[str, float], set[str]]:
        """(members -> expiry, those that left lately). Expired members are left out."""
        ...

    async def hold_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        """Take the lease `name` for `ttl_s`, or extend it if `holder` has it; False if another holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give up `name` if `holder` has it, so that another replica need not wait out the TTL."""
        ...

    async def publish(self, key: str, value: str, ttl_s: float, now: float) -> None: ...

    async def read(self, key: str, now: float) -> str | None: ...

    async def report_demand(self, pool: str, replica: str, demand: int, expires: float) -> None:
        """This replica wants `demand` of `pool`'s concurrency, and is alive until `expires`."""
        ...

    async def demands(self, pool: str, now: float) -> dict[str, int]:
        """Every live replica's demand (replicas whose report expired are left out)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Lease:
    holder: str
    expires: float


@dataclass
class MemoryState:
    """The default: state in this process. Several `Cluster`s sharing one `MemoryState`
    behave as replicas sharing a Redis, which is how the logic is tested without one."""

    name: str = "memory"
    keep_buckets: int = 120
    _arrivals: dict[str, dict[int, dict[str, int]]] = field(default_factory=dict)
    _members: dict[str, dict[str, float]] = field(default_factory=dict)
    _left: dict[str, dict[str, float]] = field(default_factory=dict)  # url -> forget after
    _leases: dict[str, _Lease] = field(default_factory=dict)
    _values: dict[str, tuple[str, float]] = field(default_factory=dict)
    _demands: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)

    async def count_arrivals(self, model: str, replica: str, counts: dict[int, int]) -> None:
        buckets = self._arrivals.setdefault(model, {})
        for bucket, n in counts.items():
            per = buckets.setdefault(bucket, {})
            per[replica] = per.get(replica, 0) + n
        newest = max(buckets, default=0)
        for bucket in [b for b in buckets if b < newest - self.keep_buckets]:
            del buckets[bucket]

    async def arrivals(self, model: str, first: int, last: int) -> dict[int, dict[str, int]]:
        buckets = self._arrivals.get(model, {})
        return {b: dict(per) for b, per in buckets.items() if first <= b <= last and per}

    async def renew_member(self, model: str, url: str, expires: float) -> None:
        self._members.setdefault(model, {})[url] = expires
        self._left.get(model, {}).pop(url, None)

    async def remove_member(self, model: str, url: str, now: float, remember_s: float) -> None:
        self._members.get(model, {}).pop(url, None)
        self._left.setdefault(model, {})[url] = now + remember_s

    async def members(self, model: str, now: float) -> tuple[dict[str, float], set[str]]:
        members = self._members.get(model, {})
        for url in [u for u, expires in members.items() if expires <= now]:
            del members[url]
        left = self._left.get(model, {})
        for url in [u for u, until in left.items() if until <= now]:
            del left[url]
        return dict(members), set(left)

    async def hold_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        lease = self._leases.get(name)
        if lease is not None and lease.holder != holder and lease.expires > now:
            return False
        self._leases[name] = _Lease(holder, now + ttl_s)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        lease = self._leases.get(name)
        if lease is not None and lease.holder == holder:
            del self._leases[name]

    async def publish(self, key: str, value: str, ttl_s: float, now: float) -> None:
        self._values[key] = (value, now + ttl_s)

    async def read(self, key: str, now: float) -> str | None:
        value, expires = self._values.get(key, (None, 0.0))
        return value if expires > now else None

    async def report_demand(self, pool: str, replica: str, demand: int, expires: float) -> None:
        self._demands.setdefault(pool, {})[replica] = (demand, expires)

    async def demands(self, pool: str, now: float) -> dict[str, int]:
        reports = self._demands.get(pool, {})
        for replica in [r for r, (_, expires) in reports.items() if expires <= now]:
            del reports[replica]
        return {r: d for r, (d, _) in reports.items()}

    async def close(self) -> None:
        pass
