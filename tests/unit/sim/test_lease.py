"""Leases on the virtual clock and the real `Session` kept alive against the simulated etcd."""

from __future__ import annotations

import asyncio

import pytest

from hubspoke.etcd import EtcdLeaseNotFound, Session
from tests.sim.etcd import SimEtcd
from tests.sim.harness import simulate


def test_grant_ttl_keys_revoke() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        lease = await etcd.lease_grant(10)
        assert lease.ttl == 10
        assert (await etcd.lease_grant(0)).ttl == 2  # etcd's minimum TTL
        await etcd.put(b"/k", b"v", lease=lease.id)
        await etcd.put(b"/j", b"v", lease=lease.id)
        await asyncio.sleep(3.5)
        ttl = await etcd.lease_time_to_live(lease.id, keys=True)
        assert (ttl.granted_ttl, ttl.ttl, ttl.keys) == (10, 6, (b"/j", b"/k"))
        await etcd.lease_revoke(lease.id)
        assert await etcd.get(b"/k") is None and await etcd.get(b"/j") is None
        assert sim.trace[-1].endswith(f"revoke {lease.id:x} @4 -/j -/k")  # one revision
        assert (await etcd.lease_time_to_live(lease.id)).ttl == -1
        with pytest.raises(EtcdLeaseNotFound):
            await etcd.lease_revoke(lease.id)
        await etcd.close()

    simulate(scenario)


def test_a_key_put_without_its_lease_is_detached() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        lease = await etcd.lease_grant(5)
        await etcd.put(b"/k", b"v", lease=lease.id)
        await etcd.put(b"/k", b"w")
        await asyncio.sleep(6)
        assert (await etcd.get(b"/k")) is not None
        await etcd.close()

    simulate(scenario)


def test_a_lease_expires_at_its_ttl_on_the_virtual_clock() -> None:
    async def scenario(sim: SimEtcd) -> float:
        etcd = sim.client("a")
        lease = await etcd.lease_grant(3)
        granted = asyncio.get_running_loop().time()
        await etcd.put(b"/member", b"m", lease=lease.id)
        for _ in range(100):
            if await etcd.get(b"/member") is None:
                break
            await asyncio.sleep(0.1)
        await etcd.close()
        return asyncio.get_running_loop().time() - granted

    assert 3.0 <= simulate(scenario) < 3.2


def test_session_keepalive_outlives_its_ttl_and_close_revokes() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        session = await Session.open(etcd, ttl=2)
        await etcd.put(b"/member", b"alive", lease=session.lease_id)
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(60)
        assert await etcd.get(b"/member") is not None
        assert session.is_alive and session.last_keepalive > started + 59
        assert 0 < session.remaining() <= 2
        await session.close()
        assert await etcd.get(b"/member") is None
        assert session.lost.is_set()
        await etcd.close()

    simulate(scenario)


def test_abandoned_session_expires() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        session = await Session.open(etcd, ttl=2)
        await etcd.put(b"/member", b"frozen", lease=session.lease_id)
        await session.abandon()
        await asyncio.sleep(2.1)
        assert await etcd.get(b"/member") is None
        assert (await etcd.lease_time_to_live(session.lease_id)).ttl == -1
        await etcd.close()

    simulate(scenario)


def test_session_lost_when_its_lease_is_revoked_elsewhere() -> None:
    async def scenario(sim: SimEtcd) -> None:
        spoke, hub = sim.client("spoke"), sim.client("hub")
        session = await Session.open(spoke, ttl=3)
        await hub.lease_revoke(session.lease_id)
        async with asyncio.timeout(2):  # the next keep-alive hears TTL 0
            await session.wait_lost()
        await session.close()
        await spoke.close()
        await hub.close()

    simulate(scenario)


def test_session_lost_when_cut_off_past_its_ttl() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("spoke")
        session = await Session.open(etcd, ttl=3)
        await etcd.put(b"/member", b"m", lease=session.lease_id)
        loop = asyncio.get_running_loop()
        sim.partition("spoke", "blackhole")
        await session.wait_lost()
        assert session.remaining() <= 0
        # one TTL after the last keep-alive etcd answered (give or take the retry backoff)
        assert 3.0 <= loop.time() - session.last_keepalive < 3.2
        assert sim.get(b"/member") is None  # etcd expired it meanwhile
        sim.heal("spoke")
        await session.abandon()
        await etcd.close()

    simulate(scenario)
