"""Servers that register themselves, in process: leases and leaving, and the member URLs the
admin endpoint accepts (a gateway served by `sluice worker --register` processes, and the admin
endpoint's token, are in e2e/test_registered_pool.py)."""

from __future__ import annotations

import pytest

from backends import RegisteredPool
from gateway.admin import server_url


async def test_a_lease_lasts_its_ttl_and_renewal_extends_it() -> None:
    pool = RegisteredPool("m", max_ttl_s=10.0)
    await pool.start()
    try:
        assert pool.register("http://127.0.0.1:1", 5.0, now=0.0) is True
        assert pool.expire(4.9) == [] and len(pool.instances) == 1
        assert pool.register("http://127.0.0.1:1", 5.0, now=4.0) is False  # a renewal, not a new member
        assert pool.expire(8.9) == []
        assert pool.expire(9.0) == ["http://127.0.0.1:1"] and pool.instances == []
        pool.register("http://127.0.0.1:2", 600.0, now=0.0)
        assert pool.expire(10.0) == ["http://127.0.0.1:2"], "a lease is capped at max_ttl_s"
    finally:
        await pool.stop()


async def test_a_leaving_server_takes_no_batches_and_goes_once_its_batches_are_done() -> None:
    pool = RegisteredPool("m")
    await pool.start()
    try:
        pool.register("http://127.0.0.1:3", 30.0, now=0.0)
        instance = pool.instances[0]
        instance.healthy, instance.inflight = True, 1
        assert pool.deregister("http://127.0.0.1:3") and not instance.healthy
        assert not pool.deregister("http://127.0.0.1:3"), "leaving twice is one leave"
        pool.report_failure(instance)  # a failure while leaving starts no probe that would bring it back
        assert instance not in pool._probes
        assert pool.expire(1.0) == [], "its batch in flight is still being answered"
        instance.inflight = 0
        assert pool.expire(1.0) == ["http://127.0.0.1:3"]
    finally:
        await pool.stop()


@pytest.mark.parametrize("bad", ["ftp://h:1", "h:1", "http://", "http://h:1/?a=b", 12, None, "x" * 3000])
def test_a_member_url_must_be_plain_http(bad) -> None:
    with pytest.raises(ValueError):
        server_url(bad)
    assert server_url("http://10.0.0.7:8001/") == "http://10.0.0.7:8001"
