"""Owns etcd's side of the Watch and LeaseKeepAlive streams of the simulated etcd.

A watch is created with a `created` response (header: the store revision), then catches up from
its start revision at once (the history it asks for in responses of at most 1,000 revisions, each
with the current revision in its header), then gets one response per later revision that touches
its range (header: that revision). A start revision below the compact revision gets `created`,
then `canceled` with `compact_revision` (and no header revision), as etcd 3.4 answers. Progress
notifications go every `progress_interval` to caught-up watchers that asked for them; a
`WatchProgressRequest` is answered with watch id -1. A keep-alive is answered with the lease's
TTL, or 0 when the lease is gone; without quorum it is not answered at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubspoke.api.etcd import rpc_pb2
from tests.sim.mvcc import Change, in_range
from tests.sim.net import StreamCall

if TYPE_CHECKING:
    from tests.sim.etcd import SimEtcd

WATCH_BATCH_REVISIONS = 1000
_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


class Watcher:
    """One watch of a stream: a key range, the next revision it needs, its options."""

    def __init__(self, watch_id: int, create: rpc_pb2.WatchCreateRequest, start: int) -> None:
        self.id = watch_id
        self.key = create.key
        self.range_end = create.range_end
        self.next_revision = start
        self.prev_kv = create.prev_kv
        self.progress_notify = create.progress_notify
        self.no_put = _NOPUT in create.filters
        self.no_delete = _NODELETE in create.filters

    def wants(self, change: Change) -> bool:
        if change.revision < self.next_revision:
            return False
        if self.no_delete if change.deleted else self.no_put:
            return False
        return in_range(change.kv.key, self.key, self.range_end)


class WatchStream:
    """etcd's side of one Watch call."""

    def __init__(self, sim: SimEtcd, call: StreamCall) -> None:
        self.sim = sim
        self.call = call
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        sim.watch_streams[call.id] = self

    def on_message(self, data: bytes) -> None:
        req = rpc_pb2.WatchRequest.FromString(data)
        which = req.WhichOneof("request_union")
        if which == "create_request":
            self._create(req.create_request)
        elif which == "cancel_request":
            watch_id = req.cancel_request.watch_id
            if self.watchers.pop(watch_id, None) is not None:
                self._send(rpc_pb2.WatchResponse(watch_id=watch_id, canceled=True))
        elif which == "progress_request":
            self._send(rpc_pb2.WatchResponse(watch_id=-1))

    def _create(self, create: rpc_pb2.WatchCreateRequest) -> None:
        store = self.sim.store
        watch_id = create.watch_id
        if watch_id == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self.watchers:
            response = rpc_pb2.WatchResponse(watch_id=watch_id, created=True, canceled=True)
            response.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream"
            self._send(response)
            return
        current = store.revision
        start = create.start_revision if create.start_revision > 0 else current + 1
        self._send(rpc_pb2.WatchResponse(watch_id=watch_id, created=True))
        if start < store.compact_revision:
            response = rpc_pb2.WatchResponse(
                watch_id=watch_id, canceled=True, compact_revision=store.compact_revision
            )
            self._send(response, revision=0)
            return
        watcher = self.watchers[watch_id] = Watcher(watch_id, create, start)
        if start <= current:
            backlog = [c for c in store.changes_from(start) if watcher.wants(c)]
            while backlog:
                last = backlog[0].revision + WATCH_BATCH_REVISIONS
                batch = [c for c in backlog if c.revision < last]
                backlog = backlog[len(batch) :]
                self._send_events(watcher, batch, current)
        watcher.next_revision = current + 1
        if watcher.progress_notify:
            self.sim.want_progress()

    def notify(self, changes: list[Change], revision: int) -> None:
        """The store committed `changes` at `revision`."""
        for watcher in list(self.watchers.values()):
            events = [c for c in changes if watcher.wants(c)]
            watcher.next_revision = revision + 1
            if events:
                self._send_events(watcher, events, revision)

    def progress(self) -> None:
        for watcher in self.watchers.values():
            if watcher.progress_notify:
                self._send(rpc_pb2.WatchResponse(watch_id=watcher.id))

    def _send_events(self, watcher: Watcher, changes: list[Change], revision: int) -> None:
        compacted = self.sim.store.compact_revision
        response = rpc_pb2.WatchResponse(watch_id=watcher.id)
        for change in changes:
            # etcd reads prev_kv at revision - 1: gone if that was compacted
            prev = watcher.prev_kv and change.revision - 1 >= compacted
            response.events.append(change.to_pb(prev_kv=prev))
        self._send(response, revision=revision)

    def _send(self, response: rpc_pb2.WatchResponse, *, revision: int | None = None) -> None:
        sim = self.sim
        sim.member.fill(response.header, sim.store.revision if revision is None else revision)
        sim.send(self.call, response)

    def close(self) -> None:
        self.watchers.clear()
        self.sim.watch_streams.pop(self.call.id, None)


class KeepAliveStream:
    """etcd's side of one LeaseKeepAlive call."""

    def __init__(self, sim: SimEtcd, call: StreamCall) -> None:
        self.sim = sim
        self.call = call
        sim.keepalive_streams[call.id] = self

    def on_message(self, data: bytes) -> None:
        sim = self.sim
        if not sim.quorum:
            return  # the renewal waits for a leader: the client hears nothing
        req = rpc_pb2.LeaseKeepAliveRequest.FromString(data)
        response = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=sim.renew(req.ID))
        sim.member.fill(response.header, sim.store.revision)
        sim.send(self.call, response)

    def close(self) -> None:
        self.sim.keepalive_streams.pop(self.call.id, None)


__all__ = ["WATCH_BATCH_REVISIONS", "KeepAliveStream", "WatchStream", "Watcher"]
