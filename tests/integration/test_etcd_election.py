"""Leader election through etcd's v3election service, driven by hubspoke.etcd sessions."""

from __future__ import annotations

import asyncio
import contextlib

from hubspoke.etcd import Election, EtcdClient, Leader, Session


async def test_no_leader_then_campaign_proclaim_resign(etcd: EtcdClient, key_prefix: bytes) -> None:
    election = Election(etcd, key_prefix + b"election/")
    assert await election.leader() is None
    session = await Session.open(etcd, ttl=5)
    try:
        won = await election.campaign(session.lease_id, b"hub-a:50051")
        assert won.lease == session.lease_id
        leader = await election.leader()
        assert leader == Leader(key=won.key, value=b"hub-a:50051", epoch=won.epoch, lease=won.lease)
        kv = await etcd.get(won.key)
        assert kv is not None
        assert kv.create_revision == won.epoch  # the epoch is the key's create revision
        await election.proclaim(won, b"hub-a:50052")
        proclaimed = await election.leader()
        assert proclaimed is not None
        assert (proclaimed.value, proclaimed.epoch) == (b"hub-a:50052", won.epoch)
        await election.resign(won)
        assert await election.leader() is None
    finally:
        await session.close()


async def test_second_campaigner_wins_when_first_session_dies(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    election = Election(etcd, key_prefix + b"election/")
    first = await Session.open(etcd, ttl=2)
    second = await Session.open(etcd, ttl=2)
    observed: list[Leader] = []

    async def observe() -> None:
        async for leader in election.observe():
            observed.append(leader)

    observer: asyncio.Task[None] | None = None
    try:
        first_won = await election.campaign(first.lease_id, b"first")
        observer = asyncio.create_task(observe())
        waiting = asyncio.create_task(election.campaign(second.lease_id, b"second"))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the first still leads
        await first.abandon()  # keep-alives stop: the first's lease expires within its TTL
        second_won = await asyncio.wait_for(waiting, 15.0)
        assert second_won.epoch > first_won.epoch
        leader = await election.leader()
        assert leader is not None
        assert (leader.value, leader.epoch) == (b"second", second_won.epoch)
        await asyncio.sleep(0.2)
        assert [o.value for o in observed] == [b"first", b"second"]
    finally:
        if observer is not None:
            observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await observer
        await second.close()
        await first.close()
