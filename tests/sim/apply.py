"""Owns applying one KV or lease request to the store, as etcd 3.4's gRPC layer and applier do.

Pure; no asyncio, no clock reads. Each method takes the request message (and `now` where leases
are involved) and returns the response message with the changes it committed, or raises
`RpcFailure`. Validation runs first (`v3rpc/key.go`: empty keys, 128 operations, a key written
twice in one branch), then the quota alarm (NOSPACE refuses puts, transactions holding a put and
lease grants; deletes and reads pass), then the compares, then the checks of the branch taken
(leases exist, revisions readable), so a transaction is applied whole or not at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import grpc  # type: ignore[import-untyped]

from hubspoke.api.etcd import rpc_pb2
from tests.sim.mvcc import (
    DUPLICATE_KEY,
    EMPTY_KEY,
    KEY_NOT_FOUND,
    LEASE_NOT_FOUND,
    MAX_TXN_OPS,
    NO_SPACE,
    TOO_MANY_OPS,
    Change,
    RpcFailure,
    Store,
    Write,
    fail,
)


@dataclass(slots=True)
class Member:
    """What etcd puts in every response header besides the revision."""

    cluster_id: int
    member_id: int
    raft_term: int = 2

    def fill(self, header: rpc_pb2.ResponseHeader, revision: int) -> None:
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.revision = revision
        header.raft_term = self.raft_term


@dataclass(frozen=True, slots=True)
class Applied:
    """A request's response and what it changed (empty for reads and no-op writes)."""

    response: object
    changes: list[Change]


class Applier:
    """Applies requests to `store`; `nospace` is the quota alarm."""

    def __init__(self, store: Store, member: Member) -> None:
        self.store = store
        self.member = member
        self.nospace = False

    # -- KV --------------------------------------------------------------------------------

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        if not req.key:
            raise fail(EMPTY_KEY)
        resp = self.store.range(req, self.store.revision)
        self.member.fill(resp.header, resp.header.revision)
        return resp

    def put(self, req: rpc_pb2.PutRequest) -> Applied:
        _check_put(req)
        if self.nospace:
            raise fail(NO_SPACE)
        self._check_put_target(req)
        txn = self.store.write()
        resp = self._put(txn, req)
        changes = txn.commit()
        self.member.fill(resp.header, resp.header.revision)
        return Applied(resp, changes)

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> Applied:
        if not req.key:
            raise fail(EMPTY_KEY)
        txn = self.store.write()
        resp = _delete(txn, req)
        changes = txn.commit()
        self.member.fill(resp.header, resp.header.revision)
        return Applied(resp, changes)

    def txn(self, req: rpc_pb2.TxnRequest) -> Applied:
        _check_txn(req)
        ops = (*req.success, *req.failure)
        if self.nospace and any(op.WhichOneof("request") == "request_put" for op in ops):
            raise fail(NO_SPACE)
        succeeded = all(self.store.compare(c) for c in req.compare)
        branch = req.success if succeeded else req.failure
        for op in branch:
            self._check_op(op)
        txn = self.store.write()
        resp = rpc_pb2.TxnResponse(succeeded=succeeded)
        for op in branch:
            out = resp.responses.add()
            which = op.WhichOneof("request")
            if which == "request_range":
                sub = txn.range(op.request_range)
                out.response_range.CopyFrom(sub)
            elif which == "request_put":
                out.response_put.CopyFrom(self._put(txn, op.request_put))
            elif which == "request_delete_range":
                out.response_delete_range.CopyFrom(_delete(txn, op.request_delete_range))
        changes = txn.commit()
        self.member.fill(resp.header, self.store.revision)
        return Applied(resp, changes)

    def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        self.store.compact(req.revision)
        resp = rpc_pb2.CompactionResponse()
        self.member.fill(resp.header, self.store.revision)
        return resp

    def _put(self, txn: Write, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        prev = self.store.live.get(req.key)
        value = prev.value if req.ignore_value and prev else req.value
        lease = prev.lease if req.ignore_lease and prev else req.lease
        txn.put(req.key, value, lease)
        resp = rpc_pb2.PutResponse()
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev.to_pb())
        resp.header.revision = txn.revision
        return resp

    def _check_put_target(self, req: rpc_pb2.PutRequest) -> None:
        if (req.ignore_value or req.ignore_lease) and req.key not in self.store.live:
            raise fail(KEY_NOT_FOUND)
        if req.lease and req.lease not in self.store.leases:
            raise fail(LEASE_NOT_FOUND)

    def _check_op(self, op: rpc_pb2.RequestOp) -> None:
        which = op.WhichOneof("request")
        if which == "request_put":
            self._check_put_target(op.request_put)
        elif which == "request_range" and op.request_range.revision:
            self.store.check_revision(op.request_range.revision, self.store.revision)

    # -- leases ----------------------------------------------------------------------------

    def lease_grant(
        self, req: rpc_pb2.LeaseGrantRequest, lease_id: int, ttl: int, expiry: float
    ) -> rpc_pb2.LeaseGrantResponse:
        if self.nospace:
            raise fail(NO_SPACE)
        self.store.grant(lease_id, ttl, expiry)
        resp = rpc_pb2.LeaseGrantResponse(ID=lease_id, TTL=ttl)
        self.member.fill(resp.header, self.store.revision)
        return resp

    def lease_revoke(self, req: rpc_pb2.LeaseRevokeRequest) -> Applied:
        changes = self.store.revoke(req.ID)
        resp = rpc_pb2.LeaseRevokeResponse()
        self.member.fill(resp.header, self.store.revision)
        return Applied(resp, changes)

    def lease_time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest, now: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=req.ID, TTL=-1)
        self.member.fill(resp.header, self.store.revision)
        record = self.store.leases.get(req.ID)
        if record is None:
            return resp
        resp.TTL = max(math.trunc(record.expiry - now), 0)
        resp.grantedTTL = record.ttl
        if req.keys:
            resp.keys.extend(sorted(record.keys))
        return resp


