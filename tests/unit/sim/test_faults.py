"""What each fault of the simulated etcd looks like to the real client."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

from hubspoke.etcd import (
    Compare,
    Election,
    EtcdClient,
    EtcdConfig,
    EtcdError,
    EtcdTimeout,
    EtcdUnavailable,
    EtcdUncertain,
    Op,
    Session,
    watch_prefix,
)
from hubspoke.etcd.errors import EtcdNoSpace
from tests.sim.etcd import SimEtcd
from tests.sim.faults import Freeze, LeaderChange, Partition, ScheduledFault, random_schedule
from tests.sim.harness import simulate

FIXED: dict[str, Any] = {"latency": (0.001, 0.001)}  # every message takes exactly 1 ms


def now() -> float:
    return asyncio.get_running_loop().time()


def client(sim: SimEtcd, node: str, timeout: float = 2.0) -> EtcdClient:
    return sim.client(node, EtcdConfig(endpoints=("sim:2379",), request_timeout=timeout))


# -- frozen etcd (SIGSTOP) ---------------------------------------------------------------------


def test_a_frozen_etcd_answers_nothing_until_the_deadline() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        await etcd.put(b"/k", b"1")
        sim.freeze()
        started = now()
        for call in (etcd.get(b"/k"), etcd.status(), etcd.put(b"/k", b"2")):
            with pytest.raises(EtcdTimeout, match="DEADLINE_EXCEEDED"):
                await call
        assert now() - started == pytest.approx(6.0)
        assert sim.revision == 2  # nothing applied while frozen
        sim.thaw()
        await asyncio.sleep(0.01)
        kv = await etcd.get(b"/k")
        assert kv is not None and kv.value == b"2"  # applied though its client timed out
        await etcd.close()

    simulate(scenario, **FIXED)


def test_a_write_in_flight_when_etcd_freezes_is_applied_when_it_thaws() -> None:
    async def scenario(sim: SimEtcd) -> None:
        spoke, other = client(sim, "spoke"), client(sim, "other")
        guard = [Compare.create_revision(b"/lease/10.0.0.7", "=", 0)]
        commit = asyncio.create_task(spoke.txn(guard, [Op.put(b"/lease/10.0.0.7", b"client-a")]))
        await asyncio.sleep(0.0005)  # the request is on the wire
        sim.freeze()
        with pytest.raises(EtcdUncertain):
            await commit  # the spoke cannot know whether it committed
        assert sim.get(b"/lease/10.0.0.7") is None
        sim.thaw()
        await asyncio.sleep(0.01)
        kv = await other.get(b"/lease/10.0.0.7")
        assert kv is not None and kv.value == b"client-a"
        await spoke.close()
        await other.close()

    simulate(scenario, **FIXED)


def test_a_long_freeze_kills_streams_and_expires_sessions_at_thaw() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "spoke")
        session = await Session.open(etcd, ttl=3)
        await etcd.put(b"/member", b"m", lease=session.lease_id)
        sim.freeze()
        await session.wait_lost()  # keep-alives unanswered for a full TTL
        assert sim.get(b"/member") is not None  # a frozen etcd expires nothing
        await asyncio.sleep(20)
        sim.thaw()
        await asyncio.sleep(0.01)
        assert sim.get(b"/member") is None  # overdue: revoked first thing at thaw
        await session.abandon()
        await etcd.close()

    simulate(scenario, **FIXED)


# -- a process cut off etcd ----------------------------------------------------------------------


def test_refused_fails_at_once_and_only_for_that_process() -> None:
    async def scenario(sim: SimEtcd) -> None:
        cut, fine = client(sim, "cut"), client(sim, "fine")
        sim.partition("cut", "refused")
        started = now()
        with pytest.raises(EtcdUnavailable, match="Connection refused"):
            await cut.get(b"/k")
        assert now() - started < 0.01
        await fine.put(b"/k", b"v")
        sim.heal("cut")
        assert (await cut.get(b"/k")) is not None
        await cut.close()
        await fine.close()

    simulate(scenario, **FIXED)


@pytest.mark.parametrize(("cut_after", "applied"), [(0.0005, False), (0.0015, True)])
def test_a_reset_mid_call_loses_the_request_or_only_the_answer(
    cut_after: float, applied: bool
) -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        asyncio.get_running_loop().call_later(cut_after, sim.partition, "a", "refused")
        with pytest.raises(EtcdUnavailable, match="Socket closed"):
            await etcd.put(b"/k", b"v")
        assert (sim.get(b"/k") is not None) is applied
        await etcd.close()

    simulate(scenario, **FIXED)


def test_blackhole_times_out_and_delivers_what_it_held_when_healed() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        sim.partition("a", "blackhole")
        started = now()
        with pytest.raises(EtcdTimeout):
            await etcd.put(b"/k", b"held")
        assert now() - started == pytest.approx(2.0)
        assert sim.get(b"/k") is None
        sim.heal("a")
        await asyncio.sleep(0.01)
        kv = sim.get(b"/k")
        assert kv is not None and kv.value == b"held"  # the late write landed
        await etcd.close()

    simulate(scenario, **FIXED)


def test_blackhole_past_the_keepalive_timeout_drops_what_it_held() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        sim.partition("a", "blackhole")
        with pytest.raises(EtcdTimeout):
            await etcd.put(b"/k", b"held")
        await asyncio.sleep(20)  # the connection is declared dead at 15 s
        sim.heal("a")
        await asyncio.sleep(0.01)
        assert sim.get(b"/k") is None
        await etcd.close()

    simulate(scenario, **FIXED)


# -- quorum lost -----------------------------------------------------------------------------------


def test_without_quorum_reads_and_writes_hang_and_leases_do_not_expire() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        lease = await etcd.lease_grant(2)
        await etcd.put(b"/member", b"m", lease=lease.id)
        sim.lose_quorum()
        with pytest.raises(EtcdTimeout):
            await etcd.get(b"/member")
        with pytest.raises(EtcdTimeout):
            await etcd.put(b"/late", b"x")
        assert (await etcd.status()).leader == 0  # Status is answered locally
        await asyncio.sleep(10)
        assert sim.get(b"/member") is not None
        sim.restore_quorum()
        await asyncio.sleep(1.5)  # the new leader renewed the lease by its TTL
        assert (await etcd.get(b"/member")) is not None
        await asyncio.sleep(1)
        assert (await etcd.get(b"/member")) is None
        assert sim.get(b"/late") is None  # its client gave up: dropped
        await etcd.close()

    simulate(scenario, **FIXED)


def test_without_lease_renewal_overdue_leases_expire_when_quorum_returns() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        lease = await etcd.lease_grant(2)
        await etcd.put(b"/member", b"m", lease=lease.id)
        sim.lose_quorum(late_writes=True)
        with pytest.raises(EtcdTimeout):
            await etcd.put(b"/late", b"x")
        await asyncio.sleep(5)
        sim.restore_quorum()
        assert sim.get(b"/member") is None
        await asyncio.sleep(0.01)
        assert sim.get(b"/late") is not None  # late_writes: applied after all
        await etcd.close()

    simulate(scenario, renew_leases=False, **FIXED)


def test_without_quorum_keepalives_go_unanswered_and_a_waiting_write_completes() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a", timeout=30.0)
        session = await Session.open(etcd, ttl=3)
        sim.lose_quorum()
        write = asyncio.create_task(etcd.put(b"/k", b"v"))
        await session.wait_lost()
        assert not write.done()
        sim.restore_quorum()
        result = await write
        assert result.revision == sim.revision
        await session.abandon()
        await etcd.close()

    simulate(scenario, **FIXED)


# -- NOSPACE -------------------------------------------------------------------------------------


def test_nospace_refuses_puts_and_grants_but_not_reads_deletes_or_keepalives() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        session = await Session.open(etcd, ttl=2)
        await etcd.put(b"/k", b"1")
        sim.raise_nospace()
        full = "RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded"
        with pytest.raises(EtcdNoSpace, match=full):
            await etcd.put(b"/k", b"2")
        with pytest.raises(EtcdNoSpace, match=full):  # a put in either branch is enough
            await etcd.txn([], [Op.get(b"/k")], [Op.put(b"/k", b"2")])
        with pytest.raises(EtcdNoSpace, match=full):
            await etcd.lease_grant(5)
        # the election service relays its inner put's refusal as UNKNOWN, not as NOSPACE
        with pytest.raises(EtcdError, match="UNKNOWN: etcdserver: mvcc: database space"):
            await Election(etcd, b"/e").campaign(session.lease_id, b"v")
        assert (await etcd.get(b"/k")) is not None
        assert (await etcd.txn([], [Op.delete(b"/k")])).succeeded
        assert any("NOSPACE" in e for e in (await etcd.status()).errors)
        await asyncio.sleep(10)
        assert session.is_alive
        sim.disarm_nospace()
        await etcd.put(b"/k", b"3")
        await session.close()
        await etcd.close()

    simulate(scenario, **FIXED)


# -- leader change -------------------------------------------------------------------------------


def test_a_leader_change_fails_calls_in_flight_and_renews_leases() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        lease = await etcd.lease_grant(3)
        await asyncio.sleep(2.5)
        write = asyncio.create_task(etcd.put(b"/k", b"v"))
        await asyncio.sleep(0.0005)
        sim.leader_change()
        with pytest.raises(EtcdUnavailable, match="leader changed"):
            await write
        await asyncio.sleep(0.01)
        assert sim.get(b"/k") is not None  # it was on its way: applied all the same
        ttl = await etcd.lease_time_to_live(lease.id)
        assert ttl.ttl == 2  # renewed to 3 s a moment ago
        await etcd.close()

    simulate(scenario, **FIXED)


def test_a_leader_change_spares_waiting_campaigns_and_may_break_streams() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = client(sim, "a")
        election = Election(etcd, b"/e")
        first, second = await Session.open(etcd), await Session.open(etcd)
        won = await election.campaign(first.lease_id, b"first")
        queued = asyncio.create_task(election.campaign(second.lease_id, b"second"))
        seen: list[int] = []

        async def follow() -> None:
            async for batch in watch_prefix(etcd, b"/w/", 1):
                seen.extend(e.kv.mod_revision for e in batch.events)

        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0.1)
        sim.leader_change(break_streams=True)
        await etcd.put(b"/w/a", b"1")
        await asyncio.sleep(1)
        assert not queued.done()
        await election.resign(won)
        assert (await queued).epoch > won.epoch
        assert seen == [sim.get(b"/w/a").mod_revision]  # type: ignore[union-attr]
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await first.close()
        await second.close()
        await etcd.close()

    simulate(scenario, **FIXED)


# -- schedules ----------------------------------------------------------------------------------


def test_a_schedule_injects_each_fault_for_its_duration() -> None:
    async def scenario(sim: SimEtcd) -> list[float]:
        etcd = client(sim, "a", timeout=10.0)
        sim.schedule(
            [
                ScheduledFault(1.0, Freeze(2.0)),
                ScheduledFault(5.0, Partition("a", "refused", 1.0)),
                ScheduledFault(7.0, LeaderChange()),
            ]
        )
        start = now()
        done: list[float] = []
        await asyncio.sleep(1.5)
        await etcd.put(b"/k", b"1")  # waits for the thaw at 3.0
        done.append(round(now() - start, 3))
        await asyncio.sleep(5.5 - (now() - start))
        with pytest.raises(EtcdUnavailable):
            await etcd.get(b"/k")
        await asyncio.sleep(1.0)
        await etcd.get(b"/k")
        done.append(round(now() - start, 3))
        await asyncio.sleep(1.0)
        await etcd.close()
        assert [line.split(" ", 1)[1] for line in sim.trace if "@" not in line] == [
            "freeze",
            "thaw",
            "partition a refused",
            "heal a",
            "leader change",
        ]
        return done

    assert simulate(scenario, **FIXED) == [3.001, 6.503]


def test_random_schedules_are_plain_data_drawn_from_the_seed() -> None:
    def draw(seed: int) -> tuple[ScheduledFault, ...]:
        return random_schedule(random.Random(seed), ["a", "b"], horizon=300.0)

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    kinds = {type(f.fault).__name__ for seed in range(20) for f in draw(seed)}
    assert kinds == {"Freeze", "Partition", "QuorumLoss", "NoSpace", "LeaderChange", "Compaction"}
