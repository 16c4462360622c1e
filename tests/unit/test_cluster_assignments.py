"""The assignment follower's pure parts: records in, blocks (with fences), buckets, hand-overs out.

A fake feeds `assign/` keys the way the initial range and the watch do; no etcd.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubspoke.assign import NUM_BUCKETS, BlockRecord, BucketMap
from hubspoke.blocks import cut_blocks
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.records import KeyValue
from hubspoke.etcd.watch import EventType, WatchBatch, WatchEvent
from hubspoke.keys import Keys
from hubspoke.model import Block, Pool, Scope
from spoke.assign.follow import AssignmentFollower
from spoke.assign.view import Assignments, Handover, offers_in_block, parse_block_id
from spoke.dhcp.message import BROADCAST_FLAG, Message, MessageType, Op, Opt
from spoke.leases.table import BindingTable

KEYS = Keys("/t/v1")
ME = "spoke-a"


def scope(name: str = "lan", pool: tuple[str, str] = ("10.0.0.0", "10.0.0.255")) -> Scope:
    return Scope(
        name=name,
        subnet=IPv4Network("10.0.0.0/23"),
        pools=(Pool(IPv4Address(pool[0]), IPv4Address(pool[1])),),
    )


LAN = scope()
BLOCKS = cut_blocks(LAN)  # 4 blocks of 64


class Feed:
    """Plays the hub: writes records and the bucket map, one revision per write."""

    def __init__(self, sink: Assignments) -> None:
        self.sink = sink
        self.revision = 100

    def block(self, block: Block, record: BlockRecord | None) -> set[str]:
        self.revision += 1
        key = KEYS.block(block.scope, block.block_id)
        if record is None:
            return self.sink.delete(key)
        return self.sink.put(key, record.encode(), self.revision)

    def buckets(self, owners: dict[int, str]) -> None:
        self.revision += 1
        bmap = BucketMap(tuple(owners.get(b) for b in range(NUM_BUCKETS)))
        self.sink.put(KEYS.buckets(), bmap.encode(), self.revision)


@pytest.fixture
def state() -> Assignments:
    a = Assignments(ME, KEYS)
    a.set_scopes([LAN])
    return a


@pytest.mark.parametrize(
    ("record", "allocatable", "handover"),
    [
        (BlockRecord(owner=ME), True, None),
        (BlockRecord(owner="spoke-b"), False, None),
        (BlockRecord(owner=None), False, None),
        (BlockRecord(owner=ME, handover_to="spoke-b"), False, "spoke-b"),
        (BlockRecord(owner=ME, handover_to=""), False, ""),
        (BlockRecord(owner="spoke-b", handover_to=ME), False, None),
    ],
)
def test_owned_blocks_follow_records(
    state: Assignments, record: BlockRecord, allocatable: bool, handover: str | None
) -> None:
    feed = Feed(state)
    assert feed.block(BLOCKS[1], record) == {"lan"}
    owned = state.owned("lan")
    assert owned == ({BLOCKS[1]: feed.revision} if allocatable else {})
    hs = state.handovers()
    if handover is None:
        assert hs == {}
    else:
        h = hs[("lan", BLOCKS[1].block_id)]
        assert h == Handover("lan", BLOCKS[1].block_id, handover, feed.revision)
        assert h.new_owner == (handover or None)


def test_fence_is_the_latest_mod_revision(state: Assignments) -> None:
    feed = Feed(state)
    feed.block(BLOCKS[0], BlockRecord(owner=ME))
    first = feed.revision
    feed.block(BLOCKS[0], BlockRecord(owner=ME, why="rebalanced"))
    assert state.owned("lan") == {BLOCKS[0]: feed.revision} and feed.revision > first


def test_delete_and_bad_value_remove_the_block(state: Assignments) -> None:
    feed = Feed(state)
    feed.block(BLOCKS[0], BlockRecord(owner=ME))
    feed.block(BLOCKS[2], BlockRecord(owner=ME))
    assert feed.block(BLOCKS[0], None) == {"lan"}
    assert state.put(KEYS.block("lan", BLOCKS[2].block_id), b'{"v":9}', 999) == {"lan"}
    assert state.owned("lan") == {}


def test_unknown_scope_is_pending_until_it_appears() -> None:
    state = Assignments(ME, KEYS)
    feed = Feed(state)
    other = scope("dmz", ("10.0.1.0", "10.0.1.63"))
    block = cut_blocks(other)[0]
    feed.block(block, BlockRecord(owner=ME))
    feed.block(cut_blocks(other)[1], BlockRecord(owner="spoke-b"))
    assert state.owned("dmz") == {}
    assert state.pending() == {("dmz", block.block_id)}
    assert state.set_scopes([other]) == {"dmz"}
    assert state.pending() == frozenset()
    assert state.owned("dmz") == {block: feed.revision - 1}
    assert state.set_scopes([other]) == set()  # unchanged
    assert state.set_scopes([]) == {"dmz"}
    assert state.owned("dmz") == {}


def test_record_of_a_block_outside_the_scopes_pools_is_ignored(state: Assignments) -> None:
    feed = Feed(state)
    stale = Block("lan", IPv4Address("10.0.1.1"), IPv4Address("10.0.1.7"))  # subnet, not pool
    feed.block(stale, BlockRecord(owner=ME))
    feed.block(BLOCKS[3], BlockRecord(owner=ME))
    assert state.owned("lan") == {BLOCKS[3]: feed.revision}


def test_blocks_of_any_size_the_hub_cut_are_read_from_their_ids(state: Assignments) -> None:
    feed = Feed(state)
    small = Block("lan", IPv4Address("10.0.0.16"), IPv4Address("10.0.0.31"))  # block size 16
    feed.block(small, BlockRecord(owner=ME))
    assert state.owned("lan") == {small: feed.revision}


def test_buckets_of_this_node(state: Assignments) -> None:
    feed = Feed(state)
    assert state.buckets == frozenset()
    feed.buckets({0: ME, 7: ME, 8: "spoke-b"})
    assert state.buckets == {0, 7}
    state.put(KEYS.buckets(), b"garbage", 1000)
    assert state.buckets == frozenset()  # an unreadable map is never trusted
    feed.buckets({3: ME})
    state.delete(KEYS.buckets())
    assert state.buckets == frozenset()


def test_reset_forgets_everything(state: Assignments) -> None:
    feed = Feed(state)
    feed.block(BLOCKS[0], BlockRecord(owner=ME))
    feed.buckets({1: ME})
    assert state.reset() == {"lan"}
    assert state.owned("lan") == {} and state.buckets == frozenset()


@pytest.mark.parametrize(
    ("block_id", "ok"),
    [
        ("10.0.0.0-10.0.0.63", True),
        ("10.0.0.9-10.0.0.9", True),
        ("10.0.0.9-10.0.0.8", False),
        ("x-10.0.0.1", False),
        ("10.0.0.1", False),
        ("", False),
    ],
)
def test_parse_block_id(block_id: str, ok: bool) -> None:
    block = parse_block_id("lan", block_id)
    assert (block is not None) is ok
    if block is not None:
        assert block.block_id == block_id


def test_offers_in_block() -> None:
    table = BindingTable()
    table.set_blocks("lan", {BLOCKS[0]: 1, BLOCKS[1]: 1})
    assert offers_in_block(table, BLOCKS[0], 10.0) is None
    table.hold_offer("lan", IPv4Address("10.0.0.5"), b"\x01a", 40.0)
    table.hold_offer("lan", IPv4Address("10.0.0.6"), b"\x01b", 30.0)
    table.hold_offer("lan", IPv4Address("10.0.0.70"), b"\x01c", 90.0)
    assert offers_in_block(table, BLOCKS[0], 10.0) == 40.0
    assert offers_in_block(table, BLOCKS[0], 35.0) == 40.0
    assert offers_in_block(table, BLOCKS[0], 40.0) is None


# -- the follower's synchronous part, fed watch batches --------------------------------------
def follower() -> tuple[AssignmentFollower, BindingTable]:
    table = BindingTable()
    f = AssignmentFollower(cast(EtcdClient, None), KEYS, ME, table)
    f.set_scopes([LAN])
    return f, table


def event(block: Block, record: BlockRecord | None, rev: int) -> WatchEvent:
    key = KEYS.block(block.scope, block.block_id)
    value = b"" if record is None else record.encode()
    kv = KeyValue(key, value, 10, rev, 1, 0)
    return WatchEvent(EventType.PUT if record is not None else EventType.DELETE, kv, None)


def test_follower_gives_the_table_exactly_the_allocatable_blocks() -> None:
    f, table = follower()
    f.apply(
        WatchBatch(
            (
                event(BLOCKS[0], BlockRecord(owner=ME), 11),
                event(BLOCKS[1], BlockRecord(owner="spoke-b"), 12),
                event(BLOCKS[2], BlockRecord(owner=ME, handover_to="spoke-b"), 13),
            ),
            14,
        )
    )
    assert f.revision == 13
    assert f.owned("lan") == {BLOCKS[0]: 11}
    assert table.owned_block("lan", IPv4Address("10.0.0.1")) == (BLOCKS[0], 11)
    assert table.owned_block("lan", IPv4Address("10.0.0.130")) is None
    assert table.pick_free("lan", 0.0) == IPv4Address("10.0.0.0")
    f.apply(WatchBatch((event(BLOCKS[0], None, 15),), 16))
    assert f.owned("lan") == {} and table.pick_free("lan", 0.0) is None


def test_follower_buckets_feed_is_mine() -> None:
    f, _ = follower()
    msg = Message(
        op=Op.BOOTREQUEST,
        xid=1,
        chaddr=bytes.fromhex("020000000001").ljust(16, b"\0"),
        flags=BROADCAST_FLAG,
        options={Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER])},
    )
    assert not f.is_mine(msg)
    bmap = BucketMap((ME,) * NUM_BUCKETS)
    f.apply(
        WatchBatch(
            (
                WatchEvent(
                    EventType.PUT, KeyValue(KEYS.buckets(), bmap.encode(), 1, 20, 1, 0), None
                ),
            ),
            21,
        )
    )
    assert f.buckets == frozenset(range(NUM_BUCKETS)) and f.is_mine(msg)


records = st.sampled_from(
    [
        None,
        BlockRecord(owner=ME),
        BlockRecord(owner="spoke-b"),
        BlockRecord(owner=None),
        BlockRecord(owner=ME, handover_to="spoke-b"),
        BlockRecord(owner=ME, handover_to=""),
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(BLOCKS) - 1), records), max_size=30))
def test_table_never_lists_a_block_not_allocatable(
    steps: list[tuple[int, BlockRecord | None]],
) -> None:
    f, table = follower()
    latest: dict[Block, tuple[BlockRecord | None, int]] = {}
    rev = 10
    for i, record in steps:
        rev += 1
        f.apply(WatchBatch((event(BLOCKS[i], record, rev),), rev + 1))
        latest[BLOCKS[i]] = (record, rev)
        for block in BLOCKS:
            held = table.owned_block("lan", block.first)
            rec, at = latest.get(block, (None, 0))
            if rec is not None and rec.allocatable_by(ME):
                assert held == (block, at)
            else:
                assert held is None
