"""Which spoke owns which block of each scope, and how blocks move. Pure; no I/O.

One call decides one cycle, in priority order, each record touched at most once and at most
`max_moves_per_cycle` block actions in all (every one a revision-compared transaction):

1. a down spoke's blocks, once `now >= down_since + down_hold`, are reclaimed for the neediest
   eligible spoke (else the reserve); before that they are left alone;
2. records no longer among the blocks of any scope (scope deleted, pool changed) go back to the
   reserve (hand-over request) and are then removed; new blocks overlapping such a record are
   created only after it is gone, so no address is ever in two records;
3. a draining spoke's blocks are requested back, for the neediest spoke or the reserve;
4. initial share: an eligible spoke below `floor(blocks * (1 - reserve_fraction) / n)` blocks
   (at least 1) is granted reserve blocks;
5. utilization: an eligible spoke with fewer than `low_watermark` free addresses is granted a
   reserve block; with the reserve empty, the spoke with the most free addresses (more than a
   block above the watermark) is asked to hand one over to it.

A block whose record has `handover_to` set is left alone (its live owner is mid hand-over),
unless its owner is down past the hold. "Free addresses" are the latest report's, corrected
for blocks gained or lost since (see `ScopeUtil.capacity`) and for hand-overs under way to it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hub.plan.model import (
    BlockAction,
    CreateBlock,
    Current,
    GrantBlock,
    PlanParams,
    ReclaimBlock,
    RemoveBlock,
    RequestHandover,
    SpokeView,
)
from hubspoke.assign import BlockRecord
from hubspoke.blocks import cut_blocks
from hubspoke.model import Scope

Key = tuple[str, str]


def block_range(block_id: str) -> tuple[int, int] | None:
    """(first, last) as integers of a block id `a.b.c.d-e.f.g.h`; None if it does not parse."""
    first, sep, last = block_id.partition("-")
    try:
        lo, hi = int(IPv4Address(first)), int(IPv4Address(last))
    except ValueError:
        return None
    return (lo, hi) if sep and lo <= hi else None


@dataclass
class _Scope:
    """One scope's books for this cycle (local to one `plan_blocks` call)."""

    name: str
    sizes: dict[str, int]  # block id -> addresses, for the blocks of the current cut
    reserve: list[str] = field(default_factory=list)  # grantable, address order
    owned: dict[str, list[str]] = field(default_factory=dict)  # allocatable, address order
    incoming: dict[str, int] = field(default_factory=dict)  # node -> blocks under way to it
    free: dict[str, int] = field(default_factory=dict)  # node -> effective free addresses
    creating: bool = False

    def held(self, node: str) -> int:
        return len(self.owned.get(node, ())) + self.incoming.get(node, 0)

    def gain(self, node: str, block_id: str, *, now: bool) -> None:
        if now:
            bisect.insort(self.owned.setdefault(node, []), block_id, key=self._order)
        else:
            self.incoming[node] = self.incoming.get(node, 0) + 1
        self.free[node] = self.free.get(node, 0) + self.sizes[block_id]

    def lose(self, node: str, block_id: str) -> None:
        if block_id in self.owned.get(node, ()):
            self.owned[node].remove(block_id)
            self.free[node] = self.free.get(node, 0) - self.sizes[block_id]

    @staticmethod
    def _order(block_id: str) -> int:
        r = block_range(block_id)
        return r[0] if r else -1


