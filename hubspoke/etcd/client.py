"""Owns the etcd key-value, lease and maintenance calls: the API the rest of hubspoke uses.

Every method takes and returns our own frozen records (`hubspoke.etcd.records`), never protobuf.
Reads move to the next endpoint on UNAVAILABLE; writes raise `EtcdUncertain` when the outcome
is unknown, and the caller re-reads (never a blind retry of a transaction).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Self

from hubspoke.api.etcd import rpc_pb2
from hubspoke.etcd.records import (
    Compare,
    DeleteResult,
    KeyValue,
    Lease,
    LeaseTimeToLive,
    Op,
    PutResult,
    RangeResult,
    SortOrder,
    SortTarget,
    Status,
    TxnResult,
    delete_result,
    prefix_end,
    put_result,
    range_result,
    txn_result,
)
from hubspoke.etcd.transport import EtcdConfig, Transport

_KV = "/etcdserverpb.KV/"
_LEASE = "/etcdserverpb.Lease/"


class EtcdClient:
    """An asyncio etcd v3 client. Create with `await EtcdClient.connect(config)`.

    `transport` replaces the gRPC transport (the simulation's in-memory etcd); default: channels
    to `config.endpoints`.
    """

    def __init__(self, config: EtcdConfig, *, transport: Transport | None = None) -> None:
        self.config = config
        self.transport = Transport(config) if transport is None else transport

    @classmethod
    async def connect(cls, config: EtcdConfig) -> EtcdClient:
        """Open channels and authenticate if the config carries a user (no round trip otherwise)."""
        client = cls(config)
        try:
            await client.transport.authenticate()
        except BaseException:
            await client.close()
            raise
        return client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    # -- reads -----------------------------------------------------------------------------

    async def get(
        self, key: bytes, *, revision: int = 0, deadline: float | None = None
    ) -> KeyValue | None:
        """The key's current value (or at `revision`), None if absent."""
        result = await self.range(key, revision=revision, deadline=deadline)
        return result.kvs[0] if result.kvs else None

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: SortOrder = SortOrder.NONE,
        sort_target: SortTarget = SortTarget.KEY,
        deadline: float | None = None,
    ) -> RangeResult:
        """Keys in [key, range_end) (just `key` if range_end is empty), linearizable."""
        request = rpc_pb2.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=sort_order.value,
            sort_target=sort_target.value,
        )
        response = await self.transport.unary(
            _KV + "Range",
            request,
            rpc_pb2.RangeResponse.FromString,
            idempotent=True,
            deadline=deadline,
        )
        return range_result(response)

    async def range_prefix(
        self, prefix: bytes, *, limit: int = 0, revision: int = 0, keys_only: bool = False
    ) -> RangeResult:
        return await self.range(
            prefix, prefix_end(prefix), limit=limit, revision=revision, keys_only=keys_only
        )

    async def range_prefix_all(
        self, prefix: bytes, *, page_size: int = 1000, revision: int = 0
    ) -> tuple[list[KeyValue], int]:
        """Every key under prefix at one pinned revision, paginated; returns (kvs, revision).

        The first page fixes the revision (unless given); later pages read at it, starting just
        after the last key seen, so the result is one consistent snapshot.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        end = prefix_end(prefix)
        start = prefix
        found: list[KeyValue] = []
        while True:
            page = await self.range(start, end, limit=page_size, revision=revision)
            if revision == 0:
                revision = page.revision
            found.extend(page.kvs)
            if not page.more or not page.kvs:
                return found, revision
            start = page.kvs[-1].key + b"\0"

    # -- writes ----------------------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        deadline: float | None = None,
    ) -> PutResult:
        request = rpc_pb2.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv)
        response = await self.transport.unary(
            _KV + "Put",
            request,
            rpc_pb2.PutResponse.FromString,
            idempotent=False,
            deadline=deadline,
        )
        return put_result(response)

    async def delete(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        deadline: float | None = None,
    ) -> DeleteResult:
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv)
        response = await self.transport.unary(
            _KV + "DeleteRange",
            request,
            rpc_pb2.DeleteRangeResponse.FromString,
            idempotent=False,
            deadline=deadline,
        )
        return delete_result(response)

    async def delete_prefix(self, prefix: bytes, *, prev_kv: bool = False) -> DeleteResult:
        return await self.delete(prefix, prefix_end(prefix), prev_kv=prev_kv)

    async def txn(
        self,
        compares: Iterable[Compare],
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        *,
        deadline: float | None = None,
    ) -> TxnResult:
        """If every compare holds run `success`, else `failure`; one atomic revision.

        Raises `EtcdUncertain` if the outcome is unknown: re-read the keys, never retry blindly.
        """
        request = rpc_pb2.TxnRequest(
            compare=[c.to_pb() for c in compares],
            success=[op.to_pb() for op in success],
            failure=[op.to_pb() for op in failure],
        )
        response = await self.transport.unary(
            _KV + "Txn",
            request,
            rpc_pb2.TxnResponse.FromString,
            idempotent=False,
            deadline=deadline,
        )
        return txn_result(response)

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        """Discard history before `revision` (tests and maintenance)."""
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        await self.transport.unary(
            _KV + "Compact", request, rpc_pb2.CompactionResponse.FromString, idempotent=True
        )

    # -- leases ----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> Lease:
        """A new lease; etcd may grant a longer TTL than asked (its minimum is about 2 s)."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        response = await self.transport.unary(
            _LEASE + "LeaseGrant", request, rpc_pb2.LeaseGrantResponse.FromString, idempotent=False
        )
        return Lease(id=response.ID, ttl=response.TTL)

    async def lease_revoke(self, lease_id: int, *, deadline: float | None = None) -> None:
        """Revoke a lease, deleting its keys. Raises `EtcdLeaseNotFound` if already gone."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        await self.transport.unary(
            _LEASE + "LeaseRevoke",
            request,
            rpc_pb2.LeaseRevokeResponse.FromString,
            idempotent=True,
            deadline=deadline,
        )

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTimeToLive:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        response = await self.transport.unary(
            _LEASE + "LeaseTimeToLive",
            request,
            rpc_pb2.LeaseTimeToLiveResponse.FromString,
            idempotent=True,
        )
        return LeaseTimeToLive(
            id=response.ID,
            ttl=response.TTL,
            granted_ttl=response.grantedTTL,
            keys=tuple(response.keys),
        )

    # -- maintenance -----------------------------------------------------------------------

    async def status(self, *, deadline: float | None = None) -> Status:
        """The current endpoint's member status (version, leader, revision, ...)."""
        response = await self.transport.unary(
            "/etcdserverpb.Maintenance/Status",
            rpc_pb2.StatusRequest(),
            rpc_pb2.StatusResponse.FromString,
            idempotent=True,
            deadline=deadline,
        )
        return Status(
            version=response.version,
            db_size=response.dbSize,
            leader=response.leader,
            member_id=response.header.member_id,
            raft_index=response.raftIndex,
            raft_term=response.raftTerm,
            revision=response.header.revision,
            errors=tuple(response.errors),
        )
