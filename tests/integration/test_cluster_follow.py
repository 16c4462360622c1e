"""The assignment follower against a real etcd, with the test playing the hub.

The "hub" writes a bucket map and block records; the follower reflects them into a binding
table, executes hand-overs (the record changes to the new owner once the block's offers have
lapsed), and never gives the table a block whose record was not `allocatable_by(node)` at the
fencing revision it was given with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest

from hubspoke.assign import NUM_BUCKETS, BlockRecord, BucketMap
from hubspoke.blocks import cut_blocks
from hubspoke.etcd import Compare, EtcdClient, Op
from hubspoke.keys import Keys
from hubspoke.model import Block, Pool, Scope
from spoke.assign.follow import AssignmentFollower
from spoke.leases.table import BindingTable
from tests.lab.etcd import wait_until

ME = "spoke-a"
SCOPE = Scope(
    name="lan",
    subnet=IPv4Network("10.9.0.0/24"),
    pools=(Pool(IPv4Address("10.9.0.0"), IPv4Address("10.9.0.255")),),
)
BLOCKS = cut_blocks(SCOPE)  # 4 blocks of 64


class RecordingTable(BindingTable):
    """A binding table that remembers every block set it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[tuple[str, dict[Block, int]]] = []

    def set_blocks(self, scope: str, blocks: Mapping[Block, int]) -> None:
        self.given.append((scope, dict(blocks)))
        super().set_blocks(scope, blocks)


@dataclass
class Hub:
    """The test's hub: writes records comparing the revision it decided on."""

    etcd: EtcdClient
    keys: Keys

    async def put(self, block: Block, record: BlockRecord) -> int:
        key = self.keys.block(block.scope, block.block_id)
        current = await self.etcd.get(key)
        compare = (
            Compare.create_revision(key, "=", 0)
            if current is None
            else Compare.mod_revision(key, "=", current.mod_revision)
        )
        result = await self.etcd.txn([compare], [Op.put(key, record.encode())])
        assert result.succeeded
        return result.revision

    async def record(self, block: Block) -> tuple[BlockRecord, int]:
        kv = await self.etcd.get(self.keys.block(block.scope, block.block_id))
        assert kv is not None
        return BlockRecord.decode(kv.value), kv.mod_revision

    async def buckets(self, owners: Mapping[int, str]) -> None:
        bmap = BucketMap(tuple(owners.get(b) for b in range(NUM_BUCKETS)))
        await self.etcd.put(self.keys.buckets(), bmap.encode())


@pytest.fixture
async def setup(
    etcd: EtcdClient, key_prefix: bytes
) -> AsyncIterator[tuple[Hub, AssignmentFollower, RecordingTable]]:
    keys = Keys(key_prefix.decode().rstrip("/"))
    hub = Hub(etcd, keys)
    table = RecordingTable()
    follower = AssignmentFollower(etcd, keys, ME, table, offer_lifetime=5.0)
    yield hub, follower, table
    await assert_only_allocatable_given(hub, table)


async def assert_only_allocatable_given(hub: Hub, table: RecordingTable) -> None:
    """Every block the table was ever given was ours, with no hand-over, at its fence."""
    for scope, blocks in table.given:
        for block, fence in blocks.items():
            kv = await hub.etcd.get(hub.keys.block(scope, block.block_id), revision=fence)
            assert kv is not None and kv.mod_revision == fence
            assert BlockRecord.decode(kv.value).allocatable_by(ME), (block, fence)