class _Planner:
    def __init__(
        self,
        scopes: Sequence[Scope],
        spokes: Sequence[SpokeView],
        current: Current,
        now: float,
        params: PlanParams,
    ) -> None:
        self.p = params
        self.now = now
        self.current = current
        self.views = {s.node: s for s in spokes}
        self.eligible = sorted(s.node for s in spokes if s.is_eligible)
        self.actions: list[BlockAction] = []
        self.creates: list[CreateBlock] = []
        self.touched: set[Key] = set()
        self.cuts = {
            s.name: cut_blocks(s, params.block_size) for s in sorted(scopes, key=lambda s: s.name)
        }
        valid = {(name, b.block_id) for name, blocks in self.cuts.items() for b in blocks}
        self.stale = sorted(k for k in current.blocks if k not in valid)
        self.stale_set = frozenset(self.stale)
        self.books = {name: self._books(name) for name in self.cuts}

    # -- books -------------------------------------------------------------------------------
    def _books(self, name: str) -> _Scope:
        blocks = self.cuts[name]
        sc = _Scope(name, {b.block_id: int(b.last) - int(b.first) + 1 for b in blocks})
        for node in self.eligible:
            sc.owned[node] = []
        coming: dict[str, int] = {}
        for b in blocks:
            got = self.current.blocks.get((name, b.block_id))
            if got is None:
                continue
            rec = got[0]
            if rec.owner is None:
                sc.reserve.append(b.block_id)
            elif rec.handover_to is None:
                sc.owned.setdefault(rec.owner, []).append(b.block_id)
            elif rec.handover_to:
                sc.incoming[rec.handover_to] = sc.incoming.get(rec.handover_to, 0) + 1
                coming[rec.handover_to] = coming.get(rec.handover_to, 0) + sc.sizes[b.block_id]
        for node in self.eligible:
            alloc = sum(sc.sizes[b] for b in sc.owned[node])
            u = self.views[node].util.get(name)
            if u is None:
                sc.free[node] = alloc + coming.get(node, 0)
            elif u.capacity is not None:
                # Blocks gained since the report add their size; blocks lost since are taken
                # as having been all free (the cautious reading for a donor).
                sc.free[node] = max(0, u.free + alloc - u.capacity) + coming.get(node, 0)
            else:
                # No capacity reported: estimate it as bound + free, and count only gains.
                grown = max(0, alloc - u.bound - u.free)
                sc.free[node] = u.free + grown + coming.get(node, 0)
        return sc

    def _fair(self, sc: _Scope) -> int:
        n = len(self.eligible)
        if not n:
            return 0
        return max(1, math.floor(len(sc.sizes) * (1 - self.p.reserve_fraction) / n))

    def _neediest(self, sc: _Scope, exclude: str | None = None) -> str | None:
        """The eligible spoke that most needs a block: under the watermark or its fair share."""
        fair = self._fair(sc)
        needy = [
            n
            for n in self.eligible
            if n != exclude and (sc.free[n] < self.p.low_watermark or sc.held(n) < fair)
        ]
        return min(needy, key=lambda n: (sc.free[n], sc.held(n), n), default=None)

    # -- emitting ----------------------------------------------------------------------------
    def _room(self) -> bool:
        return len(self.actions) < self.p.max_moves_per_cycle

    def _emit(self, action: BlockAction) -> None:
        self.touched.add((action.scope, action.block_id))
        self.actions.append(action)

    def _rec(self, key: Key) -> tuple[BlockRecord, int]:
        return self.current.blocks[key]

    def _down_past_hold(self, node: str) -> bool:
        v = self.views.get(node)
        if v is None or v.live or v.down_since is None:
            return False
        return self.now >= v.down_since + self.p.down_hold

    # -- phases ------------------------------------------------------------------------------
    def create_missing(self) -> None:
        spans = sorted(r for k in self.stale if (r := block_range(k[1])) is not None)
        starts = [lo for lo, _ in spans]
        ends = list(_running_max(hi for _, hi in spans))
        for name, blocks in self.cuts.items():
            for b in blocks:
                if (name, b.block_id) in self.current.blocks:
                    continue
                # Any stale record starting at or before b.last and reaching b.first overlaps.
                i = bisect.bisect_right(starts, int(b.last))
                if i and ends[i - 1] >= int(b.first):
                    continue
                self.books[name].creating = True
                if len(self.creates) < self.p.max_creates_per_cycle:
                    self.creates.append(
                        CreateBlock(name, b.block_id, f"new block {b.block_id} of {name}: reserve")
                    )

    def reclaim_down(self) -> None:
        for key in sorted(self.current.blocks):
            rec, rev = self._rec(key)
            if rec.owner is None or not self._down_past_hold(rec.owner) or not self._room():
                continue
            scope, block_id = key
            v = self.views[rec.owner]
            held = f"down since {v.down_since:.0f}, past the {self.p.down_hold:.0f} s hold"
            sc = self.books.get(scope)
            to = None
            if sc is not None and block_id in sc.sizes:
                to = self._neediest(sc)
                if to is not None:
                    sc.gain(to, block_id, now=True)
            dest = to or "the reserve"
            why = f"{rec.owner} {held}: its block {block_id} of {scope} goes to {dest}"
            self._emit(ReclaimBlock(scope, block_id, rec.owner, to, rev, why))

    def retire_stale(self) -> None:
        for key in self.stale:
            if key in self.touched or not self._room():
                continue
            rec, rev = self._rec(key)
            scope, block_id = key
            gone = "scope deleted" if scope not in self.cuts else "pool changed"
            if rec.owner is None:
                why = f"block {block_id} of {scope} is unowned and no longer cut ({gone})"
                self._emit(RemoveBlock(scope, block_id, rev, why))
            elif rec.handover_to is None and self.views.get(rec.owner, _GONE).live:
                why = f"{rec.owner} gives back {block_id} of {scope}: no longer cut ({gone})"
                self._emit(RequestHandover(scope, block_id, rec.owner, None, rev, why))

    def drain(self) -> None:
        for key in sorted(self.current.blocks):
            rec, rev = self._rec(key)
            v = self.views.get(rec.owner or "")
            if key in self.touched or key in self.stale_set or v is None:
                continue
            if not (v.live and v.draining):
                continue
            if rec.handover_to is not None or not self._room():
                continue
            scope, block_id = key
            sc = self.books[scope]
            sc.lose(v.node, block_id)
            to = self._neediest(sc)
            if to is not None:
                sc.gain(to, block_id, now=False)
            dest = to or "the reserve"
            why = f"{v.node} is draining: its block {block_id} of {scope} goes to {dest}"
            self._emit(RequestHandover(scope, block_id, v.node, to, rev, why))

    def initial_share(self) -> None:
        for sc in self.books.values():
            fair = self._fair(sc)
            while sc.reserve and self._room():
                below = [n for n in self.eligible if sc.held(n) < fair]
                if not below:
                    break
                node = min(below, key=lambda n: (sc.held(n), n))
                has = sc.held(node)
                self._grant(sc, node, f"{node} holds {has} of its fair share of {fair}")

    def watermark(self) -> None:
        for sc in self.books.values():
            granted: set[str] = set()
            while sc.reserve and self._room():
                short = [
                    n
                    for n in self.eligible
                    if sc.free[n] < self.p.low_watermark and self._may_regrant(sc, n, granted)
                ]
                if not short:
                    break
                node = min(short, key=lambda n: (sc.free[n], n))
                granted.add(node)
                free = sc.free[node]
                self._grant(sc, node, f"{node} has {free} free, under the {self.p.low_watermark}")
            if not sc.reserve and not sc.creating:
                self._handovers(sc)

    def _may_regrant(self, sc: _Scope, node: str, granted: set[str]) -> bool:
        # Without a reported capacity the free count cannot see this cycle's grants: one each.
        u = self.views[node].util.get(sc.name)
        return node not in granted or u is None or u.capacity is not None

    def _grant(self, sc: _Scope, node: str, reason: str) -> None:
        block_id = sc.reserve.pop(0)
        rev = self._rec((sc.name, block_id))[1]
        sc.gain(node, block_id, now=True)
        why = f"reserve block {block_id} of {sc.name} to {node}: {reason}"
        self._emit(GrantBlock(sc.name, block_id, node, rev, why))

    def _handovers(self, sc: _Scope) -> None:
        wm = self.p.low_watermark
        asked: set[str] = set()
        while self._room():
            short = [n for n in self.eligible if sc.free[n] < wm and n not in asked]
            if not short:
                return
            node = min(short, key=lambda n: (sc.free[n], n))
            asked.add(node)
            offers = {
                d: b
                for d in self.eligible
                if d != node
                and (b := self._givable(sc, d)) is not None
                and sc.free[d] > wm + sc.sizes[b]
            }
            if not offers:
                continue
            donor = min(offers, key=lambda d: (-sc.free[d], d))
            block_id = offers[donor]
            rev = self._rec((sc.name, block_id))[1]
            had = sc.free[node]
            spare = sc.free[donor]
            sc.lose(donor, block_id)
            sc.gain(node, block_id, now=False)
            why = (
                f"{node} has {had} free in {sc.name}, under the {wm}, and the reserve is empty: "
                f"{donor} ({spare} free) hands over {block_id}"
            )
            self._emit(RequestHandover(sc.name, block_id, donor, node, rev, why))

    def _givable(self, sc: _Scope, node: str) -> str | None:
        """The block `node` would give up: its highest one not touched this cycle."""
        for block_id in reversed(sc.owned.get(node, ())):
            if (sc.name, block_id) not in self.touched:
                return block_id
        return None


_GONE = SpokeView(node="", live=False)


def _running_max(values: Iterable[int]) -> list[int]:
    out: list[int] = []
    best = -1
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def plan_blocks(
    scopes: Sequence[Scope],
    spokes: Sequence[SpokeView],
    current: Current,
    now: float,
    params: PlanParams,
) -> tuple[list[CreateBlock], list[BlockAction]]:
    """This cycle's new reserve records and block moves."""
    pl = _Planner(scopes, spokes, current, now, params)
    pl.create_missing()
    pl.reclaim_down()
    pl.retire_stale()
    pl.drain()
    pl.initial_share()
    pl.watermark()
    return pl.creates, pl.actions
