"""Who owns each of the 256 RFC 3074 buckets: weighted shares with the fewest moves. Pure; no I/O.

Every bucket goes to a live, non-draining spoke, in proportion to its weight. Each spoke's
share is its exact quota rounded down, and the buckets left over (the largest-remainder
seats) go one each to spokes with a fractional quota, first to those already holding more
than their floor, so a share is always within 1 of the exact quota and a change moves as few
buckets as possible. A bucket stays with its owner while the owner is eligible and under its
share; only the surplus (and the buckets of spokes that left) moves. Ties break by node name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from hub.plan.model import SetBuckets, SpokeView
from hubspoke.assign import NUM_BUCKETS, BucketMap


def _weights(eligible: Sequence[SpokeView]) -> dict[str, Fraction]:
    w = {
        s.node: Fraction(s.weight) if math.isfinite(s.weight) and s.weight > 0 else Fraction(0)
        for s in eligible
    }
    if w and sum(w.values()) == 0:
        # Every eligible spoke is a standby: they share the buckets rather than drop clients.
        w = {node: Fraction(1) for node in w}
    return w


def exact_quotas(spokes: Sequence[SpokeView]) -> dict[str, Fraction]:
    """Each eligible spoke's exact (fractional) share of the 256 buckets."""
    w = _weights([s for s in spokes if s.is_eligible])
    total = sum(w.values())
    if not total:
        return {}
    return {node: NUM_BUCKETS * wi / total for node, wi in w.items()}


def bucket_targets(spokes: Sequence[SpokeView], held: Mapping[str, int]) -> dict[str, int]:
    """How many buckets each eligible spoke should own, given how many it holds now."""
    quotas = exact_quotas(spokes)
    floors = {node: math.floor(q) for node, q in quotas.items()}
    seats = NUM_BUCKETS - sum(floors.values())
    candidates = [node for node, q in quotas.items() if q != floors[node]]

    def rank(node: str) -> tuple[int, Fraction, str]:
        have = held.get(node, 0)
        # Holding more than the floor: a seat saves a move. Short of it: it gains anyway.
        group = 0 if have > floors[node] else 1 if have < floors[node] else 2
        return (group, -(quotas[node] - floors[node]), node)

    targets = dict(floors)
    for node in sorted(candidates, key=rank)[:seats]:
        targets[node] += 1
    return targets


def assign_buckets(spokes: Sequence[SpokeView], current: BucketMap) -> BucketMap:
    """The new bucket map (equal to `current` when nothing needs to move)."""
    eligible = {s.node for s in spokes if s.is_eligible}
    held = {node: n for node, n in current.counts().items() if node in eligible}
    targets = bucket_targets(spokes, held)
    if not targets:
        return BucketMap()
    kept: dict[str, int] = dict.fromkeys(targets, 0)
    owners: list[str | None] = [None] * NUM_BUCKETS
    free: list[int] = []
    for b, owner in enumerate(current.owners):
        if owner is not None and owner in targets and kept[owner] < targets[owner]:
            owners[b] = owner
            kept[owner] += 1
        else:
            free.append(b)
    it = iter(free)
    for node in sorted(targets):
        for _ in range(targets[node] - kept[node]):
            owners[next(it)] = node
    return BucketMap(tuple(owners))


def _label(node: str | None, views: Mapping[str, SpokeView]) -> str:
    if node is None:
        return "unowned"
    v = views.get(node)
    if v is None or not v.live:
        return f"{node} (down)"
    if v.draining:
        return f"{node} (draining)"
    return f"{node} (over its share)"


def plan_buckets(spokes: Sequence[SpokeView], current: BucketMap) -> SetBuckets | None:
    """A `SetBuckets` when the map must change, with a sentence naming what moved."""
    new = assign_buckets(spokes, current)
    if new == current:
        return None
    views = {s.node: s for s in spokes}
    gained: dict[str, int] = {}
    lost: dict[str | None, int] = {}
    for old, now in zip(current.owners, new.owners, strict=True):
        if old != now:
            lost[old] = lost.get(old, 0) + 1
            if now is not None:
                gained[now] = gained.get(now, 0) + 1
    moved = sum(lost.values())
    if not gained:
        why = f"no live spoke may answer: {moved} buckets left unowned"
    else:
        to = ", ".join(f"{n} +{k}" for n, k in sorted(gained.items()))
        src = ", ".join(
            f"{_label(n, views)} -{k}" for n, k in sorted(lost.items(), key=lambda x: x[0] or "")
        )
        shares = " ".join(f"{n}={k}" for n, k in sorted(new.counts().items()))
        why = f"{moved} buckets move to {to} from {src}; shares now {shares}"
    return SetBuckets(new=new, why=why)
