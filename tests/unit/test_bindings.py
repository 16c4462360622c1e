"""Binding table: replica updates, indexes, ownership, offers, free selection, counts."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from hubspoke.model import Binding, BindingState, Block, Versioned
from spoke.leases.table import BindingTable

S = "lan"
BLOCK_A = Block(S, IPv4Address("10.0.0.0"), IPv4Address("10.0.0.7"))
BLOCK_B = Block(S, IPv4Address("10.0.0.8"), IPv4Address("10.0.0.15"))


def ip(n: int) -> IPv4Address:
    return IPv4Address(int(IPv4Address("10.0.0.0")) + n)


def binding(
    n: int,
    key: bytes = b"\x01a",
    state: BindingState = BindingState.BOUND,
    start: float = 0.0,
    expires: float = 100.0,
) -> Binding:
    return Binding(S, ip(n), state, key, b"\x02" + key, start, expires, "node")


def table(*blocks: Block, reuse_delay: float = 10.0) -> BindingTable:
    t = BindingTable(reuse_delay=reuse_delay)
    t.set_blocks(S, {b: 7 for b in blocks})
    return t


def test_apply_ignores_older_revisions_and_respects_tombstones() -> None:
    t = table(BLOCK_A)
    assert t.apply(S, ip(1), binding(1, expires=100), Versioned(5, 5))
    assert not t.apply(S, ip(1), binding(1, expires=50), Versioned(5, 4))
    entry = t.get(S, ip(1))
    assert entry is not None and entry[0].expires == 100
    assert t.apply(S, ip(1), binding(1, expires=100), Versioned(5, 5))  # same again: idempotent
    assert t.apply(S, ip(1), None, Versioned(0, 9))
    assert t.get(S, ip(1)) is None
    assert not t.apply(S, ip(1), binding(1), Versioned(5, 8))  # older than the delete
    assert t.apply(S, ip(1), binding(1), Versioned(10, 10))
    assert t.count_by_state(S) == {BindingState.BOUND: 1}


def test_by_client_newest_and_by_hw() -> None:
    t = table(BLOCK_A)
    t.apply(S, ip(1), binding(1, state=BindingState.RELEASED), Versioned(3, 3))
    t.apply(S, ip(2), binding(2), Versioned(4, 4))
    t.apply(S, ip(3), binding(3, key=b"\x01b"), Versioned(5, 5))
    entry = t.by_client(S, b"\x01a")
    assert entry is not None and entry[0].ip == ip(2)
    assert [e[0].ip for e in t.by_hw(S, b"\x02\x01a")] == [ip(2), ip(1)]
    t.apply(S, ip(2), None, Versioned(0, 6))
    entry = t.by_client(S, b"\x01a")
    assert entry is not None and entry[0].ip == ip(1)
    assert t.by_client(S, b"\x01zz") is None and t.by_client("nope", b"\x01a") is None


def test_fresh_addresses_lowest_first_then_least_recently_freed() -> None:
    t = table(BLOCK_A, reuse_delay=0)
    for n in range(8):
        assert t.pick_free(S, 0) == ip(n)
        t.hold_offer(S, ip(n), bytes([1, n]), until=1e9)
    assert t.pick_free(S, 0) is None
    for n, freed in ((5, 30.0), (2, 10.0), (6, 20.0)):
        t.forget_offer(S, bytes([1, n]))
        t.apply(
            S,
            ip(n),
            binding(n, state=BindingState.RELEASED, expires=freed),
            Versioned(n + 1, n + 1),
        )
    assert t.pick_free(S, 5) is None  # nothing freed yet at t=5
    order = []
    for _ in range(3):
        got = t.pick_free(S, 100)
        assert got is not None
        order.append(got)
        t.hold_offer(S, got, b"\x01x" + got.packed, until=1e9)
    assert order == [ip(2), ip(6), ip(5)]


@pytest.mark.parametrize(
    ("state", "expires", "free_at"),
    [
        (BindingState.BOUND, 100.0, 110.0),
        (BindingState.RELEASED, 50.0, 60.0),
        (BindingState.EXPIRED, 100.0, 110.0),
        (BindingState.DECLINED, 600.0, 600.0),
    ],
)
def test_reuse_time_by_state(state: BindingState, expires: float, free_at: float) -> None:
    t = table(BLOCK_A)
    t.apply(S, ip(3), binding(3, state=state, expires=expires), Versioned(2, 2))
    assert not t.is_free(S, ip(3), free_at - 0.5)
    assert t.is_free(S, ip(3), free_at)


def test_only_owned_blocks_and_fencing_revision() -> None:
    t = BindingTable()
    t.set_blocks(S, {BLOCK_B: 42})
    assert t.pick_free(S, 0) == ip(8)
    assert t.owned_block(S, ip(9)) == (BLOCK_B, 42)
    assert t.owned_block(S, ip(1)) is None and not t.is_free(S, ip(1), 0)
    t.set_blocks(S, {BLOCK_A: 43})
    assert t.pick_free(S, 0) == ip(0)
    assert not t.is_free(S, ip(8), 0)
    assert t.free_count(S, 0) == 8


def test_reserved_addresses_never_picked_until_unreserved() -> None:
    t = table(BLOCK_A)
    t.set_reserved(S, [ip(0), ip(1)])
    assert t.pick_free(S, 0) == ip(2)
    assert t.free_count(S, 0) == 6
    t.hold_offer(S, ip(2), b"\x01c", 50)
    t.set_reserved(S, [ip(1)])
    assert t.pick_free(S, 0) == ip(0)


def test_offers_hold_replace_expire_forget() -> None:
    t = table(BLOCK_A)
    t.hold_offer(S, ip(0), b"\x01a", until=30)
    t.hold_offer(S, ip(1), b"\x01a", until=30)  # replaces the client's previous offer
    assert t.offered(S, ip(0), 0) is None and t.is_free(S, ip(0), 0)
    offer = t.offer_for(S, b"\x01a", 0)
    assert offer is not None and offer.ip == ip(1)
    assert not t.is_free(S, ip(1), 0) and t.is_free(S, ip(1), 0, b"\x01a")
    assert t.offer_count(S, 0) == 1
    assert t.offer_for(S, b"\x01a", 30) is None  # expired at its `until`
    t.expire_offers(30)
    assert t.offer_count(S, 0) == 0 and t.free_count(S, 30) == 8
    t.hold_offer(S, ip(2), b"\x01b", until=30)
    t.forget_offer(S, b"\x01b")
    assert t.offered(S, ip(2), 0) is None


def test_counts() -> None:
    t = table(BLOCK_A, BLOCK_B)
    t.apply(S, ip(0), binding(0), Versioned(2, 2))
    t.apply(S, ip(1), binding(1, state=BindingState.DECLINED, expires=500), Versioned(3, 3))
    t.apply(S, ip(2), binding(2, state=BindingState.RELEASED, expires=5), Versioned(4, 4))
    t.hold_offer(S, ip(3), b"\x01o", until=60)
    assert t.count_by_state(S) == {
        BindingState.BOUND: 1,
        BindingState.DECLINED: 1,
        BindingState.RELEASED: 1,
    }
    assert t.free_count(S, 0) == 16 - 4
    assert t.free_count(S, 200) == 16 - 1  # bound one expired past the delay; offer gone
    assert t.free_count("unknown", 0) == 0


def test_large_pool_allocates_distinct_addresses() -> None:
    first, last = IPv4Address("10.1.0.0"), IPv4Address("10.1.255.255")
    blocks = {}
    for start in range(int(first), int(last) + 1, 64):
        blocks[Block(S, IPv4Address(start), IPv4Address(start + 63))] = 5
    t = BindingTable()
    t.set_blocks(S, blocks)
    seen = set()
    for n in range(3000):
        got = t.pick_free(S, 0)
        assert got is not None and got not in seen
        seen.add(got)
        t.apply(
            S,
            got,
            Binding(S, got, BindingState.BOUND, n.to_bytes(4, "big"), b"", 0, 3600, "x"),
            Versioned(n + 2, n + 2),
        )
    assert t.free_count(S, 0) == 65536 - 3000
    assert t.free_count(S, 3610) == 65536


def test_stale_heap_entries_compacted() -> None:
    t = table(BLOCK_A)
    for rev in range(2, 400):
        t.apply(S, ip(0), binding(0, start=rev, expires=rev + 100), Versioned(2, rev))
    assert t.pick_free(S, 0) == ip(1)
    assert t.free_count(S, 0) == 7 and t.free_count(S, 510) == 8


@pytest.mark.parametrize("held", [False, True])
def test_blocks_set_in_steps_end_as_set_at_once(held: bool) -> None:
    """`set_blocks_in_steps` pauses every `step` addresses and ends where `set_blocks` ends:
    same owned blocks and fences, same free count, same picks (with and without bindings)."""
    blocks = {Block(S, ip(8 * k), ip(8 * k + 7)): k for k in range(6)}
    at_once, stepped = BindingTable(), BindingTable()
    for t in (at_once, stepped):
        t.set_blocks(S, {BLOCK_A: 1})
        if held:
            t.apply(S, ip(20), binding(20, expires=500.0), Versioned(3, 3))
    at_once.set_blocks(S, blocks)
    pauses = sum(1 for _ in stepped.set_blocks_in_steps(S, blocks, step=16))
    assert pauses == 2  # 40 new addresses, a pause after 16 and after 32
    for n in range(48):
        assert stepped.owned_block(S, ip(n)) == at_once.owned_block(S, ip(n))
    assert stepped.free_count(S, 0.0) == at_once.free_count(S, 0.0) == 48 - held
    picks = []
    for t in (at_once, stepped):
        got = []
        while (free := t.pick_free(S, 0.0)) is not None:
            got.append(free)
            t.hold_offer(S, free, bytes([len(got)]), 100.0)
        picks.append(got)
    assert picks[0] == picks[1] and len(picks[0]) == 48 - held
