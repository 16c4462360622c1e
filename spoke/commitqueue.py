"""Gathers binding commits that arrive together into one etcd transaction each.

Owns nothing but the queue: the commit rule itself is `LeaseStore.commit_many`. Commits that
arrive while earlier transactions are in flight wait for a slot and then leave together (at
most `max_batch` writes, one per address), so under load one gRPC round trip and one raft
entry carry many bindings, and at low load a commit leaves at once, alone. A DHCPACK still
leaves only after its own binding committed: each caller awaits its own outcome.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from hub.etcd.errors import EtcdError
from spoke.dhcp.decisions import BindingWrite
from spoke.leases import CommitOutcome, LeaseStore

Pending = tuple[BindingWrite, "asyncio.Future[CommitOutcome]"]


class CommitQueue:
    def __init__(self, store: LeaseStore, *, max_batch: int = 32, max_inflight: int = 8) -> None:
        if not 1 <= max_batch <= 60:
            raise ValueError("max_batch must be 1..60 (etcd takes 128 compares per transaction)")
        self._store = store
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(max_inflight)
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self.transactions = 0
        self.batched = 0

    async def commit(self, write: BindingWrite) -> CommitOutcome:
        """Commit `write` (alone or with others); raises `EtcdError` when etcd can't answer."""
        fut: asyncio.Future[CommitOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append((write, fut))
        self._wake.set()
        return await fut

    def _take(self) -> list[Pending]:
        """The next batch: oldest first, one write per address (a repeat waits its turn)."""
        batch: list[Pending] = []
        keep: list[Pending] = []
        seen: set[tuple[str, IPv4Address]] = set()
        for item in self._pending:
            ident = (item[0].scope, item[0].ip)
            if len(batch) < self._max_batch and ident not in seen and not item[1].done():
                seen.add(ident)
                batch.append(item)
            elif not item[1].done():
                keep.append(item)
        self._pending = keep
        return batch

    async def run(self) -> None:
        """Send batches forever (cancel to stop: waiting callers are cancelled too)."""
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    while self._pending:
                        await self._slots.acquire()
                        batch = self._take()
                        if not batch:
                            self._slots.release()
                            break
                        tg.create_task(self._flush(batch))
        finally:
            for _, fut in self._pending:
                fut.cancel()
            self._pending.clear()

    async def _flush(self, batch: list[Pending]) -> None:
        try:
            self.transactions += 1
            self.batched += len(batch)
            outcomes = await self._store.commit_many([w for w, _ in batch])
            for (_, fut), outcome in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if isinstance(outcome, EtcdError):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
        except BaseException as e:
            for _, fut in batch:
                if not fut.done():
                    if isinstance(e, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._slots.release()
