"""LeaseStore against a real etcd: block claims, the commit rule, the watch-fed replica."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from ipaddress import IPv4Address
from typing import Any

import pytest

from hubspoke.blocks import cut_blocks
from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys, prefix_end
from hubspoke.model import BindingState
from hubspoke.values import decode_binding, decode_block_owner, encode_binding
from spoke.dhcp.decisions import BindingWrite
from spoke.leases import store as store_module
from spoke.leases.batch import CommitQueue
from spoke.leases.store import Committed, Conflict, LeaseStore
from spoke.leases.table import BindingTable
from tests.lab.etcd import wait_until
from tests.lab.leasestore import IP, SCOPE, binding, store_for


async def test_new_allocation_commits_once_then_conflicts(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    store = await store_for(etcd, key_prefix)
    block, fence = store.table.owned_block("lan", IP) or (None, 0)
    assert block is not None
    first = await store.commit(BindingWrite("lan", IP, binding(b"\x01a"), None, (block, fence)))
    assert isinstance(first, Committed)
    assert first.version.create_revision == first.version.mod_revision > 0
    # A second "never used" commit for the same address must fail: someone acted first.
    second = await store.commit(BindingWrite("lan", IP, binding(b"\x01b"), None, (block, fence)))
    assert isinstance(second, Conflict)
    assert second.current is not None
    assert second.current[0].client_key == b"\x01a"
    # Extending with the right revision succeeds; with a stale one it fails.
    ok = await store.commit(BindingWrite("lan", IP, binding(b"\x01a"), first.version, None))
    assert isinstance(ok, Committed)
    stale = await store.commit(BindingWrite("lan", IP, binding(b"\x01a"), first.version, None))
    assert isinstance(stale, Conflict)


async def test_a_moved_block_fences_off_new_allocations(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    store = await store_for(etcd, key_prefix)
    block, fence = store.table.owned_block("lan", IP) or (None, 0)
    assert block is not None
    keys = Keys(key_prefix.decode().rstrip("/"))
    await etcd.put(keys.block("lan", block.block_id), b'{"v":1,"owner":"spoke-2"}')
    out = await store.commit(BindingWrite("lan", IP, binding(b"\x01a"), None, (block, fence)))
    assert isinstance(out, Conflict)
    assert out.fence_lost
    assert await etcd.get(keys.lease("lan", IP)) is None


async def test_claims_keep_the_fence_of_blocks_already_ours(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    store = await store_for(etcd, key_prefix)
    again = await store_for(etcd, key_prefix)
    for block in cut_blocks(SCOPE):
        assert store.table.owned_block("lan", block.first) == again.table.owned_block(
            "lan", block.first
        )


async def test_the_replica_follows_writes_made_elsewhere(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    store = await store_for(etcd, key_prefix)
    keys = Keys(key_prefix.decode().rstrip("/"))
    follower = asyncio.create_task(store.follow())
    try:
        other = binding(b"\x01z", node="spoke-2", ip=IPv4Address("10.9.0.30"))
        await etcd.put(keys.lease("lan", other.ip), encode_binding(other))
        await etcd.put(keys.lease("lan", IPv4Address("10.9.0.31")), b"not json")

        async def seen() -> bool:
            return store.table.get("lan", other.ip) is not None

        await wait_until(seen, within=10)
        held = store.table.get("lan", other.ip)
        assert held is not None and held[0] == other
        assert store.table.get("lan", IPv4Address("10.9.0.31")) is None
        await etcd.delete(keys.lease("lan", other.ip))

        async def gone() -> bool:
            return store.table.get("lan", other.ip) is None

        await wait_until(gone, within=10)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_load_reads_every_binding_at_one_revision(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    keys = Keys(key_prefix.decode().rstrip("/"))
    for i in range(30):
        b = binding(bytes([1, i]), ip=IPv4Address(f"10.9.0.{50 + i}"))
        await etcd.put(keys.lease("lan", b.ip), encode_binding(b))
    store = await store_for(etcd, key_prefix)
    assert store.table.count_by_state("lan")[BindingState.BOUND] == 30
    assert store.revision > 0


async def test_commits_arriving_together_share_one_transaction(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    store = await store_for(etcd, key_prefix)
    queue = CommitQueue(store, max_batch=16, max_inflight=1)
    runner = asyncio.create_task(queue.run())
    try:
        writes = []
        for i in range(40):
            ip = IPv4Address(f"10.9.0.{100 + i}")
            owned = store.table.owned_block("lan", ip)
            assert owned is not None
            writes.append(BindingWrite("lan", ip, binding(bytes([1, i]), ip=ip), None, owned))
        outcomes = await asyncio.gather(*(queue.commit(w) for w in writes))
        assert all(isinstance(o, Committed) for o in outcomes)
        assert queue.batched == 40 and queue.transactions < 40  # they did share
        keys = Keys(key_prefix.decode().rstrip("/"))
        for w in writes:
            kv = await etcd.get(keys.lease("lan", w.ip))
            assert kv is not None and decode_binding(kv.value) == w.binding
        # One conflicting write in a batch: it alone fails, the others commit.
        taken = IPv4Address("10.9.0.100")
        fresh = [IPv4Address("10.9.0.150"), IPv4Address("10.9.0.151")]
        batch = [
            BindingWrite("lan", taken, binding(b"\x01x", ip=taken), None, None),
            *(
                BindingWrite("lan", ip, binding(b"\x01y" + bytes([n]), ip=ip), None, None)
                for n, ip in enumerate(fresh)
            ),
        ]
        results = await store.commit_many(batch)
        assert isinstance(results[0], Conflict)
        assert results[0].current is not None and results[0].current[0].client_key == bytes([1, 0])
        assert all(isinstance(r, Committed) for r in results[1:])
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_load_pages_at_the_first_pages_revision(
    etcd: EtcdClient, key_prefix: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replica is etcd at one revision R, read in pages, then the watch from R + 1: a write
    landing between two pages is not in the load and comes by the watch."""
    monkeypatch.setattr(store_module, "LOAD_PAGE", 7)
    monkeypatch.setattr(store_module, "APPLY_SLICE", 3)
    keys = Keys(key_prefix.decode().rstrip("/"))
    for i in range(30):
        b = binding(bytes([1, i]), ip=IPv4Address(f"10.9.0.{50 + i}"))
        await etcd.put(keys.lease("lan", b.ip), encode_binding(b))
    store = LeaseStore(etcd, keys, BindingTable(), "spoke-1")
    await store.claim_all_blocks([SCOPE])
    late = binding(b"\x01late", ip=IPv4Address("10.9.0.150"))
    real_range = etcd.range
    pages: list[int] = []

    async def range_then_write(*args: Any, **kw: Any) -> Any:
        page = await real_range(*args, **kw)
        pages.append(kw.get("revision", 0) or page.revision)
        if len(pages) == 1:
            await etcd.put(keys.lease("lan", late.ip), encode_binding(late))
        return page

    monkeypatch.setattr(etcd, "range", range_then_write)
    revision = await store.load()
    monkeypatch.setattr(etcd, "range", real_range)
    assert len(pages) >= 5 and set(pages) == {revision}  # 30 keys, 7 a page, all at R
    assert store.table.count_by_state("lan")[BindingState.BOUND] == 30
    assert store.table.get("lan", late.ip) is None
    follower = asyncio.create_task(store.follow())
    try:

        async def seen() -> bool:
            return store.table.get("lan", late.ip) is not None

        await wait_until(seen, within=10)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_block_claims_are_batched_and_a_stale_batch_is_claimed_block_by_block(
    etcd: EtcdClient, key_prefix: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "CLAIM_BATCH", 2)
    keys = Keys(key_prefix.decode().rstrip("/"))
    blocks = cut_blocks(SCOPE)
    assert len(blocks) >= 3
    taken = await etcd.put(keys.block("lan", blocks[0].block_id), b'{"v":1,"owner":"spoke-2"}')
    store = LeaseStore(etcd, keys, BindingTable(), "spoke-1")
    txns = 0
    real_txn = etcd.txn

    async def counting(*args: Any, **kw: Any) -> Any:
        nonlocal txns
        txns += 1
        return await real_txn(*args, **kw)

    monkeypatch.setattr(etcd, "txn", counting)
    # the records read before claiming miss the one of block 0: that batch's compares fail
    real_records = store._block_records

    async def stale(scope: str) -> dict[bytes, Any]:
        records = await real_records(scope)
        records.pop(keys.block("lan", blocks[0].block_id))
        return records

    monkeypatch.setattr(store, "_block_records", stale)
    assert await store.claim_all_blocks([SCOPE]) == len(blocks)
    batches = -(-len(blocks) // 2)
    assert txns == batches + 2  # the failed batch, then its two blocks one by one
    fences = {}
    for block in blocks:
        kv = await etcd.get(keys.block("lan", block.block_id))
        assert kv is not None and decode_block_owner(kv.value) == "spoke-1"
        assert store.table.owned_block("lan", block.first) == (block, kv.mod_revision)
        fences[block] = kv.mod_revision
    assert fences[blocks[0]] > taken.revision
    assert fences[blocks[2]] == fences[blocks[3]]  # claimed in one transaction


async def test_load_reads_a_big_table_group_by_group(
    etcd: EtcdClient, key_prefix: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an open-ended page, the rest of its last key's /16 is read with the group's end
    (etcd 3.4 walks every key up to a range's end); every binding of every scope arrives."""
    monkeypatch.setattr(store_module, "LOAD_PAGE", 3)
    keys = Keys(key_prefix.decode().rstrip("/"))
    written = []
    for scope, base, n in (
        ("lan", "10.9.0.", 10),
        ("lan", "10.10.0.", 10),
        ("other", "10.9.1.", 5),
    ):
        for i in range(n):
            b = dataclasses.replace(
                binding(bytes([1, i]), ip=IPv4Address(f"{base}{i}")), scope=scope
            )
            await etcd.put(keys.lease(scope, b.ip), encode_binding(b))
            written.append(b)
    store = LeaseStore(etcd, keys, BindingTable(), "spoke-1")
    real_range = etcd.range
    ends: list[bytes] = []

    async def recording(key: bytes, range_end: bytes = b"", **kw: Any) -> Any:
        ends.append(range_end)
        return await real_range(key, range_end, **kw)

    monkeypatch.setattr(etcd, "range", recording)
    await store.load()
    for b in written:
        held = store.table.get(b.scope, b.ip)
        assert held is not None and held[0] == b
    open_end = prefix_end(keys.leases_prefix())
    assert prefix_end(keys.leases_prefix("lan") + b"10.9.") in ends
    assert prefix_end(keys.leases_prefix("lan") + b"10.10.") in ends
    assert ends.count(open_end) < len(ends) / 2
