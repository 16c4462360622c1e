"""The spoke's in-memory binding table: pure; no I/O, no clock reads.

Owns the replica of `leases/<scope>/<ip>` (fed by the etcd watch and by our own commits, through
`apply`), plus the state that lives only in this spoke's memory: offers held for clients, the
blocks this spoke owns (with their fencing revisions) and the scope reservations that keep an
address away from everyone but its client.

Free-address selection never scans a pool. Per scope it keeps two lazily cleaned heaps:
`fresh` (addresses in owned blocks that have never been written, lowest first) and `recycled`
(addresses whose binding becomes reusable at a known time, earliest first, so the address freed
longest ago goes out first). Any event that may make an address free pushes it; any entry that
is no longer free when it reaches the top is dropped. `is_free` is the one source of truth.
Counting free addresses does not scan either: every change to an owned address records when it
becomes free again (`taken`), and the count expires those times as the clock passes them.

Two kinds of entry exist only while etcd cannot be written (docs/cluster.md, "Why no address is
bound twice"): a binding granted from the journal (`apply_local`) shadows the last binding etcd
recorded for the address (`etcd_entry` still returns that one, whose expiry bounds renewals),
and an address whose commit has an unknown outcome (`hold_unknown`) is kept from every client but
the one the commit was for, until replay settles it.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hubspoke.model import Binding, BindingState, Block, Versioned

Entry = tuple[Binding, Versioned]

BLOCK_STEP = 8192
"""Addresses `set_blocks_in_steps` goes through between two pauses (a few milliseconds)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """An address held in memory for one client until `until` (no etcd write)."""

    ip: IPv4Address
    client_key: bytes
    until: float


@dataclass(slots=True)
class _Scope:
    bindings: dict[IPv4Address, Entry] = field(default_factory=dict)
    tombstones: dict[IPv4Address, int] = field(default_factory=dict)
    clients: dict[bytes, set[IPv4Address]] = field(default_factory=dict)
    hw: dict[bytes, set[IPv4Address]] = field(default_factory=dict)
    states: dict[BindingState, int] = field(default_factory=dict)
    bound_by_node: dict[str, int] = field(default_factory=dict)
    blocks: dict[Block, int] = field(default_factory=dict)
    block_index: list[tuple[int, int, Block]] = field(default_factory=list)
    block_firsts: list[int] = field(default_factory=list)
    owned_size: int = 0
    reserved: frozenset[IPv4Address] = frozenset()
    offers: dict[IPv4Address, Offer] = field(default_factory=dict)
    offer_by_client: dict[bytes, IPv4Address] = field(default_factory=dict)
    offer_heap: list[tuple[float, int]] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)
    recycled: list[tuple[float, int]] = field(default_factory=list)
    # Owned addresses not free now or later, with the time each becomes free (inf: reserved),
    # and a heap of those times (lazily cleaned): `free_count` without a scan.
    taken: dict[int, float] = field(default_factory=dict)
    taken_heap: list[tuple[float, int]] = field(default_factory=list)
    # Journaled bindings: the etcd entry each one replaced (None: etcd held nothing).
    shadow: dict[IPv4Address, Entry | None] = field(default_factory=dict)
    # Commits of unknown outcome: address -> the client the commit was for.
    unknown: dict[IPv4Address, bytes] = field(default_factory=dict)


