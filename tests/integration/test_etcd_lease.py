"""Leases and lease-backed sessions of hubspoke.etcd against a real etcd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from hubspoke.etcd import EtcdClient, EtcdLeaseNotFound, Session
from tests.lab.etcd import EtcdServer, wait_for_etcd, wait_until


async def test_lease_grant_ttl_revoke(etcd: EtcdClient, key_prefix: bytes) -> None:
    lease = await etcd.lease_grant(10)
    assert lease.ttl == 10
    ttl = await etcd.lease_time_to_live(lease.id)
    assert ttl.granted_ttl == 10
    assert 0 < ttl.ttl <= 10
    await etcd.put(key_prefix + b"k", b"v", lease=lease.id)
    await etcd.lease_revoke(lease.id)
    assert await etcd.get(key_prefix + b"k") is None
    assert (await etcd.lease_time_to_live(lease.id)).ttl == -1
    with pytest.raises(EtcdLeaseNotFound):
        await etcd.lease_revoke(lease.id)


async def test_session_keepalive_outlives_ttl(etcd: EtcdClient, key_prefix: bytes) -> None:
    session = await Session.open(etcd, ttl=2)
    try:
        await etcd.put(key_prefix + b"member", b"alive", lease=session.lease_id)
        started = time.monotonic()
        await asyncio.sleep(3.5)  # longer than the TTL: only keep-alives keep the key
        assert await etcd.get(key_prefix + b"member") is not None
        assert session.is_alive
        assert session.last_keepalive > started
        assert session.remaining() > 0
    finally:
        await session.close()
    assert await etcd.get(key_prefix + b"member") is None  # close revoked the lease
    assert session.lost.is_set()


async def test_lease_expires_after_keepalives_stop(etcd: EtcdClient, key_prefix: bytes) -> None:
    session = await Session.open(etcd, ttl=2)
    await etcd.put(key_prefix + b"member", b"frozen", lease=session.lease_id)
    await session.abandon()

    async def gone() -> bool:
        return await etcd.get(key_prefix + b"member") is None

    await wait_until(gone, within=10.0)
    assert (await etcd.lease_time_to_live(session.lease_id)).ttl == -1


async def test_session_lost_when_lease_revoked_elsewhere(etcd: EtcdClient) -> None:
    session = await Session.open(etcd, ttl=2)
    await etcd.lease_revoke(session.lease_id)
    await asyncio.wait_for(session.wait_lost(), 10.0)
    await session.close()


@pytest.fixture
async def own_etcd() -> AsyncIterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_session_lost_when_etcd_is_down_past_ttl(own_etcd: EtcdServer) -> None:
    async with await EtcdClient.connect(own_etcd.client_config()) as client:
        session = await Session.open(client, ttl=2)
        own_etcd.kill()
        await asyncio.wait_for(session.wait_lost(), 10.0)
        assert session.remaining() <= 0
        own_etcd.start()
        await wait_for_etcd(client)
        await session.abandon()


async def test_session_survives_a_short_etcd_restart(own_etcd: EtcdServer) -> None:
    async with await EtcdClient.connect(own_etcd.client_config()) as client:
        session = await Session.open(client, ttl=5)
        before = session.last_keepalive
        own_etcd.restart()
        await wait_for_etcd(client)

        async def renewed() -> bool:
            return session.last_keepalive > before + 0.5

        await wait_until(renewed, within=10.0)
        assert session.is_alive
        await session.close()
