"""Owns the v3election service of the simulated etcd: Campaign, Proclaim, Leader, Resign, Observe.

Built from KV operations, as etcd's own election server is (`client/v3/concurrency/election.go`):
a campaign puts `<name>/<lease id in hex>` attached to the lease if absent (else adopts the key
it already has, proclaiming a changed value), then waits until no key under `<name>/` has a lower
create revision. It waits whatever happens to its own key meanwhile, as etcd does: a campaigner
whose lease expired while queued is told it won, though its key (the epoch) is gone, so its fenced
writes fail. The response header is the one of the campaign's first transaction. A campaign whose
client goes away while it waits resigns (deletes its key). Errors of the inner KV operations come
back UNKNOWN with etcd's message, as the election server relays them; "election: no leader" and
"election: not leader" are UNKNOWN too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc  # type: ignore[import-untyped]

from hubspoke.api.etcd import rpc_pb2, v3election_pb2
from hubspoke.etcd.records import prefix_end
from tests.sim.mvcc import Change, RpcFailure, Version
from tests.sim.net import StreamCall, UnaryCall

if TYPE_CHECKING:
    from tests.sim.etcd import SimEtcd

NO_LEADER = "election: no leader"
NOT_LEADER = "election: not leader"


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign waiting for every older key under its prefix to go."""

    call: UnaryCall
    prefix: bytes
    leader: v3election_pb2.LeaderKey
    header: rpc_pb2.ResponseHeader


def _unknown(err: RpcFailure) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNKNOWN, err.details)


