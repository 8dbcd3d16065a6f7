"""`StateStore` in Redis, for several gateway replicas (`[state] url = "redis://..."`).

Keys, all under a prefix (default `sluice:`):
- `arrivals:{model}:{bucket}`: hash replica -> count, expiring after two minutes;
- `members:{model}`: sorted set url -> lease expiry; `left:{model}`: url -> forget after;
- `lease:{name}`: the holder's id, with Redis's own TTL (so the holder's clock does not matter);
- `value:{key}`: a published value with a TTL;
- `demand:{pool}`: hash replica -> "demand expiry".

Every call fails fast (a quarter second, no retries) with `StateUnavailable`: a replica
that cannot reach Redis goes on with its own state instead of waiting on it.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .state import StateUnavailable

_ARRIVALS_KEEP_S = 120
_TIMEOUT_S = 0.25

# Take the lease if free, or extend it if ours: one atomic step.
_HOLD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisState:
    def __init__(self, url: str, *, prefix: str = "sluice:", timeout_s: float = _TIMEOUT_S) -> None:
        self.name = url
        self.prefix, self.timeout_s = prefix, timeout_s
        self.redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )  # fmt: skip
        self._hold = self.redis.register_script(_HOLD)
        self._release = self.redis.register_script(_RELEASE)

    def _key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def _do(self, call):
        try:
            # The client's own timeouts bound each socket operation; this bounds the call
            # as a whole (connect, send, read, and the pool's bookkeeping around them).
            async with asyncio.timeout(4 * self.timeout_s):
                result = await call
        except (RedisError, OSError) as exc:  # TimeoutError included: it is an OSError
            _still_cancelled()
            raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc
        _still_cancelled()
        return result

    async def count_arrivals(self, model: str, replica: str, counts: dict[int, int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for bucket, n in counts.items():
            key = self._key("arrivals", model, bucket)
            pipe.hincrby(key, replica, n)
            pipe.expire(key, _ARRIVALS_KEEP_S)
        await self._do(pipe.execute())

    async def arrivals(self, model: str, first: int, last: int) -> dict[int, dict[str, int]]:
        pipe = self.redis.pipeline(transaction=False)
        buckets = range(first, last + 1)
        for bucket in buckets:
            pipe.hgetall(self._key("arrivals", model, bucket))
        found = await self._do(pipe.execute())
        return {b: {r: int(n) for r, n in per.items()} for b, per in zip(buckets, found) if per}

    async def renew_member(self, model: str, url: str, expires: float) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self._key("members", model), {url: expires})
        pipe.zrem(self._key("left", model), url)
        await self._do(pipe.execute())

    async def remove_member(self, model: str, url: str, now: float, remember_s: float) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self._key("members", model), url)
        pipe.zadd(self._key("left", model), {url: now + remember_s})
        await self._do(pipe.execute())

    async def members(self, model: str, now: float) -> tuple[dict[str, float], set[str]]:
        members, left = self._key("members", model), self._key("left", model)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(members, "-inf", now)
        pipe.zremrangebyscore(left, "-inf", now)
        pipe.zrange(members, 0, -1, withscores=True)
        pipe.zrange(left, 0, -1)
        *_, listed, gone = await self._do(pipe.execute())
        return {url: float(expires) for url, expires in listed}, set(gone)

    async def hold_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        held = await self._do(self._hold(keys=[self._key("lease", name)], args=[holder, max(1, int(ttl_s * 1e3))]))
        return bool(held)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._do(self._release(keys=[self._key("lease", name)], args=[holder]))

    async def publish(self, key: str, value: str, ttl_s: float, now: float) -> None:
        await self._do(self.redis.set(self._key("value", key), value, px=max(1, int(ttl_s * 1e3))))

    async def read(self, key: str, now: float) -> str | None:
        return await self._do(self.redis.get(self._key("value", key)))

    async def report_demand(self, pool: str, replica: str, demand: int, expires: float) -> None:
        await self._do(self.redis.hset(self._key("demand", pool), replica, f"{demand} {expires}"))

    async def demands(self, pool: str, now: float) -> dict[str, int]:
        key = self._key("demand", pool)
        reports = await self._do(self.redis.hgetall(key))
        live, stale = {}, []
        for replica, report in reports.items():
            demand, expires = report.split()
            if float(expires) > now:
                live[replica] = int(demand)
            else:
                stale.append(replica)
        if stale:
            await self._do(self.redis.hdel(key, *stale))
        return live

    async def close(self) -> None:
        try:
            async with asyncio.timeout(4 * self.timeout_s):
                await self.redis.aclose()
        except (RedisError, OSError):  # closing: nothing more to do about it
            pass


def _still_cancelled() -> None:
    """Raise CancelledError if this task was cancelled during the call. redis-py at times
    swallows a cancellation that lands in a command (measured: a third of those landing
    mid-call returned normally); a background loop stopped then would run on, and its
    `stop()` wait forever. The cancel request is still on the task: honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
