"""A small world for planner tests: scopes, spoke views, convergence (plan, apply, complete the
hand-overs, until a plan is empty) and the invariants every plan and every fixed point keep."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network

from hub.plan.planner import (
    Action,
    BlockAction,
    Current,
    GrantBlock,
    PlanParams,
    ReclaimBlock,
    RemoveBlock,
    RequestHandover,
    SetBuckets,
    SpokeView,
    apply,
    block_range,
    complete_handovers,
    exact_quotas,
    plan,
)
from hubspoke.assign import BucketMap
from hubspoke.blocks import cut_blocks
from hubspoke.model import Pool, Scope


def scope(name: str, first: int, size: int, net: int = 0) -> Scope:
    """Scope `name` in 10.<net>.0.0/16 with one pool of `size` addresses from offset `first`."""
    base = int(IPv4Address(f"10.{net}.0.0"))
    return Scope(
        name=name,
        subnet=IPv4Network(f"10.{net}.0.0/16"),
        pools=(Pool(IPv4Address(base + first), IPv4Address(base + first + size - 1)),),
    )


def live(node: str, **kw: object) -> SpokeView:
    return SpokeView(node=node, live=True, **kw)  # type: ignore[arg-type]


def down(node: str, since: float | None) -> SpokeView:
    return SpokeView(node=node, live=False, down_since=since)


def block_moves(actions: Sequence[Action]) -> list[BlockAction]:
    return [
        a
        for a in actions
        if isinstance(a, GrantBlock | RequestHandover | ReclaimBlock | RemoveBlock)
    ]


def live_owners(spokes: Sequence[SpokeView]) -> frozenset[str]:
    return frozenset(s.node for s in spokes if s.live)


def converge(
    scopes: Sequence[Scope],
    spokes: Sequence[SpokeView],
    current: Current,
    params: PlanParams,
    now: float = 0.0,
    max_cycles: int = 80,
) -> tuple[Current, int]:
    """Plan, apply, let live owners complete hand-overs; until a plan is empty."""
    for cycle in range(max_cycles):
        actions = plan(scopes, spokes, current, now, params)
        check_cycle(actions, spokes, current, now, params)
        if not actions:
            return current, cycle
        current = apply(current, actions)
        check_records(current)
        current = complete_handovers(current, live_owners(spokes))
    raise AssertionError(f"no fixed point after {max_cycles} cycles")


def check_cycle(
    actions: Sequence[Action],
    spokes: Sequence[SpokeView],
    current: Current,
    now: float,
    params: PlanParams,
) -> None:
    """Rules every single plan obeys."""
    views = {s.node: s for s in spokes}
    moves = block_moves(actions)
    assert len(moves) <= params.max_moves_per_cycle
    touched = [(a.scope, a.block_id) for a in actions if not isinstance(a, SetBuckets)]
    assert len(touched) == len(set(touched)), "a record touched twice in one cycle"
    for a in actions:
        assert a.why and "\n" not in a.why
        if isinstance(a, GrantBlock):
            rec = current.blocks[(a.scope, a.block_id)][0]
            assert rec.owner is None, "only reserve blocks are granted"
            assert views[a.to].is_eligible
        elif isinstance(a, ReclaimBlock):
            v = views[a.from_node]
            assert not v.live and v.down_since is not None
            assert now >= v.down_since + params.down_hold, "reclaimed before the hold"
        elif isinstance(a, RequestHandover):
            rec = current.blocks[(a.scope, a.block_id)][0]
            assert rec.handover_to is None, "a second hand-over for one block"
            assert views[a.owner].live
        elif isinstance(a, RemoveBlock):
            assert current.blocks[(a.scope, a.block_id)][0].owner is None


def check_records(current: Current) -> None:
    """No address is in two block records."""
    spans = sorted(r for (_, b) in current.blocks if (r := block_range(b)) is not None)
    assert len(spans) == len(current.blocks)
    for (_, hi), (lo, _) in itertools.pairwise(spans):
        assert hi < lo, "two block records share addresses"


def check_steady(scopes: Sequence[Scope], spokes: Sequence[SpokeView], current: Current) -> None:
    """What holds at a fixed point."""
    check_records(current)
    valid = {(s.name, b.block_id) for s in scopes for b in cut_blocks(s)}
    for (name, block_id), (rec, _) in current.blocks.items():
        if (name, block_id) not in valid:
            # Only a down spoke inside its hold keeps a record that is no longer cut.
            assert rec.owner is not None
            assert not next(v for v in spokes if v.node == rec.owner).live
    eligible = {s.node for s in spokes if s.is_eligible}
    if eligible:
        assert set(current.buckets.owners) <= eligible
        counts = current.buckets.counts()
        for node, q in exact_quotas(spokes).items():
            assert abs(counts.get(node, 0) - q) < 1
    else:
        assert current.buckets == BucketMap()
