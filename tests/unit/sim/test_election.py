"""The real `Election` against the simulated v3election service: order, resign, expiry, observe."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from hubspoke.etcd import Election, EtcdError, Leader, Session
from tests.sim.etcd import SimEtcd
from tests.sim.harness import simulate


def test_no_leader_then_campaign_proclaim_resign() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("hub")
        election = Election(etcd, b"/hub/election")
        assert await election.leader() is None
        session = await Session.open(etcd, ttl=5)
        won = await election.campaign(session.lease_id, b"hub-a:50051")
        assert won.key == b"/hub/election/" + format(session.lease_id, "x").encode()
        assert won.lease == session.lease_id
        leader = await election.leader()
        assert leader == Leader(key=won.key, value=b"hub-a:50051", epoch=won.epoch, lease=won.lease)
        kv = await etcd.get(won.key)
        assert kv is not None and kv.create_revision == won.epoch
        await election.proclaim(won, b"hub-a:50052")
        proclaimed = await election.leader()
        assert proclaimed is not None
        assert (proclaimed.value, proclaimed.epoch) == (b"hub-a:50052", won.epoch)
        again = await election.campaign(session.lease_id, b"hub-a:50053")  # same lease: same key
        assert (again.key, again.epoch) == (won.key, won.epoch)
        assert (await etcd.get(won.key)) is not None
        await election.resign(won)
        assert await election.leader() is None
        with pytest.raises(EtcdError, match="not leader"):
            await election.proclaim(won, b"late")
        await session.close()
        await etcd.close()

    simulate(scenario)


def test_lowest_create_revision_leads_in_queue_order() -> None:
    async def scenario(sim: SimEtcd) -> None:
        clients = [sim.client(f"n{i}") for i in range(3)]
        sessions = [await Session.open(c, ttl=3) for c in clients]
        elections = [Election(c, b"/e") for c in clients]
        order: list[int] = []

        async def run_for(i: int) -> None:
            won = await elections[i].campaign(sessions[i].lease_id, b"n%d" % i)
            order.append(i)
            await asyncio.sleep(1)
            await elections[i].resign(won)

        async with asyncio.TaskGroup() as tg:
            for i in (2, 0, 1):
                tg.create_task(run_for(i))
                await asyncio.sleep(0.1)  # queue in this order
            await asyncio.sleep(0.5)
            candidates = await elections[0].candidates()
            assert [c.value for c in candidates] == [b"n2", b"n0", b"n1"]
        assert order == [2, 0, 1]
        for session, client in zip(sessions, clients, strict=True):
            await session.close()
            await client.close()

    simulate(scenario)


def test_the_next_campaigner_leads_when_the_leaders_session_expires() -> None:
    async def scenario(sim: SimEtcd) -> None:
        a, b = sim.client("a"), sim.client("b")
        election_a, election_b = Election(a, b"/e"), Election(b, b"/e")
        first, second = await Session.open(a, ttl=2), await Session.open(b, ttl=2)
        observed: list[Leader] = []

        async def observe() -> None:
            async for leader in election_b.observe():
                observed.append(leader)

        first_won = await election_a.campaign(first.lease_id, b"first")
        observer = asyncio.create_task(observe())
        waiting = asyncio.create_task(election_b.campaign(second.lease_id, b"second"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await first.abandon()
        loop = asyncio.get_running_loop()
        abandoned = loop.time()
        second_won = await asyncio.wait_for(waiting, 15.0)
        assert 1.0 < loop.time() - abandoned <= 2.1
        assert second_won.epoch > first_won.epoch
        await election_b.proclaim(second_won, b"second, again")
        await asyncio.sleep(0.1)
        assert [o.value for o in observed] == [b"first", b"second", b"second, again"]
        observer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
        await second.close()
        await a.close()
        await b.close()

    simulate(scenario)


def test_a_cancelled_campaign_gives_its_place_up() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        election = Election(etcd, b"/e")
        leader_session, queued_session = await Session.open(etcd), await Session.open(etcd)
        await election.campaign(leader_session.lease_id, b"leader")
        queued = asyncio.create_task(election.campaign(queued_session.lease_id, b"queued"))
        await asyncio.sleep(0.1)
        assert len(await election.candidates()) == 2
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued
        await asyncio.sleep(0.1)
        assert [c.value for c in await election.candidates()] == [b"leader"]
        await leader_session.close()
        await queued_session.close()
        await etcd.close()

    simulate(scenario)


def test_a_campaign_with_a_lease_that_is_gone_fails() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        with pytest.raises(EtcdError, match="UNKNOWN: etcdserver: requested lease not found"):
            await Election(etcd, b"/e").campaign(999, b"v")
        await etcd.close()

    simulate(scenario)
