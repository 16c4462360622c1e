"""Owns the typed values of the etcd client: results, compares and operations.

Pure; no I/O. Callers build `Compare` and `Op` values and read `KeyValue`, `TxnResult` and
friends; only this module and the client translate them to and from protobuf messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from hubspoke.api.etcd import kv_pb2, rpc_pb2

CompareOp = Literal["=", "!=", ">", "<"]

_RESULTS: dict[str, rpc_pb2.Compare.CompareResult.ValueType] = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    ">": rpc_pb2.Compare.GREATER,
    "<": rpc_pb2.Compare.LESS,
}


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with prefix (etcd's `WithPrefix`)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it; `version` counts writes since the key was (re)created."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(
            key=kv.key,
            value=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True, slots=True)
class RangeResult:
    """A range answer: `revision` is the store revision it was read at."""

    kvs: tuple[KeyValue, ...]
    more: bool
    count: int
    revision: int


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...]


OpResult = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded` says which branch ran; `responses` are that branch's results in order."""

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...]


@dataclass(frozen=True, slots=True)
class Status:
    version: str
    db_size: int
    leader: int
    member_id: int
    raft_index: int
    raft_term: int
    revision: int
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLive:
    """`ttl` is the remaining seconds, -1 if the lease does not exist (expired or revoked)."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...]


class CompareTarget(enum.Enum):
    VERSION = rpc_pb2.Compare.VERSION
    CREATE = rpc_pb2.Compare.CREATE
    MOD = rpc_pb2.Compare.MOD
    VALUE = rpc_pb2.Compare.VALUE


@dataclass(frozen=True, slots=True)
class Compare:
    """One transaction guard on one key; build with the class methods."""

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: int | bytes

    @classmethod
    def version(cls, key: bytes, op: CompareOp, version: int) -> Compare:
        return cls(key, CompareTarget.VERSION, op, version)

    @classmethod
    def create_revision(cls, key: bytes, op: CompareOp, revision: int) -> Compare:
        """`Compare.create_revision(key, "=", 0)` guards "the key does not exist"."""
        return cls(key, CompareTarget.CREATE, op, revision)

    @classmethod
    def mod_revision(cls, key: bytes, op: CompareOp, revision: int) -> Compare:
        return cls(key, CompareTarget.MOD, op, revision)

    @classmethod
    def value(cls, key: bytes, op: CompareOp, value: bytes) -> Compare:
        return cls(key, CompareTarget.VALUE, op, value)

    def to_pb(self) -> rpc_pb2.Compare:
        msg = rpc_pb2.Compare(key=self.key, result=_RESULTS[self.op], target=self.target.value)
        if self.target is CompareTarget.VALUE:
            if not isinstance(self.operand, bytes):
                raise TypeError("a value compare needs bytes")
            msg.value = self.operand
            return msg
        if not isinstance(self.operand, int):
            raise TypeError("a version or revision compare needs an int")
        if self.target is CompareTarget.VERSION:
            msg.version = self.operand
        elif self.target is CompareTarget.CREATE:
            msg.create_revision = self.operand
        else:
            msg.mod_revision = self.operand
        return msg


class SortOrder(enum.Enum):
    NONE = rpc_pb2.RangeRequest.NONE
    ASCEND = rpc_pb2.RangeRequest.ASCEND
    DESCEND = rpc_pb2.RangeRequest.DESCEND


class SortTarget(enum.Enum):
    KEY = rpc_pb2.RangeRequest.KEY
    VERSION = rpc_pb2.RangeRequest.VERSION
    CREATE = rpc_pb2.RangeRequest.CREATE
    MOD = rpc_pb2.RangeRequest.MOD
    VALUE = rpc_pb2.RangeRequest.VALUE


class OpKind(enum.Enum):
    GET = "get"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation inside a transaction; build with `Op.get`, `Op.put`, `Op.delete`."""

    kind: OpKind
    key: bytes
    value: bytes = b""
    range_end: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    limit: int = 0

    @classmethod
    def get(cls, key: bytes, *, range_end: bytes = b"", limit: int = 0) -> Op:
        return cls(OpKind.GET, key, range_end=range_end, limit=limit)

    @classmethod
    def put(cls, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> Op:
        return cls(OpKind.PUT, key, value=value, lease=lease, prev_kv=prev_kv)

    @classmethod
    def delete(cls, key: bytes, *, range_end: bytes = b"", prev_kv: bool = False) -> Op:
        return cls(OpKind.DELETE, key, range_end=range_end, prev_kv=prev_kv)

    def to_pb(self) -> rpc_pb2.RequestOp:
        if self.kind is OpKind.GET:
            get = rpc_pb2.RangeRequest(key=self.key, range_end=self.range_end, limit=self.limit)
            return rpc_pb2.RequestOp(request_range=get)
        if self.kind is OpKind.PUT:
            put = rpc_pb2.PutRequest(
                key=self.key, value=self.value, lease=self.lease, prev_kv=self.prev_kv
            )
            return rpc_pb2.RequestOp(request_put=put)
        delete = rpc_pb2.DeleteRangeRequest(
            key=self.key, range_end=self.range_end, prev_kv=self.prev_kv
        )
        return rpc_pb2.RequestOp(request_delete_range=delete)


def range_result(resp: rpc_pb2.RangeResponse) -> RangeResult:
    return RangeResult(
        kvs=tuple(KeyValue.from_pb(kv) for kv in resp.kvs),
        more=resp.more,
        count=resp.count,
        revision=resp.header.revision,
    )


def put_result(resp: rpc_pb2.PutResponse) -> PutResult:
    prev = KeyValue.from_pb(resp.prev_kv) if resp.HasField("prev_kv") else None
    return PutResult(revision=resp.header.revision, prev_kv=prev)


def delete_result(resp: rpc_pb2.DeleteRangeResponse) -> DeleteResult:
    return DeleteResult(
        revision=resp.header.revision,
        deleted=resp.deleted,
        prev_kvs=tuple(KeyValue.from_pb(kv) for kv in resp.prev_kvs),
    )


def txn_result(resp: rpc_pb2.TxnResponse) -> TxnResult:
    results: list[OpResult] = []
    for op in resp.responses:
        which = op.WhichOneof("response")
        if which == "response_range":
            results.append(range_result(op.response_range))
        elif which == "response_put":
            results.append(put_result(op.response_put))
        elif which == "response_delete_range":
            results.append(delete_result(op.response_delete_range))
        else:
            raise ValueError(f"unexpected txn response {which!r}")
    return TxnResult(
        succeeded=resp.succeeded, revision=resp.header.revision, responses=tuple(results)
    )
