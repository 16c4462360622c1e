"""KV, transaction and maintenance calls of hubspoke.etcd.EtcdClient against a real etcd."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hubspoke.etcd import (
    Compare,
    EtcdClient,
    EtcdCompacted,
    EtcdConfig,
    EtcdRequestError,
    EtcdUnavailable,
    EtcdUncertain,
    Op,
    PutResult,
    RangeResult,
    SortOrder,
    SortTarget,
)
from tests.lab.etcd import EtcdServer, free_port

BuildCompare = Callable[[bytes, int, int], Compare]


async def test_put_get_and_prev_kv(etcd: EtcdClient, key_prefix: bytes) -> None:
    key = key_prefix + b"a"
    first = await etcd.put(key, b"1")
    assert first.prev_kv is None
    second = await etcd.put(key, b"2", prev_kv=True)
    assert second.prev_kv is not None
    assert second.prev_kv.value == b"1"
    assert second.revision == first.revision + 1
    kv = await etcd.get(key)
    assert kv is not None
    assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (
        b"2",
        2,
        first.revision,
        second.revision,
    )
    assert await etcd.get(key_prefix + b"missing") is None


async def test_range_limit_revision_keys_only_count_only_sort(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    revisions = [(await etcd.put(key_prefix + b"k%d" % i, b"v%d" % i)).revision for i in range(5)]
    await etcd.put(key_prefix + b"k0", b"changed")

    limited = await etcd.range_prefix(key_prefix, limit=2)
    assert [kv.key for kv in limited.kvs] == [key_prefix + b"k0", key_prefix + b"k1"]
    assert limited.more
    assert limited.count == 5

    old = await etcd.range_prefix(key_prefix, revision=revisions[2])
    assert [kv.key for kv in old.kvs] == [key_prefix + b"k%d" % i for i in range(3)]
    assert old.kvs[0].value == b"v0"

    keys = await etcd.range_prefix(key_prefix, keys_only=True)
    assert all(kv.value == b"" for kv in keys.kvs)
    assert len(keys.kvs) == 5

    counted = await etcd.range(key_prefix, key_prefix + b"\xff", count_only=True)
    assert counted.count == 5
    assert counted.kvs == ()

    by_mod = await etcd.range(
        key_prefix,
        key_prefix + b"\xff",
        sort_order=SortOrder.DESCEND,
        sort_target=SortTarget.MOD,
        limit=1,
    )
    assert by_mod.kvs[0].key == key_prefix + b"k0"


async def test_range_prefix_all_paginates_at_one_revision(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    for i in range(23):
        await etcd.put(key_prefix + b"%03d" % i, b"x")
    snapshot_revision = (await etcd.status()).revision
    await etcd.put(key_prefix + b"999", b"after")  # not in the pinned snapshot
    kvs, revision = await etcd.range_prefix_all(key_prefix, page_size=5, revision=snapshot_revision)
    assert revision == snapshot_revision
    assert [kv.key for kv in kvs] == [key_prefix + b"%03d" % i for i in range(23)]
    latest, latest_revision = await etcd.range_prefix_all(key_prefix, page_size=4)
    assert len(latest) == 24
    assert latest_revision > snapshot_revision


async def test_put_with_lease_and_delete(etcd: EtcdClient, key_prefix: bytes) -> None:
    lease = await etcd.lease_grant(30)
    await etcd.put(key_prefix + b"leased", b"v", lease=lease.id)
    kv = await etcd.get(key_prefix + b"leased")
    assert kv is not None
    assert kv.lease == lease.id
    ttl = await etcd.lease_time_to_live(lease.id, keys=True)
    assert ttl.keys == (key_prefix + b"leased",)
    await etcd.put(key_prefix + b"other", b"w")
    deleted = await etcd.delete(key_prefix + b"other", prev_kv=True)
    assert deleted.deleted == 1
    assert deleted.prev_kvs[0].value == b"w"
    everything = await etcd.delete_prefix(key_prefix)
    assert everything.deleted == 1
    assert (await etcd.range_prefix(key_prefix)).count == 0
    await etcd.lease_revoke(lease.id)


# (label, compare builder, holds): each compare kind once succeeding, once failing, against key "k"
# written twice: value b"two", version 2, create revision C, mod revision M.
COMPARES: list[tuple[str, BuildCompare, bool]] = [
    ("value =", lambda k, c, m: Compare.value(k, "=", b"two"), True),
    ("value !=", lambda k, c, m: Compare.value(k, "!=", b"two"), False),
    ("version =", lambda k, c, m: Compare.version(k, "=", 2), True),
    ("version >", lambda k, c, m: Compare.version(k, ">", 2), False),
    ("create =", lambda k, c, m: Compare.create_revision(k, "=", c), True),
    ("create = 0", lambda k, c, m: Compare.create_revision(k, "=", 0), False),
    ("mod =", lambda k, c, m: Compare.mod_revision(k, "=", m), True),
    ("mod <", lambda k, c, m: Compare.mod_revision(k, "<", m), False),
    ("mod >", lambda k, c, m: Compare.mod_revision(k, ">", c), True),
]


@pytest.mark.parametrize(("label", "build", "holds"), COMPARES, ids=[c[0] for c in COMPARES])
async def test_txn_compare_kinds(
    etcd: EtcdClient, key_prefix: bytes, label: str, build: BuildCompare, holds: bool
) -> None:
    key = key_prefix + b"k"
    created = await etcd.put(key, b"one")
    modified = await etcd.put(key, b"two")
    compare = build(key, created.revision, modified.revision)
    result = await etcd.txn(
        [compare],
        [Op.put(key_prefix + b"won", b"yes"), Op.get(key)],
        [Op.get(key), Op.delete(key_prefix + b"nothing")],
    )
    assert result.succeeded is holds
    if holds:
        assert isinstance(result.responses[0], PutResult)
        assert result.revision == modified.revision + 1
        assert await etcd.get(key_prefix + b"won") is not None
    else:
        assert result.revision == modified.revision
        assert await etcd.get(key_prefix + b"won") is None
    read = result.responses[1] if holds else result.responses[0]
    assert isinstance(read, RangeResult)
    assert read.kvs[0].value == b"two"


async def test_txn_create_if_absent_is_exclusive(etcd: EtcdClient, key_prefix: bytes) -> None:
    key = key_prefix + b"binding"
    guard = [Compare.create_revision(key, "=", 0)]
    first = await etcd.txn(guard, [Op.put(key, b"client-a")])
    second = await etcd.txn(guard, [Op.put(key, b"client-b")], [Op.get(key)])
    assert first.succeeded
    assert not second.succeeded
    winner = second.responses[0]
    assert isinstance(winner, RangeResult)
    assert winner.kvs[0].value == b"client-a"


async def test_txn_over_limit_is_our_fault(etcd: EtcdClient, key_prefix: bytes) -> None:
    too_many = [Op.put(key_prefix + b"%d" % i, b"x") for i in range(129)]
    with pytest.raises(EtcdRequestError):
        await etcd.txn([], too_many)


async def test_status(etcd: EtcdClient) -> None:
    status = await etcd.status()
    assert status.version == "3.4.23"
    assert status.leader == status.member_id != 0
    assert status.revision > 0
    assert status.errors == ()


async def test_range_at_compacted_revision(etcd: EtcdClient, key_prefix: bytes) -> None:
    old = await etcd.put(key_prefix + b"c", b"1")
    latest = await etcd.put(key_prefix + b"c", b"2")
    await etcd.compact(latest.revision)
    with pytest.raises(EtcdCompacted):
        await etcd.range_prefix(key_prefix, revision=old.revision)


async def test_unreachable_etcd_is_uncertain() -> None:
    config = EtcdConfig(endpoints=(f"127.0.0.1:{free_port()}",), request_timeout=2.0)
    async with EtcdClient(config) as client:
        with pytest.raises(EtcdUnavailable):
            await client.get(b"/x")
        with pytest.raises(EtcdUncertain):
            await client.put(b"/x", b"y")


async def test_reads_fail_over_to_the_next_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    config = EtcdConfig(endpoints=(dead, etcd_server.endpoint), request_timeout=2.0)
    async with EtcdClient(config) as client:
        status = await client.status()
        assert status.version == "3.4.23"
