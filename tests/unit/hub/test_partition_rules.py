"""Table-driven tests of the planner's rules, each checked by the action and its `why`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import pytest

from hub.plan.planner import (
    Action,
    CreateBlock,
    Current,
    GrantBlock,
    PlanParams,
    ReclaimBlock,
    RemoveBlock,
    RequestHandover,
    ScopeUtil,
    SetBuckets,
    SpokeView,
    apply,
    complete_handovers,
    plan,
)
from hubspoke.assign import NUM_BUCKETS, BlockRecord, BucketMap
from hubspoke.blocks import cut_blocks
from tests.lab.planworld import (
    block_moves,
    check_steady,
    converge,
    down,
    live,
    live_owners,
    scope,
)

LAN = scope("lan", 0, 1024)  # 16 blocks of 64: 10.0.0.0-10.0.0.63, ...
IDS = [b.block_id for b in cut_blocks(LAN)]
P = PlanParams(down_hold=100.0)

T = TypeVar("T")
Owner = str | None | tuple[str, str]  # a node, the reserve, or (owner, handing over to)


def world(owners: Sequence[Owner], buckets: BucketMap | None = None) -> Current:
    """Block i of LAN owned as `owners[i]`; "-" leaves the record out. Revisions 1..16."""
    blocks: dict[tuple[str, str], tuple[BlockRecord, int]] = {}
    for i, o in enumerate(owners):
        if o == "-":
            continue
        rec = BlockRecord(o[0], o[1]) if isinstance(o, tuple) else BlockRecord(o)
        blocks[("lan", IDS[i])] = (rec, i + 1)
    return Current(buckets=buckets or BucketMap(), blocks=blocks)


def util(free: int, capacity: int | None = None, bound: int = 0) -> dict[str, ScopeUtil]:
    return {"lan": ScopeUtil(bound=bound, free=free, capacity=capacity)}


def only(actions: Sequence[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def owners_of(cur: Current) -> Counter[str | None]:
    return Counter(r.owner for r, _ in cur.blocks.values())


def even(*nodes: str) -> BucketMap:
    return BucketMap(tuple(nodes[i % len(nodes)] for i in range(NUM_BUCKETS)))


# -- creation and the initial share -------------------------------------------------------------


def test_missing_records_are_created_as_reserve_then_shared() -> None:
    spokes = [live("a"), live("b")]
    first = plan([LAN], spokes, Current(), 0.0, P)
    assert [a.block_id for a in only(first, CreateBlock)] == IDS
    assert not block_moves(first)  # revisions unknown until created
    cur, _ = converge([LAN], spokes, Current(), P)
    # fair share floor(16 * 0.75 / 2) = 6 each; 4 stay in the reserve
    assert owners_of(cur) == {"a": 6, "b": 6, None: 4}
    check_steady([LAN], spokes, cur)


def test_a_spoke_that_joins_later_gets_its_share_from_the_reserve() -> None:
    cur = world(["a"] * 6 + ["b"] * 6 + [None] * 4, even("a", "b"))
    actions = plan([LAN], [live("a"), live("b"), live("c")], cur, 0.0, P)
    grants = only(actions, GrantBlock)
    # fair share floor(16 * 0.75 / 3) = 4, and the reserve holds 4
    assert [(g.to, g.block_id) for g in grants] == [("c", i) for i in IDS[12:16]]
    assert grants[0].why == f"reserve block {IDS[12]} of lan to c: c holds 0 of its fair share of 4"
    assert grants[0].expected_revision == 13


def test_at_least_one_block_each_while_the_reserve_has_any() -> None:
    small = scope("lan", 0, 8)  # 4 blocks of 2
    spokes = [live(n) for n in "abcdef"]
    cur, _ = converge([small], spokes, Current(), P)
    assert owners_of(cur) == {"a": 1, "b": 1, "c": 1, "d": 1}


# -- utilization --------------------------------------------------------------------------------

WM = P.low_watermark


@pytest.mark.parametrize(
    ("owners", "a_util", "b_util", "expect", "why"),
    [
        pytest.param(
            ["a"] * 6 + ["b"] * 6 + [None] * 4,
            util(5, capacity=384),
            util(300, capacity=384),
            GrantBlock("lan", IDS[12], "a", 13, ""),
            f"reserve block {IDS[12]} of lan to a: a has 5 free, under the {WM}",
            id="under-watermark-gets-a-reserve-block",
        ),
        pytest.param(
            ["a"] * 6 + ["b"] * 6 + [None] * 4,
            util(16, capacity=384),
            util(300, capacity=384),
            None,
            "",
            id="at-watermark-gets-nothing",
        ),
        pytest.param(
            ["a"] * 8 + ["b"] * 8,
            util(3, capacity=512),
            util(200, capacity=512),
            RequestHandover("lan", IDS[15], "b", "a", 16, ""),
            f"a has 3 free in lan, under the {WM}, and the reserve is empty: "
            f"b (200 free) hands over {IDS[15]}",
            id="reserve-empty-richest-hands-over",
        ),
        pytest.param(
            ["a"] * 8 + ["b"] * 8,
            util(3, capacity=512),
            util(WM + 64, capacity=512),
            None,
            "",
            id="donor-needs-more-than-a-block-above-the-watermark",
        ),
        pytest.param(
            ["a"] * 8 + ["b"] * 7 + [("b", "a")],
            util(3, capacity=512),
            util(200, capacity=448),
            None,
            "",
            id="hand-over-under-way-counts-as-incoming",
        ),
        pytest.param(
            ["a"] * 6 + ["b"] * 6 + [None] * 4,
            util(5, capacity=320),
            util(300, capacity=384),
            None,
            "",
            id="block-granted-since-the-report-counts",
        ),
        pytest.param(
            ["a"] * 8 + ["b"] * 8,
            util(200, capacity=512),
            util(200, capacity=512),
            None,
            "",
            id="nobody-short",
        ),
    ],
)
def test_watermark_rules(
    owners: list[Owner],
    a_util: dict[str, ScopeUtil],
    b_util: dict[str, ScopeUtil],
    expect: Action | None,
    why: str,
) -> None:
    cur = world(owners, even("a", "b"))
    actions = plan([LAN], [live("a", util=a_util), live("b", util=b_util)], cur, 0.0, P)
    moves = block_moves(actions)
    if expect is None:
        assert moves == []
        return
    assert len(moves) == 1
    got = moves[0]
    assert got.why == why
    assert got == dataclasses.replace(expect, why=why)


def test_grants_stop_once_the_report_would_be_above_the_watermark() -> None:
    # Reported 0 free over 6 blocks: one more block (64) lifts it over 16: one grant only.
    cur = world(["a"] * 6 + ["b"] * 6 + [None] * 4, even("a", "b"))
    spokes = [live("a", util=util(0, capacity=384)), live("b", util=util(300, capacity=384))]
    assert len(only(plan([LAN], spokes, cur, 0.0, P), GrantBlock)) == 1
    cur, _ = converge([LAN], spokes, cur, P)
    assert owners_of(cur) == {"a": 7, "b": 6, None: 3}


def test_without_capacity_one_grant_per_spoke_per_cycle() -> None:
    small = PlanParams(down_hold=100.0, low_watermark=200)
    cur = world(["a"] * 6 + ["b"] * 6 + [None] * 4, even("a", "b"))
    spokes = [live("a", util=util(0, bound=384)), live("b", util=util(300, bound=84))]
    grants = only(plan([LAN], spokes, cur, 0.0, small), GrantBlock)
    assert [g.to for g in grants] == ["a"]


def test_a_block_under_hand_over_is_never_touched_nor_granted() -> None:
    cur = world(["a"] * 7 + [("a", "")] + ["b"] * 8, even("a", "b"))
    spokes = [live("a"), live("b", draining=True)]
    actions = plan([LAN], spokes, cur, 0.0, P)
    assert ("lan", IDS[7]) not in {(a.scope, a.block_id) for a in block_moves(actions)}


# -- drain, down, stale ---------------------------------------------------------------------------


def test_draining_spoke_loses_buckets_and_gives_blocks_back() -> None:
    cur = world(["a"] * 6 + ["b"] * 6 + [None] * 4, even("a", "b"))
    spokes = [live("a", util=util(300, capacity=384)), live("b", draining=True)]
    actions = plan([LAN], spokes, cur, 0.0, P)
    (sb,) = only(actions, SetBuckets)
    assert sb.new.counts() == {"a": 256}
    assert sb.why == "128 buckets move to a +128 from b (draining) -128; shares now a=256"
    asks = only(actions, RequestHandover)
    # a alone now: its fair share is floor(16 * 0.75) = 12, so b's 6 blocks go straight to it
    assert [(h.owner, h.to) for h in asks] == [("b", "a")] * 6
    assert asks[0].why == f"b is draining: its block {IDS[6]} of lan goes to a"
    cur, _ = converge([LAN], spokes, cur, P)
    assert owners_of(cur) == {"a": 12, None: 4}


def test_draining_spoke_gives_back_to_the_reserve_when_nobody_needs() -> None:
    cur = world(["a"] * 12 + ["b"] * 4, even("a", "b"))
    spokes = [live("a", util=util(300, capacity=768)), live("b", draining=True)]
    asks = only(plan([LAN], spokes, cur, 0.0, P), RequestHandover)
    assert [(h.owner, h.to) for h in asks] == [("b", None)] * 4
    assert asks[0].why == f"b is draining: its block {IDS[12]} of lan goes to the reserve"


def test_draining_spoke_gives_directly_to_a_short_spoke() -> None:
    cur = world(["a"] * 8 + ["b"] * 8, even("a", "b"))
    spokes = [live("a", util=util(0, capacity=512)), live("b", draining=True)]
    asks = only(plan([LAN], spokes, cur, 0.0, P), RequestHandover)
    assert asks[0].why == f"b is draining: its block {IDS[8]} of lan goes to a"
    assert [h.to for h in asks] == ["a"] * 4 + [None] * 4  # a up to its fair share of 12


@pytest.mark.parametrize(
    ("now", "since", "reclaimed"),
    [(0.0, 0.0, False), (99.9, 0.0, False), (100.0, 0.0, True), (1e9, None, False)],
    ids=["just-down", "inside-hold", "hold-over", "unknown-since"],
)
def test_down_spoke_buckets_move_at_once_blocks_after_the_hold(
    now: float, since: float | None, reclaimed: bool
) -> None:
    cur = world(["a"] * 6 + ["b"] * 6 + [None] * 4, even("a", "b"))
    actions = plan([LAN], [live("a"), down("b", since)], cur, now, P)
    (sb,) = only(actions, SetBuckets)
    assert sb.new.counts() == {"a": 256}
    assert "b (down) -128" in sb.why
    reclaims = only(actions, ReclaimBlock)
    assert bool(reclaims) == reclaimed
    if reclaimed:
        assert len(reclaims) == 6 and {r.from_node for r in reclaims} == {"b"}
        assert reclaims[0].why == (
            f"b down since 0, past the 100 s hold: its block {IDS[6]} of lan goes to a"
        )


def test_reclaim_goes_straight_to_a_short_spoke() -> None:
    cur = world(["a"] * 8 + ["b"] * 8, even("a", "b"))
    spokes = [live("a", util=util(0, capacity=512)), down("b", 0.0)]
    reclaims = only(plan([LAN], spokes, cur, 200.0, P), ReclaimBlock)
    assert [r.to for r in reclaims] == ["a"] * 4 + [None] * 4  # a up to its fair share of 12


def test_deleted_scope_blocks_go_back_then_are_removed() -> None:
    old = world(["a"] * 2 + [None] * 2 + ["-"] * 12)
    spokes = [live("a")]
    actions = plan([], spokes, old, 0.0, P)
    kinds = Counter(type(a).__name__ for a in block_moves(actions))
    assert kinds == {"RemoveBlock": 2, "RequestHandover": 2}
    assert only(actions, RemoveBlock)[0].why == (
        f"block {IDS[2]} of lan is unowned and no longer cut (scope deleted)"
    )
    cur, _ = converge([], spokes, old, P)
    assert cur.blocks == {}


def test_changed_pool_waits_for_overlapping_old_blocks() -> None:
    # The pool shrinks to 96 addresses: blocks of 24. The old 64-blocks overlap the new ones.
    new = scope("lan", 0, 96)
    old = world(["a", "b", None, None] + ["-"] * 12, even("a", "b"))
    spokes = [live("a"), live("b")]
    first = plan([new], spokes, old, 0.0, P)
    assert only(first, CreateBlock) == []  # every new block overlaps an old record still there
    cur, _ = converge([new], spokes, old, P)
    check_steady([new], spokes, cur)
    assert sorted(b for _, b in cur.blocks) == sorted(b.block_id for b in cut_blocks(new))


def test_bounded_moves_per_cycle() -> None:
    cur = world([None] * 16)
    spokes = [live(n) for n in "abcd"]
    tight = PlanParams(down_hold=100.0, max_moves_per_cycle=3)
    assert len(block_moves(plan([LAN], spokes, cur, 0.0, tight))) == 3
    cur, cycles = converge([LAN], spokes, cur, tight)
    assert cycles == 4  # 12 grants, 3 a cycle


# -- buckets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spokes", "counts"),
    [
        ([live("a", weight=3.0), live("b", weight=1.0)], {"a": 192, "b": 64}),
        ([live("a"), live("b"), live("c")], {"a": 86, "b": 85, "c": 85}),
        ([live("p", weight=1.0), live("s", weight=0.0)], {"p": 256}),
        ([down("p", 0.0), live("s", weight=0.0)], {"s": 256}),
        ([down("a", 0.0), live("b", draining=True)], {}),
    ],
    ids=["weighted", "thirds", "hot-standby", "standby-takes-over", "nobody-eligible"],
)
def test_bucket_shares(spokes: list[SpokeView], counts: dict[str, int]) -> None:
    cur, _ = converge([], spokes, Current(), P)
    assert cur.buckets.counts() == counts
    check_steady([], spokes, cur)


def test_no_eligible_spoke_leaves_every_bucket_unowned() -> None:
    actions = plan([], [down("a", 0.0)], Current(buckets=even("a")), 0.0, P)
    (sb,) = only(actions, SetBuckets)
    assert sb.new == BucketMap()
    assert sb.why == "no live spoke may answer: 256 buckets left unowned"


def test_steady_state_plans_nothing() -> None:
    spokes = [live("a"), live("b"), live("c")]
    cur, _ = converge([LAN], spokes, Current(), P)
    assert plan([LAN], spokes, cur, 0.0, P) == []
    again = complete_handovers(apply(cur, []), live_owners(spokes))
    assert plan([LAN], spokes, again, 0.0, P) == []
