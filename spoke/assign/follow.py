"""Owns following the hub's assignments in etcd: `assign/` into the binding table and buckets.

`AssignmentFollower` reads `assign/` at one revision (`load`), then watches from the next
(`follow`); after every change it gives the table exactly the blocks whose record is
`allocatable_by(node)` (fence: the record's mod_revision) and keeps `buckets` for the engine's
`is_mine`. A hand-over the hub asks of us (`owner == node`, `handover_to` set) is executed here:
the block leaves the table at once, outstanding offers in it lapse (at most `offer_lifetime`),
then one transaction comparing the record's mod_revision writes the new owner. A failed compare
means the hub changed its mind: nothing more is done (the watch brings the new record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from hubspoke.assign import BlockRecord
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError, EtcdUncertain, WatchCompacted
from hubspoke.etcd.records import Compare, Op
from hubspoke.etcd.session import monotonic
from hubspoke.etcd.watch import EventType, WatchBatch, watch_prefix
from hubspoke.keys import Keys
from hubspoke.model import Block, Scope
from spoke.assign.buckets import BucketFilter
from spoke.assign.view import Assignments, BlockKey, Handover, offers_in_block, parse_block_id
from spoke.dhcp.message import Message
from spoke.leases.table import BindingTable

log = logging.getLogger("hubspoke.cluster")

POLL = 0.2
RETRY_MIN = 0.05
RETRY_MAX = 2.0
LOAD_PAGE = 2000  # keys per ranged read of `assign/`
LOAD_SLICE = 1000  # records decoded per turn of the event loop while loading


class AssignmentFollower:
    """Keeps `table`'s blocks and `buckets` in step with `assign/` for `node`.

    `clock` is the clock offers are held on (the runtime's wall clock).
    """

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        node: str,
        table: BindingTable,
        *,
        offer_lifetime: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keys = keys
        self.node = node
        self.table = table
        self.offer_lifetime = offer_lifetime
        self.clock = clock
        self.state = Assignments(node, keys)
        self.filter = BucketFilter()
        self.revision = 0
        self.handovers_done = 0
        self._pushed: dict[str, dict[Block, int]] = {}
        self._pending_logged: frozenset[BlockKey] = frozenset()
        self._tasks: dict[BlockKey, tuple[int, asyncio.Task[None]]] = {}
        self._writing: set[BlockKey] = set()
        self._finished: set[tuple[BlockKey, int]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.changed = asyncio.Event()

    # -- what the engine and the runtime read ----------------------------------------------
    @property
    def buckets(self) -> frozenset[int]:
        return self.filter.buckets

    def is_mine(self, msg: Message) -> bool:
        return self.filter(msg)

    # -- input -------------------------------------------------------------------------------
    def set_scopes(self, scopes: Iterable[Scope]) -> None:
        """The scope follower's latest scopes: blocks of new scopes stop being pending."""
        self._sync(self.state.set_scopes(scopes))

    async def load(self) -> int:
        """Read `assign/` at one revision into the state and the table; returns the revision.

        The records (16,384 for a pool of a million addresses) are read in pages at one
        revision and decoded `LOAD_SLICE` at a time into a new state, the event loop let run
        in between; the new state replaces the old one at once, with the scopes known by then.
        """
        kvs, revision = await self._client.range_prefix_all(
            self._keys.assign_prefix(), page_size=LOAD_PAGE
        )
        state = Assignments(self.node, self._keys)
        touched: set[str] = set()
        for i in range(0, len(kvs), LOAD_SLICE):
            for kv in kvs[i : i + LOAD_SLICE]:
                touched |= state.put(kv.key, kv.value, kv.mod_revision)
            await asyncio.sleep(0)
        state.set_scopes(self.state.known_scopes)  # set_scopes may have run meanwhile
        touched |= self.state.reset()
        self.state = state
        self.revision = revision
        self._sync(touched)
        log.info(
            "cluster.assignments_loaded",
            extra={
                "revision": revision,
                "records": len(self.state.records),
                "buckets": len(self.buckets),
                "blocks": sum(len(b) for b in self._pushed.values()),
            },
        )
        return revision

    def apply(self, batch: WatchBatch) -> None:
        """Apply one watch batch (events in revision order)."""
        touched: set[str] = set()
        for ev in batch.events:
            if ev.type is EventType.PUT:
                touched |= self.state.put(ev.kv.key, ev.kv.value, ev.kv.mod_revision)
            else:
                touched |= self.state.delete(ev.kv.key)
        self.revision = batch.resume_revision - 1
        self._sync(touched)

    def _sync(self, touched: set[str]) -> None:
        """Push changed block sets to the table, the bucket set to the filter, start hand-overs."""
        for scope in sorted(touched | (self._pushed.keys() - self.state.scope_names)):
            owned = self.state.owned(scope)
            if self._pushed.get(scope, {}) != owned:
                self.table.set_blocks(scope, owned)
                if owned:
                    self._pushed[scope] = owned
                else:
                    self._pushed.pop(scope, None)
        buckets = self.state.buckets
        if buckets != self.filter.buckets:
            log.info(
                "cluster.buckets", extra={"count": len(buckets), "was": len(self.filter.buckets)}
            )
            self.filter.buckets = buckets
        pending = self.state.pending()
        if pending - self._pending_logged:
            log.info(
                "cluster.blocks_pending",
                extra={"blocks": sorted(f"{s}/{b}" for s, b in pending - self._pending_logged)},
            )
        self._pending_logged = pending
        self._reconcile_handovers()
        self.changed.set()

    def owned(self, scope: str) -> dict[Block, int]:
        """What the table was last given for `scope` (block -> fence)."""
        return dict(self._pushed.get(scope, {}))

    # -- the watch ---------------------------------------------------------------------------
    async def follow(self) -> None:
        """Watch `assign/` after `self.revision` forever; runs the hand-overs it starts."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                self._reconcile_handovers()
                while True:
                    try:
                        stream = watch_prefix(
                            self._client, self._keys.assign_prefix(), self.revision + 1
                        )
                        async with contextlib.aclosing(stream):
                            async for batch in stream:
                                self.apply(batch)
                    except WatchCompacted as e:
                        log.warning(
                            "cluster.watch_compacted",
                            extra={"from": self.revision + 1, "compact": e.compact_revision},
                        )
                        await self._reload()
            finally:
                self._tg = None
                for _, task in self._tasks.values():
                    task.cancel()

    async def _reload(self) -> None:
        await _until_etcd_answers("cluster.reload_failed")(self.load)

    # -- hand-overs --------------------------------------------------------------------------
    def _reconcile_handovers(self) -> None:
        """One hand-over task per block the hub wants handed over, at the record it was asked in.

        A task still waiting for offers is cancelled when its record changes; one already
        writing is left to finish (its compare decides) and the next one starts after it.
        """
        wanted = self.state.handovers()
        for bkey, (rev, task) in list(self._tasks.items()):
            h = wanted.get(bkey)
            if task.done():
                self._finished.add((bkey, rev))
                del self._tasks[bkey]
            elif (h is None or h.mod_revision != rev) and bkey not in self._writing:
                task.cancel()
                del self._tasks[bkey]
        tg = self._tg
        if tg is None:
            return  # before `follow`: it reconciles again once it runs
        self._finished &= {(bkey, h.mod_revision) for bkey, h in wanted.items()}
        for bkey, h in wanted.items():
            if bkey not in self._tasks and (bkey, h.mod_revision) not in self._finished:
                task = tg.create_task(self._guarded(h), name=f"handover-{h.scope}-{h.block_id}")
                task.add_done_callback(lambda _: self._reconcile_handovers())
                self._tasks[bkey] = (h.mod_revision, task)

    async def _guarded(self, h: Handover) -> None:
        try:
            await self.hand_over(h)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cluster.handover_error", extra={"scope": h.scope, "block": h.block_id})

    async def hand_over(self, h: Handover) -> bool:
        """Give the block up: wait for its offers to lapse and for every binding in it granted
        from the journal to be in etcd, then write the new owner.

        Returns True if our write committed, False if the record changed first.
        """
        started = monotonic()
        block = parse_block_id(h.scope, h.block_id)
        pushed = self._pushed.get(h.scope, {})
        if block is not None and block in pushed:
            # the table must never list a block being handed over (normally already true)
            del pushed[block]
            self.table.set_blocks(h.scope, pushed)
        deadline = started + self.offer_lifetime
        while block is not None:
            until = offers_in_block(self.table, block, self.clock())
            remaining = deadline - monotonic()
            if until is None or remaining <= 0:
                break
            await asyncio.sleep(min(POLL, remaining, max(until - self.clock(), 0.01)))
        # A lease granted from the journal (or a commit of unknown outcome) in this block is
        # not in etcd yet: the next owner would see the address free. Wait for RECOVER.
        while block is not None and self.table.unsettled_in(block):  # noqa: ASYNC110 - polled
            await asyncio.sleep(POLL)
        key = self._keys.block(h.scope, h.block_id)
        new = BlockRecord(owner=h.new_owner, why=f"handed over by {self.node}").encode()
        self._writing.add((h.scope, h.block_id))
        try:
            done = await self._write_handover(h, key, new)
        finally:
            self._writing.discard((h.scope, h.block_id))
        duration = round(monotonic() - started, 3)
        if done:
            self.handovers_done += 1
            log.info(
                "cluster.handover",
                extra={"scope": h.scope, "block": h.block_id, "to": h.to, "duration": duration},
            )
        else:
            log.info(
                "cluster.handover_superseded",
                extra={"scope": h.scope, "block": h.block_id, "to": h.to, "duration": duration},
            )
        return done

    async def _write_handover(self, h: Handover, key: bytes, new: bytes) -> bool:
        """The hand-over transaction, retried while its outcome is unknown or etcd is away."""

        async def write() -> bool:
            try:
                result = await self._client.txn(
                    [Compare.mod_revision(key, "=", h.mod_revision)], [Op.put(key, new)]
                )
            except EtcdUncertain:
                with contextlib.suppress(EtcdError):  # a record that moved on tells the outcome
                    kv = await self._client.get(key)
                    if kv is None or kv.mod_revision != h.mod_revision:
                        return kv is not None and kv.value == new
                raise
            return result.succeeded

        done: bool = await _until_etcd_answers("cluster.handover_retry", block=h.block_id)(write)
        return done


def _until_etcd_answers(event: str, **fields: object) -> AsyncRetrying:
    """Retries on `EtcdError`, forever: waits 0.05 s, doubling up to `RETRY_MAX`, and logs
    `event` (with `fields` and the error) before each wait. Cancellation ends it at once."""

    def logged(attempt: RetryCallState) -> None:
        error = attempt.outcome.exception() if attempt.outcome is not None else None
        log.warning(event, extra={**fields, "error": repr(error)})

    return AsyncRetrying(
        sleep=asyncio.sleep,
        retry=retry_if_exception_type(EtcdError),
        wait=wait_exponential(multiplier=RETRY_MIN, max=RETRY_MAX),
        before_sleep=logged,
    )
