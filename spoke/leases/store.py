"""The etcd side of bindings: block claims, the initial load, the watch, the commit transaction.

The in-memory `BindingTable` is a replica of `leases/` fed from here: a paginated range at one
revision, then a watch from the next revision (the watch *is* the lease synchronisation). A
compaction past the watch's position triggers a full resync. `commit` is the commit rule of
DESIGN.md: one transaction comparing the binding key's revision (and, for a new allocation, the
block key's revision, the fencing token) and writing the binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from hubspoke.blocks import cut_blocks
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError, EtcdTimeout, EtcdUncertain, WatchCompacted
from hubspoke.etcd.records import Compare, KeyValue, Op, RangeResult
from hubspoke.etcd.watch import EventType, watch_prefix
from hubspoke.keys import KeyError_, Keys, prefix_end
from hubspoke.model import Binding, Block, Scope, Versioned
from hubspoke.values import (
    ValueFormatError,
    decode_binding,
    decode_block_owner,
    encode_binding,
    encode_block_owner,
)
from spoke.dhcp.decisions import BindingWrite
from spoke.leases.table import BindingTable

log = logging.getLogger("hubspoke.leases")

LOAD_PAGE = 2000
"""Keys per ranged read when loading the replica or the block records."""
APPLY_SLICE = 1000
"""Bindings decoded and applied per turn of the event loop while loading (~10-20 ms)."""
CLAIM_BATCH = 128
"""Block claims per transaction: a compare and a put each (etcd 3.4 allows 128 of each)."""

MIN_REREAD = 0.05
"""Seconds: less than this left of a commit's deadline, an uncertain outcome is not re-read."""


@dataclass(frozen=True, slots=True)
class Committed:
    version: Versioned


@dataclass(frozen=True, slots=True)
class Conflict:
    """A compare failed: `current` is what etcd holds now for the address (None: nothing)."""

    current: tuple[Binding, Versioned] | None
    fence_lost: bool


CommitOutcome = Committed | Conflict