@contextlib.asynccontextmanager
async def following(follower: AssignmentFollower) -> AsyncIterator[None]:
    task = asyncio.create_task(follower.follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_load_then_follow_reflects_the_hub(
    setup: tuple[Hub, AssignmentFollower, RecordingTable],
) -> None:
    hub, follower, table = setup
    r0 = await hub.put(BLOCKS[0], BlockRecord(owner=ME))
    await hub.put(BLOCKS[1], BlockRecord(owner="spoke-b"))
    await hub.put(BLOCKS[2], BlockRecord(owner=None))
    await hub.buckets({b: ME for b in range(0, NUM_BUCKETS, 2)} | {1: "spoke-b"})
    follower.set_scopes([SCOPE])
    await follower.load()
    assert follower.owned("lan") == {BLOCKS[0]: r0}
    assert table.owned_block("lan", IPv4Address("10.9.0.5")) == (BLOCKS[0], r0)
    assert follower.buckets == frozenset(range(0, NUM_BUCKETS, 2))
    async with following(follower):
        r2 = await hub.put(BLOCKS[2], BlockRecord(owner=ME, why="granted from the reserve"))

        async def granted() -> bool:
            return follower.owned("lan") == {BLOCKS[0]: r0, BLOCKS[2]: r2}

        await wait_until(granted)
        assert table.owned_block("lan", IPv4Address("10.9.0.130")) == (BLOCKS[2], r2)
        await hub.buckets({5: ME})

        async def moved() -> bool:
            return follower.buckets == {5}

        await wait_until(moved)
        # the hub takes a block back to the reserve outright (e.g. after our session lapsed)
        await hub.put(BLOCKS[0], BlockRecord(owner=None))

        async def revoked() -> bool:
            return follower.owned("lan") == {BLOCKS[2]: r2}

        await wait_until(revoked)
        assert table.owned_block("lan", IPv4Address("10.9.0.5")) is None


async def test_blocks_of_a_scope_wait_for_the_scope(
    setup: tuple[Hub, AssignmentFollower, RecordingTable],
) -> None:
    hub, follower, table = setup
    r1 = await hub.put(BLOCKS[1], BlockRecord(owner=ME))
    await follower.load()
    assert follower.owned("lan") == {} and table.given == []
    assert follower.state.pending() == {("lan", BLOCKS[1].block_id)}
    follower.set_scopes([SCOPE])
    assert follower.owned("lan") == {BLOCKS[1]: r1}


@pytest.mark.parametrize("to", ["spoke-b", ""])
async def test_handover_waits_for_offers_then_writes_the_new_owner(
    setup: tuple[Hub, AssignmentFollower, RecordingTable], to: str
) -> None:
    hub, follower, table = setup
    follower.set_scopes([SCOPE])
    await hub.put(BLOCKS[0], BlockRecord(owner=ME))
    r3 = await hub.put(BLOCKS[3], BlockRecord(owner=ME))
    await follower.load()
    offered = IPv4Address("10.9.0.7")
    table.hold_offer("lan", offered, b"\x01client", time.time() + 1.5)
    async with following(follower):
        asked = await hub.put(BLOCKS[0], BlockRecord(owner=ME, handover_to=to))

        async def left_table() -> bool:
            return follower.owned("lan") == {BLOCKS[3]: r3}

        await wait_until(left_table, within=1.0)
        assert table.owned_block("lan", offered) is None
        # the offer is still live: the record must not have moved yet
        record, rev = await hub.record(BLOCKS[0])
        assert rev == asked and record.handover_to == to

        async def handed_over() -> bool:
            record, _ = await hub.record(BLOCKS[0])
            return record.handover_to is None

        await wait_until(handed_over, within=10.0)
        record, rev = await hub.record(BLOCKS[0])
        assert record == BlockRecord(owner=to or None, why=f"handed over by {ME}")
        assert table.offered("lan", offered, time.time()) is None  # it lapsed first
        assert follower.handovers_done == 1
        assert follower.owned("lan") == {BLOCKS[3]: r3}


async def test_handover_cancelled_by_the_hub_keeps_the_block(
    setup: tuple[Hub, AssignmentFollower, RecordingTable],
) -> None:
    hub, follower, table = setup
    follower.set_scopes([SCOPE])
    await hub.put(BLOCKS[0], BlockRecord(owner=ME))
    await follower.load()
    table.hold_offer("lan", IPv4Address("10.9.0.9"), b"\x01slow", time.time() + 3.0)
    async with following(follower):
        await hub.put(BLOCKS[0], BlockRecord(owner=ME, handover_to="spoke-b"))

        async def left() -> bool:
            return follower.owned("lan") == {}

        await wait_until(left, within=2.0)
        kept = await hub.put(BLOCKS[0], BlockRecord(owner=ME, why="hub changed its mind"))

        async def back() -> bool:
            return follower.owned("lan") == {BLOCKS[0]: kept}

        await wait_until(back, within=2.0)
        await asyncio.sleep(3.5)  # past the offer: a stale hand-over would have written by now
        record, rev = await hub.record(BLOCKS[0])
        assert rev == kept and record.owner == ME and record.handover_to is None
        assert follower.handovers_done == 0


async def test_handover_with_a_stale_revision_does_nothing(
    setup: tuple[Hub, AssignmentFollower, RecordingTable],
) -> None:
    """The compare on the record's mod_revision: a hub that changed its mind wins."""
    hub, follower, _ = setup
    follower.set_scopes([SCOPE])
    await hub.put(BLOCKS[1], BlockRecord(owner=ME, handover_to="spoke-b"))
    await follower.load()
    h = follower.state.handovers()[("lan", BLOCKS[1].block_id)]
    latest = await hub.put(BLOCKS[1], BlockRecord(owner="spoke-c", why="reassigned"))
    assert await follower.hand_over(h) is False
    record, rev = await hub.record(BLOCKS[1])
    assert rev == latest and record.owner == "spoke-c"