class BindingTable:
    """Bindings by scope and address, with client and hardware-address indexes.

    An address goes to another client only `hold + reuse_delay` seconds after its binding's
    `expires` (a DECLINED one `hold` after the end of probation). `hold` is the MCLT: a spoke
    cut off from etcd may have extended the binding by up to that much past the expiry etcd
    recorded; `reuse_delay` absorbs clock differences between spokes.
    """

    def __init__(self, reuse_delay: float = 10.0, *, hold: float = 0.0) -> None:
        if reuse_delay < 0 or hold < 0:
            raise ValueError("reuse_delay and hold must be >= 0")
        self.reuse_delay = reuse_delay
        self.hold = hold
        self._scopes: dict[str, _Scope] = {}

    def _st(self, scope: str) -> _Scope:
        st = self._scopes.get(scope)
        if st is None:
            st = self._scopes[scope] = _Scope()
        return st

    # -- replica -------------------------------------------------------------------------
    def apply(
        self,
        scope: str,
        ip: IPv4Address,
        binding: Binding | None,
        version: Versioned | None,
    ) -> bool:
        """Install (or delete, `binding=None`) the binding at `ip`; returns False when ignored.

        Idempotent: an update older (by mod_revision) than what is held, or than a delete
        already seen, is ignored. A delete without a version is unconditional.
        """
        st = self._st(scope)
        held = st.bindings.get(ip)
        rev = version.mod_revision if version is not None else None
        if rev is not None:
            if held is not None and rev < held[1].mod_revision:
                return False
            if rev < st.tombstones.get(ip, 0):
                return False
        if binding is not None and version is None:
            raise ValueError("a binding needs its version")
        st.shadow.pop(ip, None)  # what etcd says now replaces any journaled binding
        self._install(st, ip, binding, version)
        return True

    def apply_local(
        self, scope: str, ip: IPv4Address, binding: Binding, version: Versioned
    ) -> None:
        """Install a binding granted from the journal (etcd does not know it yet). The entry it
        replaces, if it came from etcd, stays readable as `etcd_entry` until etcd speaks again."""
        st = self._st(scope)
        if ip not in st.shadow:
            st.shadow[ip] = st.bindings.get(ip)
        self._install(st, ip, binding, version)

    def etcd_entry(self, scope: str, ip: IPv4Address) -> Entry | None:
        """The last binding etcd recorded for `ip` as far as we know (under any journaled one)."""
        st = self._scopes.get(scope)
        if st is None:
            return None
        if ip in st.shadow:
            return st.shadow[ip]
        return st.bindings.get(ip)

    def journaled(self, scope: str) -> int:
        """Addresses whose binding here came from the journal, not (yet) from etcd."""
        st = self._scopes.get(scope)
        return len(st.shadow) if st is not None else 0

    def unsettled_in(self, block: Block) -> bool:
        """Does `block` hold an address etcd may not know the truth of: a binding granted from
        the journal, or a commit of unknown outcome? (Checked before a hand-over.)"""
        st = self._scopes.get(block.scope)
        if st is None:
            return False
        return any(ip in block for ip in st.shadow) or any(ip in block for ip in st.unknown)

    # -- commits of unknown outcome ------------------------------------------------------
    def hold_unknown(self, scope: str, ip: IPv4Address, client_key: bytes) -> None:
        """A commit of `ip` for `client_key` may or may not have reached etcd: keep `ip` from
        every other client until `settle_unknown` (replay found out)."""
        st = self._st(scope)
        st.unknown[ip] = client_key
        self._retake(st, ip)

    def settle_unknown(self, scope: str, ip: IPv4Address) -> None:
        st = self._scopes.get(scope)
        if st is not None and st.unknown.pop(ip, None) is not None:
            self._push(st, ip)
            self._retake(st, ip)

    def unknown_holder(self, scope: str, ip: IPv4Address) -> bytes | None:
        st = self._scopes.get(scope)
        return st.unknown.get(ip) if st is not None else None

    def unknown_count(self) -> int:
        return sum(len(st.unknown) for st in self._scopes.values())

    def _install(
        self, st: _Scope, ip: IPv4Address, binding: Binding | None, version: Versioned | None
    ) -> None:
        held = st.bindings.get(ip)
        if held is not None:
            self._unindex(st, ip, held[0])
        if binding is None:
            st.bindings.pop(ip, None)
            if version is not None:
                st.tombstones[ip] = version.mod_revision
            self._push(st, ip)
            self._retake(st, ip)
            return
        assert version is not None
        st.tombstones.pop(ip, None)
        st.bindings[ip] = (binding, version)
        st.clients.setdefault(binding.client_key, set()).add(ip)
        st.hw.setdefault(binding.hw_address, set()).add(ip)
        st.states[binding.state] = st.states.get(binding.state, 0) + 1
        if binding.state is BindingState.BOUND:
            st.bound_by_node[binding.node] = st.bound_by_node.get(binding.node, 0) + 1
        self._push(st, ip)
        self._retake(st, ip)
        if len(st.recycled) > 64 and len(st.recycled) > 4 * len(st.bindings):
            self._compact(st)

    def _unindex(self, st: _Scope, ip: IPv4Address, b: Binding) -> None:
        for index, key in ((st.clients, b.client_key), (st.hw, b.hw_address)):
            ips = index.get(key)
            if ips is not None:
                ips.discard(ip)
                if not ips:
                    del index[key]
        st.states[b.state] -= 1
        if b.state is BindingState.BOUND:
            st.bound_by_node[b.node] -= 1

    def get(self, scope: str, ip: IPv4Address) -> Entry | None:
        st = self._scopes.get(scope)
        return st.bindings.get(ip) if st is not None else None

    def by_client(self, scope: str, client_key: bytes) -> Entry | None:
        """The client's most recently written binding in `scope` (any state)."""
        st = self._scopes.get(scope)
        if st is None or client_key not in st.clients:
            return None
        entries = [st.bindings[ip] for ip in st.clients[client_key]]
        return max(entries, key=lambda e: e[1].mod_revision)

    def by_hw(self, scope: str, hw_address: bytes) -> list[Entry]:
        """Every binding in `scope` carrying `hw_address`, newest first."""
        st = self._scopes.get(scope)
        if st is None:
            return []
        entries = [st.bindings[ip] for ip in st.hw.get(hw_address, ())]
        return sorted(entries, key=lambda e: -e[1].mod_revision)

    def scopes(self) -> list[str]:
        return sorted(self._scopes)

    # -- ownership and reservations ------------------------------------------------------
    def set_blocks(self, scope: str, blocks: Mapping[Block, int]) -> None:
        """Replace the blocks this spoke owns in `scope` (block -> fencing revision)."""
        for _ in self.set_blocks_in_steps(scope, blocks):
            pass

    def set_blocks_in_steps(
        self, scope: str, blocks: Mapping[Block, int], step: int = BLOCK_STEP
    ) -> Iterator[None]:
        """`set_blocks`, pausing (yielding) after every `step` addresses of the blocks added or
        removed, so that a caller on an event loop can let it run between steps.

        Ownership (what `owned_block` and `is_free` read) changes at once; between steps only
        the bookkeeping lags: the never-used addresses of the added blocks reach `pick_free` at
        the last step, and `free_count` may count a taken address as free until its block's
        turn. Neither can make an address that is not free look free to the commit path.
        """
        st = self._st(scope)
        added = sorted((b for b in blocks if b not in st.blocks), key=lambda b: int(b.first))
        removed = [b for b in st.blocks if b not in blocks]
        st.blocks = dict(blocks)
        st.block_index = sorted((int(b.first), int(b.last), b) for b in st.blocks)
        st.block_firsts = [first for first, _, _ in st.block_index]
        st.owned_size = sum(last - first + 1 for first, last, _ in st.block_index)
        done = 0
        for block in removed:
            for i in range(int(block.first), int(block.last) + 1):
                st.taken.pop(i, None)
            done += int(block.last) - int(block.first) + 1
            if done >= step:
                done = 0
                yield
        never: list[int] = []
        for block in added:
            first, last = int(block.first), int(block.last)
            if not (st.bindings or st.offers or st.reserved):
                never.extend(range(first, last + 1))  # nothing held yet (a start): no lookups
            else:
                for i in range(first, last + 1):
                    ip = IPv4Address(i)
                    if ip in st.bindings:
                        self._push(st, ip)
                    else:
                        never.append(i)
                    if ip in st.bindings or ip in st.offers or ip in st.reserved:
                        self._retake(st, ip)
            done += last - first + 1
            if done >= step:
                done = 0
                yield
        st.fresh.extend(never)
        heapq.heapify(st.fresh)

    def owned_block(self, scope: str, ip: IPv4Address) -> tuple[Block, int] | None:
        """The owned block holding `ip` and its fencing revision, or None."""
        st = self._scopes.get(scope)
        if st is None:
            return None
        return self._owned(st, int(ip))

    def _owned(self, st: _Scope, i: int) -> tuple[Block, int] | None:
        pos = bisect.bisect_right(st.block_firsts, i) - 1
        if pos < 0:
            return None
        first, last, block = st.block_index[pos]
        if first <= i <= last:
            return block, st.blocks[block]
        return None

    def set_reserved(self, scope: str, ips: Iterable[IPv4Address]) -> None:
        """Addresses reserved for particular clients: never chosen as free addresses."""
        st = self._st(scope)
        new = frozenset(ips)
        released = st.reserved - new
        changed = released | (new - st.reserved)
        st.reserved = new
        for ip in released:
            self._push(st, ip)
        for ip in changed:
            self._retake(st, ip)

    # -- offers --------------------------------------------------------------------------
    def hold_offer(self, scope: str, ip: IPv4Address, client_key: bytes, until: float) -> None:
        """Hold `ip` for `client_key` until `until`; replaces the client's previous offer."""
        st = self._st(scope)
        previous = st.offer_by_client.get(client_key)
        if previous is not None and previous != ip:
            self._drop_offer(st, previous)
        other = st.offers.get(ip)
        if other is not None and other.client_key != client_key:
            st.offer_by_client.pop(other.client_key, None)
        st.offers[ip] = Offer(ip, client_key, until)
        st.offer_by_client[client_key] = ip
        heapq.heappush(st.offer_heap, (until, int(ip)))
        self._retake(st, ip)

    def offer_for(self, scope: str, client_key: bytes, now: float) -> Offer | None:
        st = self._scopes.get(scope)
        if st is None:
            return None
        ip = st.offer_by_client.get(client_key)
        offer = st.offers.get(ip) if ip is not None else None
        return offer if offer is not None and offer.until > now else None

    def holds_offer_for(self, client_key: bytes) -> bool:
        """Is an offer (live or lapsed, not yet expired away) held for `client_key` in any scope?"""
        return any(client_key in st.offer_by_client for st in self._scopes.values())

    def offered(self, scope: str, ip: IPv4Address, now: float) -> Offer | None:
        st = self._scopes.get(scope)
        offer = st.offers.get(ip) if st is not None else None
        return offer if offer is not None and offer.until > now else None

    def forget_offer(self, scope: str, client_key: bytes) -> None:
        """Drop the offer held for `client_key` in `scope`, if any."""
        st = self._scopes.get(scope)
        if st is not None and client_key in st.offer_by_client:
            self._drop_offer(st, st.offer_by_client[client_key])

    def _drop_offer(self, st: _Scope, ip: IPv4Address) -> None:
        offer = st.offers.pop(ip, None)
        if offer is not None:
            st.offer_by_client.pop(offer.client_key, None)
            self._push(st, ip)
            self._retake(st, ip)

    def expire_offers(self, now: float) -> None:
        """Release every offer whose hold ended at or before `now`."""
        for st in self._scopes.values():
            self._expire(st, now)

    def _expire(self, st: _Scope, now: float) -> None:
        heap = st.offer_heap
        while heap and heap[0][0] <= now:
            _, i = heapq.heappop(heap)
            ip = IPv4Address(i)
            offer = st.offers.get(ip)
            if offer is not None and offer.until <= now:
                self._drop_offer(st, ip)

    # -- free addresses ------------------------------------------------------------------
    def reusable_at(self, binding: Binding) -> float:
        """When an address held by `binding` may go to another client."""
        if binding.state is BindingState.DECLINED:
            return binding.expires + self.hold
        return binding.expires + self.hold + self.reuse_delay

    def is_free(
        self, scope: str, ip: IPv4Address, now: float, client_key: bytes | None = None
    ) -> bool:
        """May `ip` be newly allocated now (to `client_key`, when an offer for it matters)?"""
        st = self._scopes.get(scope)
        return st is not None and self._is_free(st, ip, now, client_key)

    def _is_free(
        self, st: _Scope, ip: IPv4Address, now: float, client_key: bytes | None = None
    ) -> bool:
        if ip in st.reserved or self._owned(st, int(ip)) is None:
            return False
        holder = st.unknown.get(ip)
        if holder is not None and holder != client_key:
            return False
        offer = st.offers.get(ip)
        if offer is not None and offer.until > now and offer.client_key != client_key:
            return False
        entry = st.bindings.get(ip)
        return entry is None or self.reusable_at(entry[0]) <= now

    def pick_free(self, scope: str, now: float) -> IPv4Address | None:
        """A free address: never used first (lowest), then the one freed longest ago.

        Does not reserve it: hold an offer on it before the next pick.
        """
        st = self._scopes.get(scope)
        if st is None:
            return None
        self._expire(st, now)
        while st.fresh:
            ip = IPv4Address(st.fresh[0])
            if ip not in st.bindings and self._is_free(st, ip, now):
                return ip
            heapq.heappop(st.fresh)
        while st.recycled and st.recycled[0][0] <= now:
            at, i = st.recycled[0]
            ip = IPv4Address(i)
            entry = st.bindings.get(ip)
            current = entry is None or self.reusable_at(entry[0]) == at
            if current and self._is_free(st, ip, now):
                return ip
            heapq.heappop(st.recycled)
        return None

    def _push(self, st: _Scope, ip: IPv4Address) -> None:
        """Make `ip` visible to `pick_free` again (it may or may not be free)."""
        if self._owned(st, int(ip)) is None:
            return
        entry = st.bindings.get(ip)
        if entry is None:
            heapq.heappush(st.fresh, int(ip))
        else:
            heapq.heappush(st.recycled, (self.reusable_at(entry[0]), int(ip)))

    def _retake(self, st: _Scope, ip: IPv4Address) -> None:
        """Record when owned `ip` becomes free again after a change to it (for `free_count`)."""
        i = int(ip)
        if self._owned(st, i) is None:
            st.taken.pop(i, None)
            return
        if ip in st.reserved or ip in st.unknown:
            until = math.inf
        else:
            until = -math.inf
            offer = st.offers.get(ip)
            if offer is not None:
                until = offer.until
            entry = st.bindings.get(ip)
            if entry is not None:
                until = max(until, self.reusable_at(entry[0]))
        if until == -math.inf:
            st.taken.pop(i, None)
        elif st.taken.get(i) != until:
            st.taken[i] = until
            if until != math.inf:
                heapq.heappush(st.taken_heap, (until, i))

    def _compact(self, st: _Scope) -> None:
        st.recycled = [
            (self.reusable_at(b), int(ip))
            for ip, (b, _) in st.bindings.items()
            if self._owned(st, int(ip)) is not None
        ]
        heapq.heapify(st.recycled)

    # -- metrics -------------------------------------------------------------------------
    def count_by_state(self, scope: str) -> dict[BindingState, int]:
        st = self._scopes.get(scope)
        if st is None:
            return {}
        return {state: n for state, n in st.states.items() if n}

    def bound_by(self, scope: str, node: str) -> int:
        """Bindings in state BOUND (expired or not) last written by `node`."""
        return self._st(scope).bound_by_node.get(node, 0)

    def offer_count(self, scope: str, now: float) -> int:
        st = self._scopes.get(scope)
        if st is None:
            return 0
        return sum(1 for o in st.offers.values() if o.until > now)

    def free_count(self, scope: str, now: float) -> int:
        """Free addresses in owned blocks at `now` (the clock only moves forward).

        Amortized O(log n) per change since the last call, never a scan of bindings or pools:
        every owned address that is taken is in `taken` with the time it becomes free.
        """
        st = self._scopes.get(scope)
        if st is None:
            return 0
        heap, taken = st.taken_heap, st.taken
        while heap and heap[0][0] <= now:
            until, i = heapq.heappop(heap)
            if taken.get(i) == until:
                del taken[i]
        if len(heap) > 64 and len(heap) > 4 * len(taken):
            st.taken_heap = [(u, i) for i, u in taken.items() if u != math.inf]
            heapq.heapify(st.taken_heap)
        return st.owned_size - len(taken)