class LeaseStore:
    """Keeps `table` in step with etcd and commits bindings for one spoke (`node`)."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        table: BindingTable,
        node: str,
        *,
        on_bad_value: Callable[[bytes], None] | None = None,
        commit_timeout: float | None = None,
        freeze_loaded: bool = False,
    ) -> None:
        """`commit_timeout`: the deadline of every commit round trip (None: the client's
        default). A hung etcd must not hold a commit longer than the failover machine takes to
        notice it (`failover.interrupted_after`); past it the outcome is unknown.
        `freeze_loaded`: `load` moves what it loaded out of the cyclic garbage collector's
        reach (`gc.freeze`, process-wide: for a spoke process, not a test or the simulation)."""
        self.commit_timeout = commit_timeout
        self.freeze_loaded = freeze_loaded
        self._client = client
        self.keys = keys
        self.table = table
        self._node = node
        self._on_bad_value = on_bad_value
        self._fences: dict[tuple[str, str], int] = {}
        self.revision = 0

    # -- blocks ----------------------------------------------------------------------------
    async def claim_all_blocks(self, scopes: Sequence[Scope]) -> int:
        """Own every block of every scope (single-spoke mode); returns the number of blocks.

        Each block key gets our owner record; its mod_revision after the write is the fencing
        token every new allocation from the block compares. A block already recorded as ours
        keeps its revision, so a restart does not invalidate in-flight reasoning elsewhere.

        A big pool has thousands of blocks: the records are read with paged ranges, the claims
        go `CLAIM_BATCH` to a transaction (each claim keeps its own compare: `create_revision
        == 0`, or the record's mod_revision as read), and the table takes the blocks in steps
        that let the event loop run. A batch whose compares fail (someone wrote a record
        meanwhile) is claimed block by block, as before.
        """
        total = 0
        for scope in scopes:
            blocks = cut_blocks(scope)
            stored = await self._block_records(scope.name)
            owned: dict[Block, int] = {}
            for i in range(0, len(blocks), CLAIM_BATCH):
                owned.update(await self._claim_batch(blocks[i : i + CLAIM_BATCH], stored))
                await asyncio.sleep(0)  # a restart claims nothing: no round trip to yield at
            for _ in self.table.set_blocks_in_steps(scope.name, owned):
                await asyncio.sleep(0)
            total += len(owned)
        return total

    async def _block_records(self, scope: str) -> dict[bytes, KeyValue]:
        """Every block record of `scope` (key -> kv), read in pages at one revision."""
        kvs, _ = await self._client.range_prefix_all(
            self.keys.blocks_prefix(scope), page_size=LOAD_PAGE
        )
        return {kv.key: kv for kv in kvs}

    def _owner_compare(self, block: Block, kv: KeyValue | None) -> int | Compare:
        """Our fence if the record `kv` already names us, else the compare claiming it."""
        key = self.keys.block(block.scope, block.block_id)
        if kv is None:
            return Compare.create_revision(key, "=", 0)
        try:
            if decode_block_owner(kv.value) == self._node:
                return kv.mod_revision
        except ValueFormatError:
            pass
        return Compare.mod_revision(key, "=", kv.mod_revision)

    async def _claim_batch(
        self, blocks: Sequence[Block], stored: dict[bytes, KeyValue]
    ) -> dict[Block, int]:
        owned: dict[Block, int] = {}
        claims: list[tuple[Block, Compare]] = []
        for block in blocks:
            seen = self._owner_compare(
                block, stored.get(self.keys.block(block.scope, block.block_id))
            )
            if isinstance(seen, int):
                self._fences[(block.scope, block.block_id)] = seen
                owned[block] = seen
            else:
                claims.append((block, seen))
        if claims:
            value = encode_block_owner(self._node)
            result = await self._client.txn(
                [compare for _, compare in claims],
                [Op.put(compare.key, value) for _, compare in claims],
            )
            if result.succeeded:
                for block, _ in claims:
                    self._fences[(block.scope, block.block_id)] = result.revision
                    owned[block] = result.revision
                return owned
        for block, _ in claims:
            owned[block] = await self._claim(block)
        return owned

    async def _claim(self, block: Block) -> int:
        key = self.keys.block(block.scope, block.block_id)
        while True:
            seen = self._owner_compare(block, await self._client.get(key))
            if isinstance(seen, int):
                self._fences[(block.scope, block.block_id)] = seen
                return seen
            result = await self._client.txn([seen], [Op.put(key, encode_block_owner(self._node))])
            if result.succeeded:
                self._fences[(block.scope, block.block_id)] = result.revision
                return result.revision

    # -- replica ---------------------------------------------------------------------------
    async def load(self) -> int:
        """Read every binding at one revision into the table; returns that revision.

        Paged: `LOAD_PAGE` keys per range, every page read at the revision of the first (one
        consistent snapshot: the watch resumes from that revision + 1), the next page asked for
        while this one is applied. etcd 3.4 walks its index up to a range's end for every page,
        so pages with an open end cost the rest of the table each (a million bindings: 85 s of
        etcd time); after one open page the rest of the last key's group (`Keys.lease_group`:
        its /16) is read with the group's end, and the next open page starts after the group.
        Applied `APPLY_SLICE` bindings at a time, the event loop let run between slices: a
        million bindings must not hold the session's keep-alive. With `freeze_loaded`, each
        applied page is then moved out of the cyclic garbage collector's reach (`gc.freeze`;
        the replica holds no cycles, refcounting still frees what is dropped): otherwise every
        full collection walks the whole replica, a stall that grows with it (0.4 s at 200,000).
        """
        prefix = self.keys.leases_prefix()
        end = prefix_end(prefix)
        page = await self._client.range(prefix, end, limit=LOAD_PAGE)
        revision = page.revision
        bound = end  # the end of the range `page` was read with
        count = 0
        while True:
            following = None
            step = self._next_page(page, bound, end)
            if step is not None:
                start, bound = step
                following = asyncio.ensure_future(
                    self._client.range(start, bound, limit=LOAD_PAGE, revision=revision)
                )
            try:
                kvs = page.kvs
                for i in range(0, len(kvs), APPLY_SLICE):
                    for kv in kvs[i : i + APPLY_SLICE]:
                        self._apply_put(kv)
                    await asyncio.sleep(0)
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            count += len(kvs)
            if self.freeze_loaded:
                gc.freeze()
            if following is None:
                break
            page = await following
        self.revision = revision
        log.info("leases.loaded", extra={"bindings": count, "revision": revision})
        return revision

    def _next_page(self, page: RangeResult, bound: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        """The (start, end) of the range after `page` (read up to `bound`), None: all read."""
        if page.more and page.kvs:
            last = page.kvs[-1].key
            group = self.keys.lease_group(last) if bound == end else None
            return last + b"\0", bound if group is None else prefix_end(group)
        if bound != end:  # a group read to its end: the next open page starts after it
            return bound, end
        return None

    async def follow(self, ready: asyncio.Event | None = None) -> None:
        """Apply every change under `leases/` after `self.revision`, forever.

        On compaction past our position: full resync (range, then a new watch).
        """
        prefix = self.keys.leases_prefix()
        while True:
            try:
                stream = watch_prefix(self._client, prefix, self.revision + 1)
                async with contextlib.aclosing(stream):  # closed in this task, when cancelled
                    async for batch in stream:
                        for ev in batch.events:
                            if ev.type is EventType.PUT:
                                self._apply_put(ev.kv)
                            else:
                                self._apply_delete(ev.kv)
                        self.revision = batch.resume_revision - 1
                        if ready is not None and not ready.is_set():
                            ready.set()
            except WatchCompacted as e:
                log.warning(
                    "leases.watch_compacted",
                    extra={"from": self.revision + 1, "compact_revision": e.compact_revision},
                )
                await self.load()

    def _decode(self, kv: KeyValue) -> tuple[str, Binding] | None:
        try:
            scope, ip = self.keys.parse_lease(kv.key)
        except KeyError_ as e:
            self._bad(kv, e)
            return None
        return self._decode_at(kv, scope, ip)

    def _decode_at(self, kv: KeyValue, scope: str, ip: IPv4Address) -> tuple[str, Binding] | None:
        try:
            binding = decode_binding(kv.value)
        except ValueFormatError as e:
            self._bad(kv, e)
            return None
        if binding.ip != ip or binding.scope != scope:
            log.warning("leases.key_mismatch", extra={"key": kv.key.decode(errors="replace")})
            return None
        return scope, binding

    def _bad(self, kv: KeyValue, e: Exception) -> None:
        log.warning(
            "leases.bad_value", extra={"key": kv.key.decode(errors="replace"), "error": str(e)}
        )
        if self._on_bad_value is not None:
            self._on_bad_value(kv.key)

    def _apply_put(self, kv: KeyValue) -> None:
        try:
            scope, ip = self.keys.parse_lease(kv.key)
        except KeyError_ as e:
            self._bad(kv, e)
            return
        held = self.table.get(scope, ip)
        if held is not None and held[1].mod_revision >= kv.mod_revision:
            return  # already applied: our own commit echoed back by the watch
        decoded = self._decode_at(kv, scope, ip)
        if decoded is None:
            return
        _, binding = decoded
        self.table.apply(scope, binding.ip, binding, Versioned(kv.create_revision, kv.mod_revision))

    def _apply_delete(self, kv: KeyValue) -> None:
        try:
            scope, ip = self.keys.parse_lease(kv.key)
        except KeyError_:
            return
        self.table.apply(scope, ip, None, Versioned(0, kv.mod_revision))

    # -- commits ---------------------------------------------------------------------------
    def _compares(self, write: BindingWrite) -> list[Compare]:
        key = self.keys.lease(write.scope, write.ip)
        compares = [
            Compare.create_revision(key, "=", 0)
            if write.expected is None
            else Compare.mod_revision(key, "=", write.expected.mod_revision)
        ]
        if write.fence is not None:
            block, fence = write.fence
            compares.append(
                Compare.mod_revision(self.keys.block(block.scope, block.block_id), "=", fence)
            )
        return compares

    async def commit_many(self, writes: Sequence[BindingWrite]) -> list[CommitOutcome | EtcdError]:
        """Several commits in one transaction when none conflicts; one by one otherwise.

        The transaction holds every write's compares (block fences shared by several writes
        once) and every put, so it commits all or nothing; a failed compare sends each write
        through `commit` on its own, which sorts out who conflicted. Addresses must be distinct.
        When etcd did not answer in time (or refused: NOSPACE), every write of the batch comes
        back as that `EtcdError`: never retried here, so a hung etcd holds a write for one
        deadline only; RECOVER settles what is unknown.
        """
        if len(writes) == 1:
            try:
                return [await self.commit(writes[0])]
            except EtcdError as e:
                return [e]
        compares: dict[Compare, None] = {}  # ordered, without repeats
        puts = []
        for w in writes:
            compares.update(dict.fromkeys(self._compares(w)))
            puts.append(Op.put(self.keys.lease(w.scope, w.ip), encode_binding(w.binding)))
        try:
            result = await self._client.txn(list(compares), puts, deadline=self.commit_timeout)
        except EtcdError as e:
            return [e] * len(writes)
        if result.succeeded:
            return [
                Committed(
                    Versioned(
                        result.revision if w.expected is None else w.expected.create_revision,
                        result.revision,
                    )
                )
                for w in writes
            ]
        outcomes = await asyncio.gather(*(self.commit(w) for w in writes), return_exceptions=True)
        out: list[CommitOutcome | EtcdError] = []
        for o in outcomes:
            if isinstance(o, BaseException) and not isinstance(o, EtcdError):
                raise o
            out.append(o)
        return out

    async def commit(self, write: BindingWrite) -> CommitOutcome:
        """The commit rule: compare the binding (and the block fence), put the binding.

        On a failed compare the outcome carries etcd's current binding for the address, read in
        the same transaction. On a broken connection the key is re-read within what is left of
        the one deadline (`commit_timeout` covers the transaction and the re-read together): if
        it holds exactly what we wrote, the commit happened. A timeout is not re-read: a hung
        etcd costs one deadline, then the outcome is unknown.
        """
        key = self.keys.lease(write.scope, write.ip)
        value = encode_binding(write.binding)
        compares = self._compares(write)
        deadline = self.commit_timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await self._client.txn(
                compares, [Op.put(key, value)], [Op.get(key)], deadline=deadline
            )
        except EtcdUncertain as uncertain:
            left = None if deadline is None else deadline - (loop.time() - started)
            if isinstance(uncertain, EtcdTimeout) or (left is not None and left < MIN_REREAD):
                raise
            try:
                kv = await self._client.get(key, deadline=left)
            except EtcdError:
                raise uncertain from None
            if kv is not None and kv.value == value:
                return Committed(Versioned(kv.create_revision, kv.mod_revision))
            unchanged = (
                kv is None
                if write.expected is None
                else (kv is not None and kv.mod_revision == write.expected.mod_revision)
            )
            if unchanged:
                # The key is as we left it, but our proposal may still be in flight (a new
                # etcd leader can commit it later): the outcome is unknown, not a conflict.
                # The caller must keep the address held and neither ACK nor NAK.
                raise
            return Conflict(self._current(kv), fence_lost=False)
        if result.succeeded:
            created = result.revision if write.expected is None else write.expected.create_revision
            return Committed(Versioned(created, result.revision))
        current_kv = None
        for resp in result.responses:
            if isinstance(resp, RangeResult) and resp.kvs:
                current_kv = resp.kvs[0]
        current = self._current(current_kv)
        fence_lost = current is None or (
            write.expected is not None and current[1].mod_revision == write.expected.mod_revision
        )
        if current is not None:
            self.table.apply(write.scope, write.ip, current[0], current[1])
        return Conflict(current, fence_lost=fence_lost and write.fence is not None)

    def _current(self, kv: KeyValue | None) -> tuple[Binding, Versioned] | None:
        if kv is None:
            return None
        decoded = self._decode(kv)
        if decoded is None:
            return None
        return decoded[1], Versioned(kv.create_revision, kv.mod_revision)


__all__ = ["CommitOutcome", "Committed", "Conflict", "EtcdError", "LeaseStore"]
