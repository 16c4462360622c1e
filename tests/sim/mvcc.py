"""Owns the simulated etcd's data: one MVCC key space with a global revision, and the leases.

Pure; no asyncio and no clock reads (a lease's expiry is a number its owner sets and compares).
Requests and responses are the real protobuf messages; the semantics are etcd 3.4's
(`mvcc/kvstore_txn.go`, `etcdserver/apply.go`, `etcdserver/api/v3rpc/key.go`), including the
corners the client can see: a range's `count` ignores its limit, a header revision inside a
transaction is the revision the transaction has reached so far, a value compare on a missing
key fails whatever its operator, a delete of nothing writes no revision, compaction keeps each
key's latest version at or before the compact revision unless that version is a deletion.
Errors are `RpcFailure`s carrying the gRPC code and the details string etcd sends.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]

from hubspoke.api.etcd import kv_pb2, rpc_pb2

MAX_TXN_OPS = 128


class RpcFailure(Exception):
    """etcd answered a call with a gRPC error status (code and details as etcd sends them)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


Code = grpc.StatusCode
_MVCC = "etcdserver: mvcc: "
COMPACTED = (Code.OUT_OF_RANGE, _MVCC + "required revision has been compacted")
FUTURE_REV = (Code.OUT_OF_RANGE, _MVCC + "required revision is a future revision")
NO_SPACE = (Code.RESOURCE_EXHAUSTED, _MVCC + "database space exceeded")
LEASE_NOT_FOUND = (Code.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = (Code.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = (Code.OUT_OF_RANGE, "etcdserver: too large lease TTL")
EMPTY_KEY = (Code.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = (Code.INVALID_ARGUMENT, "etcdserver: key not found")
TOO_MANY_OPS = (Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = (Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")


def fail(failure: tuple[grpc.StatusCode, str]) -> RpcFailure:
    """The `RpcFailure` of one of the errors above."""
    return RpcFailure(*failure)


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a key (etcd's `mvccpb.KeyValue`)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def to_pb(self, *, keys_only: bool = False) -> kv_pb2.KeyValue:
        return kv_pb2.KeyValue(
            key=self.key,
            value=b"" if keys_only else self.value,
            create_revision=self.create_revision,
            mod_revision=self.mod_revision,
            version=self.version,
            lease=self.lease,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the store's history; a deletion's `kv` carries the key and revision only."""

    revision: int
    deleted: bool
    kv: Version
    prev: Version | None

    def to_pb(self, *, prev_kv: bool) -> kv_pb2.Event:
        event = kv_pb2.Event(
            type=kv_pb2.Event.DELETE if self.deleted else kv_pb2.Event.PUT, kv=self.kv.to_pb()
        )
        if prev_kv and self.prev is not None:
            event.prev_kv.CopyFrom(self.prev.to_pb())
        return event


@dataclass(slots=True)
class LeaseRecord:
    """A granted lease: `ttl` as granted, `expiry` on its owner's clock, the keys attached."""

    id: int
    ttl: int
    expiry: float
    keys: dict[bytes, None] = field(default_factory=dict)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's interval: empty `end` selects `start` alone, `end == b"\\0"` every key >= start."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def _ordered(value: int) -> int:
    return (value > 0) - (value < 0)


def _compare_bytes(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


class Store:
    """The key space (`live` now, `_history` for reads at older revisions), its events, leases."""

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self._written = 1  # the highest revision recorded, a transaction's pending one included
        self.live: dict[bytes, Version] = {}
        self._history: dict[bytes, list[tuple[int, Version | None]]] = {}
        self._keys: list[bytes] = []  # sorted: every key that has history
        self.changes: list[Change] = []  # ascending revision
        self.leases: dict[int, LeaseRecord] = {}
        self._bytes = 0  # keys and values of every version kept

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: bytes, revision: int = 0) -> Version | None:
        """The key's version at `revision` (0 or the store's revision: now)."""
        if revision <= 0 or revision >= self._written:
            return self.live.get(key)
        history = self._history.get(key)
        if not history:
            return None
        index = bisect.bisect_right(history, revision, key=lambda entry: entry[0]) - 1
        return history[index][1] if index >= 0 else None

    def keys_between(self, start: bytes, end: bytes) -> list[bytes]:
        """Every key with history in [start, end) (etcd's interval rules), in key order."""
        if not end:
            return [start] if start in self._history else []
        lo = bisect.bisect_left(self._keys, start)
        hi = len(self._keys) if end == b"\0" else bisect.bisect_left(self._keys, end)
        return self._keys[lo:hi]

    def versions(self, start: bytes, end: bytes, revision: int = 0) -> list[Version]:
        found = []
        for key in self.keys_between(start, end):
            version = self.get(key, revision)
            if version is not None:
                found.append(version)
        return found

    def check_revision(self, revision: int, current: int) -> None:
        if revision > current:
            raise fail(FUTURE_REV)
        if 0 < revision < self.compact_revision:
            raise fail(COMPACTED)

    def range(self, req: rpc_pb2.RangeRequest, current: int) -> rpc_pb2.RangeResponse:
        """A Range at `req.revision` (0: now); `current` is the revision to report."""
        self.check_revision(req.revision, current)
        found = self.versions(req.key, req.range_end, req.revision)
        count = len(found)
        filtered = (
            req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        if req.limit > 0 and req.sort_order == rpc_pb2.RangeRequest.NONE and not filtered:
            found = found[: req.limit + 1]  # etcd fetches one extra for `more`
        if req.max_mod_revision:
            found = [v for v in found if v.mod_revision <= req.max_mod_revision]
        if req.min_mod_revision:
            found = [v for v in found if v.mod_revision >= req.min_mod_revision]
        if req.max_create_revision:
            found = [v for v in found if v.create_revision <= req.max_create_revision]
        if req.min_create_revision:
            found = [v for v in found if v.create_revision >= req.min_create_revision]
        order = req.sort_order
        if req.sort_target != rpc_pb2.RangeRequest.KEY and order == rpc_pb2.RangeRequest.NONE:
            order = rpc_pb2.RangeRequest.ASCEND
        if order != rpc_pb2.RangeRequest.NONE:
            found = _sorted(found, req.sort_target, order == rpc_pb2.RangeRequest.DESCEND)
        resp = rpc_pb2.RangeResponse(count=count)
        resp.header.revision = current
        if req.count_only:
            return resp
        if req.limit > 0 and len(found) > req.limit:
            found = found[: req.limit]
            resp.more = True
        resp.kvs.extend(v.to_pb(keys_only=req.keys_only) for v in found)
        return resp

    def compare(self, cmp: rpc_pb2.Compare) -> bool:
        """etcd's applyCompare: every key in the compare's range must satisfy it."""
        found = self.versions(cmp.key, cmp.range_end)
        if not found:
            if cmp.target == rpc_pb2.Compare.VALUE:
                return False  # a value compare on a missing key always fails
            found = [Version(cmp.key, b"", 0, 0, 0, 0)]
        return all(_compare_one(cmp, v) for v in found)

    # -- writes ----------------------------------------------------------------------------

    def write(self) -> Write:
        return Write(self)

    def _record(self, key: bytes, revision: int, version: Version | None) -> None:
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = []
            bisect.insort(self._keys, key)
        history.append((revision, version))
        self._written = max(self._written, revision)
        self._bytes += len(key) + (len(version.value) if version else 0)
        if version is None:
            self.live.pop(key, None)
        else:
            self.live[key] = version

    def changes_from(self, revision: int) -> list[Change]:
        """Every recorded event at `revision` or later, in order."""
        start = bisect.bisect_left(self.changes, revision, key=lambda c: c.revision)
        return self.changes[start:]

    def compact(self, revision: int) -> None:
        """Drop history before `revision` (etcd's physical compaction)."""
        if revision <= self.compact_revision:
            raise fail(COMPACTED)
        if revision > self.revision:
            raise fail(FUTURE_REV)
        for key in list(self._keys):
            history = self._history[key]
            index = bisect.bisect_right(history, revision, key=lambda entry: entry[0]) - 1
            if index < 0:
                continue
            keep = history[index + 1 :] if history[index][1] is None else history[index:]
            if keep:
                self._history[key] = keep
            else:
                del self._history[key]
                self._keys.remove(key)
        start = bisect.bisect_left(self.changes, revision, key=lambda c: c.revision)
        self.changes = [c for c in self.changes[start:] if c.revision > revision or not c.deleted]
        self.compact_revision = revision
        self._bytes = sum(
            len(key) + sum(len(v.value) if v else 0 for _, v in history)
            for key, history in self._history.items()
        )

    # -- leases ----------------------------------------------------------------------------

    def grant(self, lease_id: int, ttl: int, expiry: float) -> LeaseRecord:
        if lease_id in self.leases:
            raise fail(LEASE_EXISTS)
        record = self.leases[lease_id] = LeaseRecord(lease_id, ttl, expiry)
        return record

    def revoke(self, lease_id: int) -> list[Change]:
        """Remove the lease and delete its keys at one revision (sorted, as etcd does)."""
        record = self.leases.pop(lease_id, None)
        if record is None:
            raise fail(LEASE_NOT_FOUND)
        txn = self.write()
        for key in sorted(record.keys):
            txn.delete_range(key, b"")
        return txn.commit()

    def size(self) -> int:
        """A stand-in for the database size: bytes of every version kept."""
        return 24576 + self._bytes


class Write:
    """One write transaction: every change gets revision `store.revision + 1`, applied at once.

    Reads inside it (at revision 0) see its own earlier writes, as in etcd.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.next_revision = store.revision + 1
        self.changes: list[Change] = []

    @property
    def revision(self) -> int:
        """The revision the transaction has reached: the next one once it changed anything."""
        return self.next_revision if self.changes else self.store.revision

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return self.store.range(req, self.revision)

    def put(self, key: bytes, value: bytes, lease: int) -> Version | None:
        store = self.store
        prev = store.live.get(key)
        version = Version(
            key=key,
            value=value,
            create_revision=prev.create_revision if prev else self.next_revision,
            mod_revision=self.next_revision,
            version=prev.version + 1 if prev else 1,
            lease=lease,
        )
        self._detach(prev)
        if lease:
            store.leases[lease].keys[key] = None
        store._record(key, self.next_revision, version)
        self.changes.append(Change(self.next_revision, False, version, prev))
        return prev

    def delete_range(self, start: bytes, end: bytes) -> list[Version]:
        store = self.store
        deleted = [store.live[k] for k in store.keys_between(start, end) if k in store.live]
        for prev in deleted:
            self._detach(prev)
            store._record(prev.key, self.next_revision, None)
            tombstone = Version(prev.key, b"", 0, self.next_revision, 0, 0)
            self.changes.append(Change(self.next_revision, True, tombstone, prev))
        return deleted

    def _detach(self, prev: Version | None) -> None:
        if prev is not None and prev.lease:
            record = self.store.leases.get(prev.lease)
            if record is not None:
                record.keys.pop(prev.key, None)

    def commit(self) -> list[Change]:
        """End the transaction: the store moves to the next revision if anything changed."""
        if self.changes:
            self.store.revision = self.next_revision
            self.store.changes.extend(self.changes)
        return self.changes


def _compare_one(cmp: rpc_pb2.Compare, kv: Version) -> bool:
    which = cmp.WhichOneof("target_union")
    target = cmp.target
    if target == rpc_pb2.Compare.VALUE:
        result = _compare_bytes(kv.value, cmp.value if which == "value" else b"")
    else:
        ours = {
            rpc_pb2.Compare.VERSION: (kv.version, "version"),
            rpc_pb2.Compare.CREATE: (kv.create_revision, "create_revision"),
            rpc_pb2.Compare.MOD: (kv.mod_revision, "mod_revision"),
            rpc_pb2.Compare.LEASE: (kv.lease, "lease"),
        }
        have, field_name = ours[target]
        operand: int = getattr(cmp, field_name) if which == field_name else 0
        result = _ordered(have - operand)
    op = cmp.result
    if op == rpc_pb2.Compare.EQUAL:
        return result == 0
    if op == rpc_pb2.Compare.NOT_EQUAL:
        return result != 0
    if op == rpc_pb2.Compare.GREATER:
        return result > 0
    if op == rpc_pb2.Compare.LESS:
        return result < 0
    return True


def _sort_key(target: int) -> Callable[[Version], Any]:
    if target == rpc_pb2.RangeRequest.VERSION:
        return lambda v: v.version
    if target == rpc_pb2.RangeRequest.CREATE:
        return lambda v: v.create_revision
    if target == rpc_pb2.RangeRequest.MOD:
        return lambda v: v.mod_revision
    if target == rpc_pb2.RangeRequest.VALUE:
        return lambda v: v.value
    return lambda v: v.key


def _sorted(found: list[Version], target: int, descend: bool) -> list[Version]:
    return sorted(found, key=_sort_key(target), reverse=descend)


__all__ = [
    "COMPACTED",
    "DUPLICATE_KEY",
    "EMPTY_KEY",
    "FUTURE_REV",
    "KEY_NOT_FOUND",
    "LEASE_EXISTS",
    "LEASE_NOT_FOUND",
    "LEASE_TTL_TOO_LARGE",
    "MAX_TXN_OPS",
    "NO_SPACE",
    "TOO_MANY_OPS",
    "Change",
    "LeaseRecord",
    "RpcFailure",
    "Store",
    "Version",
    "Write",
    "fail",
    "in_range",
]
