"""The hub's planner: from scopes, spokes and what etcd holds to a list of actions. Pure; no I/O.

`plan` decides one cycle: the bucket map (`hub.plan.buckets`) and the block moves
(`hub.plan.blocks`). Time comes in as `now`; nothing is random. Carrying out the actions
(each one revision-compared transaction, see `hub.role`) and planning again converges to a
fixed point where `plan` returns nothing.

`apply` and `complete_handovers` replay actions on a `Current` the way etcd and the spokes
would; tests and simulations use them to check convergence.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.plan.blocks import block_range, plan_blocks
from hub.plan.buckets import assign_buckets, bucket_targets, exact_quotas, plan_buckets
from hub.plan.model import (
    Action,
    BlockAction,
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
)
from hubspoke.assign import BlockRecord
from hubspoke.model import Scope

__all__ = [
    "Action",
    "BlockAction",
    "CreateBlock",
    "Current",
    "GrantBlock",
    "PlanParams",
    "ReclaimBlock",
    "RemoveBlock",
    "RequestHandover",
    "ScopeUtil",
    "SetBuckets",
    "SpokeView",
    "StaleAction",
    "apply",
    "assign_buckets",
    "block_range",
    "bucket_targets",
    "complete_handovers",
    "exact_quotas",
    "plan",
]


class StaleAction(ValueError):
    """An action whose compare would fail against the given state (etcd would refuse it)."""


def plan(
    scopes: Sequence[Scope],
    spokes: Sequence[SpokeView],
    current: Current,
    now: float,
    params: PlanParams,
) -> list[Action]:
    """This cycle's actions: new reserve records, the bucket map, then block moves."""
    creates, moves = plan_blocks(scopes, spokes, current, now, params)
    out: list[Action] = list(creates)
    buckets = plan_buckets(spokes, current.buckets)
    if buckets is not None:
        out.append(buckets)
    out.extend(moves)
    return out


def apply(current: Current, actions: Sequence[Action]) -> Current:
    """`current` after etcd carried out `actions` in order; each write gets the next revision.

    Raises `StaleAction` where etcd's compare would fail (a record touched twice, a grant of a
    block that is not in the reserve, ...): for the planner, that is a bug.
    """
    blocks = dict(current.blocks)
    buckets = current.buckets
    rev = max((r for _, r in blocks.values()), default=0)

    def record(a: BlockAction) -> BlockRecord:
        got = blocks.get((a.scope, a.block_id))
        if got is None or got[1] != a.expected_revision:
            raise StaleAction(f"{a!r}: record is {got!r}")
        return got[0]

    for a in actions:
        rev += 1
        if isinstance(a, SetBuckets):
            buckets = a.new
        elif isinstance(a, CreateBlock):
            if (a.scope, a.block_id) in blocks:
                raise StaleAction(f"{a!r}: record exists")
            blocks[(a.scope, a.block_id)] = (BlockRecord(None, why=a.why), rev)
        elif isinstance(a, GrantBlock):
            if record(a).owner is not None:
                raise StaleAction(f"{a!r}: not in the reserve")
            blocks[(a.scope, a.block_id)] = (BlockRecord(a.to, why=a.why), rev)
        elif isinstance(a, RequestHandover):
            r = record(a)
            if r.owner != a.owner or r.handover_to is not None:
                raise StaleAction(f"{a!r}: record is {r!r}")
            blocks[(a.scope, a.block_id)] = (BlockRecord(a.owner, a.to or "", a.why), rev)
        elif isinstance(a, ReclaimBlock):
            if record(a).owner != a.from_node:
                raise StaleAction(f"{a!r}: owner changed")
            blocks[(a.scope, a.block_id)] = (BlockRecord(a.to, why=a.why), rev)
        elif isinstance(a, RemoveBlock):
            if record(a).owner is not None:
                raise StaleAction(f"{a!r}: still owned")
            del blocks[(a.scope, a.block_id)]
    return Current(buckets=buckets, blocks=blocks)


def complete_handovers(current: Current, nodes: frozenset[str] | None = None) -> Current:
    """`current` after every owner asked to hand a block over (or those in `nodes`) did so."""
    blocks = dict(current.blocks)
    rev = max((r for _, r in blocks.values()), default=0)
    for key in sorted(blocks):
        rec, _ = blocks[key]
        if rec.handover_to is None or (nodes is not None and rec.owner not in nodes):
            continue
        rev += 1
        to = rec.handover_to or None
        blocks[key] = (
            BlockRecord(to, why=f"{rec.owner} handed over to {to or 'the reserve'}"),
            rev,
        )
    return Current(buckets=current.buckets, blocks=blocks)