def _check_put(req: rpc_pb2.PutRequest) -> None:
    if not req.key:
        raise fail(EMPTY_KEY)
    if req.ignore_value and req.value:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: value is provided")
    if req.ignore_lease and req.lease:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: lease is provided")


def _check_txn(req: rpc_pb2.TxnRequest) -> None:
    if max(len(req.compare), len(req.success), len(req.failure)) > MAX_TXN_OPS:
        raise fail(TOO_MANY_OPS)
    if any(not c.key for c in req.compare):
        raise fail(EMPTY_KEY)
    for branch in (req.success, req.failure):
        for op in branch:
            which = op.WhichOneof("request")
            if which == "request_put":
                _check_put(op.request_put)
            elif which == "request_range":
                if not op.request_range.key:
                    raise fail(EMPTY_KEY)
            elif which == "request_delete_range":
                if not op.request_delete_range.key:
                    raise fail(EMPTY_KEY)
            elif which == "request_txn":
                raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "sim: nested transactions")
            else:
                raise fail(KEY_NOT_FOUND)
        _check_intervals(branch)


def _check_intervals(branch: Sequence[rpc_pb2.RequestOp]) -> None:
    """A key put twice, or put inside a range the same branch deletes, is refused."""
    deletes = [
        (op.request_delete_range.key, op.request_delete_range.range_end)
        for op in branch
        if op.WhichOneof("request") == "request_delete_range"
    ]
    puts: dict[bytes, None] = {}
    for op in branch:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or any(
            (key == start) if not end else (start <= key < end) for start, end in deletes
        ):
            raise fail(DUPLICATE_KEY)
        puts[key] = None


def _delete(txn: Write, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
    deleted = txn.delete_range(req.key, req.range_end)
    resp = rpc_pb2.DeleteRangeResponse(deleted=len(deleted))
    if req.prev_kv:
        resp.prev_kvs.extend(v.to_pb() for v in deleted)
    resp.header.revision = txn.revision
    return resp


__all__ = ["Applied", "Applier", "Member"]
