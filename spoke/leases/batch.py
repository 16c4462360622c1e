"""Gathers binding commits that arrive together into one etcd transaction each.

Owns nothing but the queue: the commit rule itself is `LeaseStore.commit_many`. A commit is
submitted with a callback; commits submitted during one turn of the event loop (one drained
burst of datagrams) leave together at the end of that turn, at most `max_batch` writes per
transaction, one per address, with at most `max_inflight` transactions in flight; the rest wait
for a slot. So under load one gRPC round trip and one raft entry carry many bindings, and at low
load a commit leaves at once, alone. A DHCPACK still leaves only after its own binding
committed: each callback gets its own outcome, called from the task that awaited etcd, with no
further hop through the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ipaddress import IPv4Address

from spoke.dhcp.decisions import BindingWrite
from spoke.leases.store import CommitOutcome, LeaseStore

log = logging.getLogger("hubspoke.spoke.commits")


class Diverted(Exception):
    """Taken back before it was sent (`CommitQueue.divert`): etcd is not being written now."""


# What a submitted commit's callback receives: the outcome, or the exception etcd's client
# raised (`EtcdError`), `Diverted`, or `asyncio.CancelledError` when the queue stopped before
# it committed.
Result = CommitOutcome | BaseException
Done = Callable[[Result], None]
Pending = tuple[BindingWrite, Done]


class CommitQueue:
    def __init__(self, store: LeaseStore, *, max_batch: int = 32, max_inflight: int = 8) -> None:
        if not 1 <= max_batch <= 60:
            raise ValueError("max_batch must be 1..60 (etcd takes 128 compares per transaction)")
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self._store = store
        self._max_batch = max_batch
        self._free = max_inflight
        self._pending: list[Pending] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self.transactions = 0
        self.batched = 0

    def submit(self, write: BindingWrite, done: Done) -> None:
        """Queue `write`; `done` is called once with its outcome (never from inside `submit`)."""
        if not self._running:
            raise RuntimeError("the commit queue is not running")
        self._pending.append((write, done))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._launch)

    async def commit(self, write: BindingWrite) -> CommitOutcome:
        """Commit `write` (alone or with others); raises `EtcdError` when etcd can't answer."""
        fut: asyncio.Future[CommitOutcome] = asyncio.get_running_loop().create_future()

        def done(result: Result) -> None:
            if fut.done():
                return
            if isinstance(result, asyncio.CancelledError):
                fut.cancel()
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        self.submit(write, done)
        return await fut

    def divert(self) -> int:
        """Hand every commit not yet sent back to its caller (`Diverted`); returns how many.
        Those in flight finish as etcd (or their deadline) decides."""
        pending, self._pending = self._pending, []
        for _, done in pending:
            _call(done, Diverted())
        return len(pending)

    def _take(self) -> list[Pending]:
        """The next batch: oldest first, one write per address (a repeat waits its turn)."""
        batch: list[Pending] = []
        keep: list[Pending] = []
        seen: set[tuple[str, IPv4Address]] = set()
        for item in self._pending:
            ident = (item[0].scope, item[0].ip)
            if len(batch) < self._max_batch and ident not in seen:
                seen.add(ident)
                batch.append(item)
            else:
                keep.append(item)
        self._pending = keep
        return batch

    def _launch(self) -> None:
        """Start transactions while there are writes waiting and slots free."""
        self._scheduled = False
        while self._pending and self._free > 0 and self._running:
            batch = self._take()
            self._free -= 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Accept commits until cancelled; then every commit not yet answered is cancelled."""
        self._running = True
        try:
            await asyncio.Future()
        finally:
            self._running = False
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            pending, self._pending = self._pending, []
            for _, done in pending:
                _call(done, asyncio.CancelledError())

    async def _flush(self, batch: list[Pending]) -> None:
        self.transactions += 1
        self.batched += len(batch)
        results: list[Result]
        try:
            results = list(await self._store.commit_many([w for w, _ in batch]))
        except BaseException as e:  # every caller hears of it, then it goes on
            results = [e] * len(batch)
            if not isinstance(e, Exception):
                self._finish(batch, results)
                raise
        self._finish(batch, results)

    def _finish(self, batch: list[Pending], results: list[Result]) -> None:
        self._free += 1
        for (_, done), result in zip(batch, results, strict=True):
            _call(done, result)
        if self._pending and not self._scheduled:
            self._launch()


def _call(done: Done, result: Result) -> None:
    try:
        done(result)
    except Exception:
        log.exception("commits.callback_failed")


__all__ = ["CommitQueue", "Diverted", "Done", "Result"]
