"""The spoke's view of what the hub assigned it: buckets and block records. Pure; no I/O.

`Assignments` is fed the keys under `assign/` (the initial range, then watch events) and the
scopes; it answers which blocks this node may allocate from (with their fencing revisions),
which buckets it answers, which hand-overs the hub asked of it, and which allocatable blocks
wait for a scope this spoke does not know yet. The I/O around it is `spoke.assign.follow`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from hubspoke.assign import BlockRecord, BucketMap
from hubspoke.blocks import block_in_scope
from hubspoke.keys import KeyError_, Keys
from hubspoke.model import Block, Scope
from hubspoke.values import ValueFormatError
from spoke.leases.table import BindingTable

log = logging.getLogger("hubspoke.cluster")

BlockKey = tuple[str, str]  # (scope, block id)


@dataclass(frozen=True, slots=True)
class SeenRecord:
    """A block record and the mod_revision it was read at (the block's fencing token)."""

    record: BlockRecord
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Handover:
    """The hub asked us (the owner) to give `block_id` to `to` ("" : the hub's reserve)."""

    scope: str
    block_id: str
    to: str
    mod_revision: int

    @property
    def new_owner(self) -> str | None:
        return self.to or None


def parse_block_id(scope: str, block_id: str) -> Block | None:
    """`<first>-<last>` into a `Block`, None if it does not parse."""
    first, sep, last = block_id.partition("-")
    try:
        block = Block(scope, IPv4Address(first), IPv4Address(last))
    except ValueError:
        return None
    return block if sep and block.first <= block.last else None


class Assignments:
    """What `node` holds, as last read from `assign/` (apply changes in revision order)."""

    def __init__(self, node: str, keys: Keys) -> None:
        self.node = node
        self.keys = keys
        self.bucket_map = BucketMap()
        self.records: dict[BlockKey, SeenRecord] = {}
        self._scopes: dict[str, Scope] = {}

    # -- input -----------------------------------------------------------------------------
    def reset(self) -> set[str]:
        """Forget every record and the bucket map (before a full reload); the touched scopes."""
        touched = {scope for scope, _ in self.records}
        self.records.clear()
        self.bucket_map = BucketMap()
        return touched

    def put(self, key: bytes, value: bytes, mod_revision: int) -> set[str]:
        """Apply one key's new value; returns the scopes whose blocks may have changed."""
        if key == self.keys.buckets():
            try:
                self.bucket_map = BucketMap.decode(value)
            except ValueFormatError as e:
                log.error("cluster.bad_value", extra={"key": key.decode(), "error": str(e)})
                self.bucket_map = BucketMap()
            return set()
        bkey = self._block_key(key)
        if bkey is None:
            return set()
        try:
            record = BlockRecord.decode(value)
        except ValueFormatError as e:
            log.error("cluster.bad_value", extra={"key": key.decode(), "error": str(e)})
            self.records.pop(bkey, None)
            return {bkey[0]}
        self.records[bkey] = SeenRecord(record, mod_revision)
        return {bkey[0]}

    def delete(self, key: bytes) -> set[str]:
        if key == self.keys.buckets():
            self.bucket_map = BucketMap()
            return set()
        bkey = self._block_key(key)
        if bkey is None or self.records.pop(bkey, None) is None:
            return set()
        return {bkey[0]}

    def _block_key(self, key: bytes) -> BlockKey | None:
        try:
            return self.keys.parse_block(key)
        except KeyError_:
            log.warning("cluster.unknown_key", extra={"key": key.decode(errors="replace")})
            return None

    def set_scopes(self, scopes: Iterable[Scope]) -> set[str]:
        """Replace the known scopes; returns every scope that appeared, changed or vanished."""
        new = {s.name: s for s in scopes}
        touched = {n for n in new.keys() | self._scopes.keys() if new.get(n) != self._scopes.get(n)}
        self._scopes = new
        return touched

    # -- answers ---------------------------------------------------------------------------
    @property
    def buckets(self) -> frozenset[int]:
        return self.bucket_map.buckets_of(self.node)

    @property
    def known_scopes(self) -> tuple[Scope, ...]:
        return tuple(self._scopes.values())

    @property
    def scope_names(self) -> frozenset[str]:
        return frozenset(self._scopes)

    def owned(self, scope: str) -> dict[Block, int]:
        """Blocks of `scope` whose record is `allocatable_by(node)`, with their fences."""
        known = self._scopes.get(scope)
        if known is None:
            return {}
        out: dict[Block, int] = {}
        for (s, block_id), seen in self.records.items():
            if s != scope or not seen.record.allocatable_by(self.node):
                continue
            block = block_in_scope(known, block_id)
            if block is None:
                log.warning("cluster.unknown_block", extra={"scope": scope, "block": block_id})
                continue
            out[block] = seen.mod_revision
        return out

    def handovers(self) -> dict[BlockKey, Handover]:
        """Every block we own that the hub asked us to hand over."""
        return {
            (scope, block_id): Handover(scope, block_id, seen.record.handover_to, seen.mod_revision)
            for (scope, block_id), seen in self.records.items()
            if seen.record.owner == self.node and seen.record.handover_to is not None
        }

    def pending(self) -> frozenset[BlockKey]:
        """Allocatable blocks of scopes not known yet (used once the scope appears)."""
        return frozenset(
            (scope, block_id)
            for (scope, block_id), seen in self.records.items()
            if scope not in self._scopes and seen.record.allocatable_by(self.node)
        )


def offers_in_block(table: BindingTable, block: Block, now: float) -> float | None:
    """When the last live offer `table` holds inside `block` lapses (None: no offer)."""
    untils = []
    for i in range(int(block.first), int(block.last) + 1):
        offer = table.offered(block.scope, IPv4Address(i), now)
        if offer is not None:
            untils.append(offer.until)
    return max(untils) if untils else None