class Elections:
    """Every election of one simulated etcd: waiting campaigns and observers."""

    def __init__(self, sim: SimEtcd) -> None:
        self.sim = sim
        self.waiting: dict[int, Campaign] = {}
        self.observers: dict[int, ObserveStream] = {}

    # -- unary calls -----------------------------------------------------------------------

    def campaign(
        self, call: UnaryCall, req: v3election_pb2.CampaignRequest
    ) -> v3election_pb2.CampaignResponse | None:
        """The response if the campaign leads at once; else None and it waits."""
        key = req.name + b"/" + format(req.lease, "x").encode()
        txn = rpc_pb2.TxnRequest()
        cmp = txn.compare.add(key=key, target=rpc_pb2.Compare.CREATE)
        cmp.create_revision = 0
        txn.success.add().request_put.CopyFrom(
            rpc_pb2.PutRequest(key=key, value=req.value, lease=req.lease)
        )
        txn.failure.add().request_range.key = key
        resp = self._txn(txn)
        revision = resp.header.revision
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            revision = kv.create_revision
            if kv.value != req.value:
                try:
                    self._proclaim(key, revision, req.lease, req.value)
                except RpcFailure:
                    self._resign(key, revision)
                    raise
        leader = v3election_pb2.LeaderKey(name=req.name, key=key, rev=revision, lease=req.lease)
        waiter = Campaign(call, req.name + b"/", leader, resp.header)
        if self._leads(waiter):
            return self._won(waiter)
        self.waiting[call.id] = waiter
        return None

    def cancel(self, call: UnaryCall) -> None:
        """The client of a campaign went away: a waiting campaign resigns."""
        waiter = self.waiting.pop(call.id, None)
        if waiter is not None:
            self._resign(waiter.leader.key, waiter.leader.rev)

    def leader(self, req: v3election_pb2.LeaderRequest) -> v3election_pb2.LeaderResponse:
        first = self.first(req.name + b"/")
        if first is None:
            raise RpcFailure(grpc.StatusCode.UNKNOWN, NO_LEADER)
        resp = v3election_pb2.LeaderResponse(kv=first.to_pb())
        self.sim.member.fill(resp.header, self.sim.store.revision)
        return resp

    def proclaim(self, req: v3election_pb2.ProclaimRequest) -> v3election_pb2.ProclaimResponse:
        leader = req.leader
        header = self._proclaim(leader.key, leader.rev, leader.lease, req.value)
        return v3election_pb2.ProclaimResponse(header=header)

    def resign(self, req: v3election_pb2.ResignRequest) -> v3election_pb2.ResignResponse:
        return v3election_pb2.ResignResponse(header=self._resign(req.leader.key, req.leader.rev))

    # -- the recipe ------------------------------------------------------------------------

    def first(self, prefix: bytes) -> Version | None:
        """The key under `prefix` with the lowest create revision: the leader."""
        found = self.sim.store.versions(prefix, prefix_end(prefix))
        return min(found, key=lambda v: v.create_revision, default=None)

    def _leads(self, waiter: Campaign) -> bool:
        found = self.sim.store.versions(waiter.prefix, prefix_end(waiter.prefix))
        return all(v.create_revision >= waiter.leader.rev for v in found)

    def _won(self, waiter: Campaign) -> v3election_pb2.CampaignResponse:
        return v3election_pb2.CampaignResponse(header=waiter.header, leader=waiter.leader)

    def _txn(self, txn: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        try:
            return self.sim.apply_txn(txn)
        except RpcFailure as err:
            raise _unknown(err) from err

    def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> rpc_pb2.ResponseHeader:
        txn = rpc_pb2.TxnRequest()
        cmp = txn.compare.add(key=key, target=rpc_pb2.Compare.CREATE)
        cmp.create_revision = rev
        txn.success.add().request_put.CopyFrom(
            rpc_pb2.PutRequest(key=key, value=value, lease=lease)
        )
        resp = self._txn(txn)
        if not resp.succeeded:
            raise RpcFailure(grpc.StatusCode.UNKNOWN, NOT_LEADER)
        return resp.header

    def _resign(self, key: bytes, rev: int) -> rpc_pb2.ResponseHeader:
        txn = rpc_pb2.TxnRequest()
        cmp = txn.compare.add(key=key, target=rpc_pb2.Compare.CREATE)
        cmp.create_revision = rev
        txn.success.add().request_delete_range.key = key
        return self._txn(txn).header

    # -- after each commit -----------------------------------------------------------------

    def notify(self, changes: list[Change], revision: int) -> None:
        for call_id, waiter in list(self.waiting.items()):
            if call_id in self.waiting and self._leads(waiter):
                del self.waiting[call_id]
                self.sim.reply(waiter.call, self._won(waiter))
        for observer in list(self.observers.values()):
            observer.notify(changes, revision)


class ObserveStream:
    """etcd's side of one Observe call: each leader as it takes office, each value it proclaims."""

    def __init__(self, sim: SimEtcd, call: StreamCall, first: bytes | None) -> None:
        self.sim = sim
        self.call = call
        self.prefix = v3election_pb2.LeaderRequest.FromString(first or b"").name + b"/"
        self.following: bytes | None = None  # the leader key being followed
        self.started = False
        sim.elections.observers[call.id] = self
        sim.when_quorate(self._start)

    def _start(self) -> None:
        if self.sim.elections.observers.get(self.call.id) is not self:
            return
        self.started = True
        self._follow_first()

    def _follow_first(self) -> None:
        first = self.sim.elections.first(self.prefix)
        if first is not None:
            self.following = first.key
            self._emit(first, self.sim.store.revision)

    def notify(self, changes: list[Change], revision: int) -> None:
        if not self.started:
            return
        for change in changes:
            key = change.kv.key
            if not key.startswith(self.prefix):
                continue
            if self.following is None and not change.deleted:
                self.following = key
                self._emit(change.kv, revision)
            elif key == self.following:
                if change.deleted:
                    self.following = None
                else:
                    self._emit(change.kv, revision)
        if self.following is None:
            self._follow_first()

    def _emit(self, kv: Version, revision: int) -> None:
        resp = v3election_pb2.LeaderResponse(kv=kv.to_pb())
        self.sim.member.fill(resp.header, revision)
        self.sim.send(self.call, resp)

    def on_message(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.sim.elections.observers.pop(self.call.id, None)


__all__ = ["NOT_LEADER", "NO_LEADER", "Campaign", "Elections", "ObserveStream"]
