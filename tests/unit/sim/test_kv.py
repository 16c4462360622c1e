"""KV and transaction semantics of the simulated etcd, through the real EtcdClient."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hubspoke.etcd import (
    Compare,
    EtcdCompacted,
    EtcdError,
    EtcdFutureRevision,
    EtcdLeaseNotFound,
    EtcdRequestError,
    Op,
    PutResult,
    RangeResult,
    SortOrder,
    SortTarget,
)
from tests.sim.etcd import SimEtcd
from tests.sim.harness import simulate

BuildCompare = Callable[[bytes, int, int], Compare]


def test_put_get_prev_kv_and_versions() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        first = await etcd.put(b"/a", b"1")
        assert (first.revision, first.prev_kv) == (2, None)
        second = await etcd.put(b"/a", b"2", prev_kv=True)
        assert second.revision == 3
        assert second.prev_kv is not None and second.prev_kv.value == b"1"
        kv = await etcd.get(b"/a")
        assert kv is not None
        assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (b"2", 2, 2, 3)
        assert await etcd.get(b"/missing") is None
        old = await etcd.get(b"/a", revision=2)
        assert old is not None and old.value == b"1"
        await etcd.close()

    simulate(scenario)


def test_range_limit_revision_keys_only_count_only_sort() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        revisions = [(await etcd.put(b"/p/k%d" % i, b"v%d" % i)).revision for i in range(5)]
        await etcd.put(b"/p/k0", b"changed")

        limited = await etcd.range_prefix(b"/p/", limit=2)
        assert [kv.key for kv in limited.kvs] == [b"/p/k0", b"/p/k1"]
        assert (limited.more, limited.count, limited.revision) == (True, 5, 7)

        old = await etcd.range_prefix(b"/p/", revision=revisions[2])
        assert [kv.key for kv in old.kvs] == [b"/p/k0", b"/p/k1", b"/p/k2"]
        assert old.kvs[0].value == b"v0"
        assert old.revision == 7  # the header says the current revision

        keys = await etcd.range_prefix(b"/p/", keys_only=True)
        assert all(kv.value == b"" for kv in keys.kvs) and len(keys.kvs) == 5

        counted = await etcd.range(b"/p/", b"/p/\xff", count_only=True)
        assert (counted.count, counted.kvs, counted.more) == (5, (), False)

        by_mod = await etcd.range(
            b"/p/", b"/p/\xff", sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD, limit=1
        )
        assert by_mod.kvs[0].key == b"/p/k0"
        everything = await etcd.range(b"\0", b"\0")
        assert everything.count == 5
        await etcd.close()

    simulate(scenario)


def test_range_prefix_all_paginates_at_one_revision() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        for i in range(23):
            await etcd.put(b"/p/%03d" % i, b"x")
        pinned = sim.revision
        await etcd.put(b"/p/999", b"after")
        kvs, revision = await etcd.range_prefix_all(b"/p/", page_size=5, revision=pinned)
        assert revision == pinned
        assert [kv.key for kv in kvs] == [b"/p/%03d" % i for i in range(23)]
        latest, latest_revision = await etcd.range_prefix_all(b"/p/", page_size=4)
        assert (len(latest), latest_revision) == (24, pinned + 1)
        await etcd.close()

    simulate(scenario)


# each compare kind once holding, once not, against a key written twice (value b"two",
# version 2, create revision C, mod revision M): the same table as the real etcd's test
COMPARES: list[tuple[str, BuildCompare, bool]] = [
    ("value =", lambda k, c, m: Compare.value(k, "=", b"two"), True),
    ("value !=", lambda k, c, m: Compare.value(k, "!=", b"two"), False),
    ("value >", lambda k, c, m: Compare.value(k, ">", b"tw"), True),
    ("version =", lambda k, c, m: Compare.version(k, "=", 2), True),
    ("version >", lambda k, c, m: Compare.version(k, ">", 2), False),
    ("create =", lambda k, c, m: Compare.create_revision(k, "=", c), True),
    ("create = 0", lambda k, c, m: Compare.create_revision(k, "=", 0), False),
    ("mod =", lambda k, c, m: Compare.mod_revision(k, "=", m), True),
    ("mod <", lambda k, c, m: Compare.mod_revision(k, "<", m), False),
    ("mod >", lambda k, c, m: Compare.mod_revision(k, ">", c), True),
    ("missing create = 0", lambda k, c, m: Compare.create_revision(k + b"x", "=", 0), True),
    ("missing mod < 1", lambda k, c, m: Compare.mod_revision(k + b"x", "<", 1), True),
    ("missing value !=", lambda k, c, m: Compare.value(k + b"x", "!=", b"two"), False),
]


@pytest.mark.parametrize(("label", "build", "holds"), COMPARES, ids=[c[0] for c in COMPARES])
def test_txn_compare_kinds(label: str, build: BuildCompare, holds: bool) -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        created = await etcd.put(b"/k", b"one")
        modified = await etcd.put(b"/k", b"two")
        result = await etcd.txn(
            [build(b"/k", created.revision, modified.revision)],
            [Op.put(b"/won", b"yes"), Op.get(b"/k")],
            [Op.get(b"/k"), Op.delete(b"/nothing")],
        )
        assert result.succeeded is holds
        assert result.revision == modified.revision + (1 if holds else 0)
        assert (await etcd.get(b"/won") is not None) is holds
        read = result.responses[1] if holds else result.responses[0]
        assert isinstance(read, RangeResult) and read.kvs[0].value == b"two"
        await etcd.close()

    simulate(scenario)


def test_txn_reads_see_its_own_writes_with_the_revision_reached() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        result = await etcd.txn(
            [Compare.create_revision(b"/a", "=", 0)],
            [Op.get(b"/a"), Op.put(b"/a", b"1"), Op.get(b"/a"), Op.delete(b"/zz")],
        )
        before, put, after, _ = result.responses
        assert isinstance(before, RangeResult) and (before.kvs, before.revision) == ((), 1)
        assert isinstance(put, PutResult) and put.revision == 2
        assert isinstance(after, RangeResult) and after.kvs[0].mod_revision == 2
        assert after.revision == 2
        assert result.revision == 2
        nothing = await etcd.txn([], [Op.delete(b"/zz"), Op.get(b"/a")])
        assert nothing.revision == 2  # deleting nothing writes no revision
        await etcd.close()

    simulate(scenario)


def test_txn_create_if_absent_is_exclusive() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        guard = [Compare.create_revision(b"/binding", "=", 0)]
        first = await etcd.txn(guard, [Op.put(b"/binding", b"client-a")])
        second = await etcd.txn(guard, [Op.put(b"/binding", b"client-b")], [Op.get(b"/binding")])
        assert first.succeeded and not second.succeeded
        winner = second.responses[0]
        assert isinstance(winner, RangeResult) and winner.kvs[0].value == b"client-a"
        await etcd.close()

    simulate(scenario)


def test_refused_requests() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        with pytest.raises(EtcdRequestError, match="too many operations"):
            await etcd.txn([], [Op.put(b"/%d" % i, b"x") for i in range(129)])
        with pytest.raises(EtcdRequestError, match="duplicate key"):
            await etcd.txn([], [Op.put(b"/q", b"1"), Op.put(b"/q", b"2")])
        with pytest.raises(EtcdRequestError, match="duplicate key"):
            await etcd.txn([], [Op.delete(b"/q", range_end=b"/r"), Op.put(b"/q1", b"2")])
        with pytest.raises(EtcdRequestError, match="key is not provided"):
            await etcd.put(b"", b"x")
        with pytest.raises(EtcdLeaseNotFound):
            await etcd.put(b"/x", b"y", lease=12345)
        with pytest.raises(EtcdLeaseNotFound):  # the branch taken is checked before any write
            await etcd.txn([], [Op.put(b"/ok", b"1"), Op.put(b"/x", b"y", lease=12345)])
        assert await etcd.get(b"/ok") is None
        assert sim.revision == 1
        with pytest.raises(EtcdFutureRevision):
            await etcd.get(b"/x", revision=99)
        await etcd.close()

    simulate(scenario)


def test_delete_prev_kvs_and_counts() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        for key in (b"/d/1", b"/d/2", b"/e"):
            await etcd.put(key, b"v" + key)
        gone = await etcd.delete_prefix(b"/d/", prev_kv=True)
        assert (gone.deleted, [kv.key for kv in gone.prev_kvs], gone.revision) == (
            2,
            [b"/d/1", b"/d/2"],
            5,
        )
        again = await etcd.delete(b"/d/1")
        assert (again.deleted, again.revision) == (0, 5)
        recreated = await etcd.put(b"/d/1", b"new")
        kv = await etcd.get(b"/d/1")
        assert kv is not None and (kv.create_revision, kv.version) == (recreated.revision, 1)
        await etcd.close()

    simulate(scenario)


def test_compaction() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        old = await etcd.put(b"/c", b"1")
        await etcd.put(b"/gone", b"x")
        await etcd.delete(b"/gone")
        latest = await etcd.put(b"/c", b"2")
        await etcd.compact(latest.revision - 1)
        with pytest.raises(EtcdCompacted):
            await etcd.get(b"/c", revision=old.revision)
        at = await etcd.get(b"/c", revision=latest.revision - 1)  # the compact revision reads
        assert at is not None and at.value == b"1"
        with pytest.raises(EtcdCompacted):
            await etcd.compact(latest.revision - 1)
        with pytest.raises(EtcdFutureRevision):
            await etcd.compact(latest.revision + 1)
        await etcd.close()

    simulate(scenario)


def test_status() -> None:
    async def scenario(sim: SimEtcd) -> None:
        etcd = sim.client("a")
        await etcd.put(b"/a", b"1")
        status = await etcd.status()
        assert status.version == "3.4.23"
        assert status.leader == status.member_id != 0
        assert (status.revision, status.errors) == (2, ())
        await etcd.close()
        with pytest.raises(EtcdError):
            await etcd.status()

    simulate(scenario)
