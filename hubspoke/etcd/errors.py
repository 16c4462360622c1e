"""Owns the etcd error hierarchy and the one place gRPC status codes become etcd errors.

Callers catch these types, never `grpc.RpcError`. The one distinction that matters for
correctness is `EtcdUncertain`: the request may or may not have been applied (the connection
broke or the deadline passed after it was sent), so a write must be re-read, never blindly
retried.
"""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped]


class EtcdError(Exception):
    """Any failure talking to etcd."""


class EtcdUncertain(EtcdError):
    """The outcome is unknown: the request may have committed. Re-read before acting again."""


class EtcdUnavailable(EtcdUncertain):
    """No endpoint answered (connection refused, reset or broken)."""


class EtcdTimeout(EtcdUncertain):
    """The deadline passed before etcd answered."""


class EtcdNoSpace(EtcdError):
    """etcd's NOSPACE alarm is raised (the backend quota is full): the write was refused, not
    applied. Reads, deletes and keep-alives still work; writes fail until an operator compacts,
    defragments and disarms the alarm."""


class EtcdCompacted(EtcdError):
    """The requested revision has been compacted away; resync from the current revision."""


class EtcdFutureRevision(EtcdError):
    """The requested revision is newer than etcd's current revision."""


class EtcdLeaseNotFound(EtcdError):
    """The lease does not exist (expired or revoked)."""


class EtcdAuthError(EtcdError):
    """Authentication failed or the user lacks permission."""


class EtcdNoLeader(EtcdError):
    """The election has no leader (etcd answers UNKNOWN "election: no leader")."""


class EtcdRequestError(EtcdError):
    """etcd rejected the request itself (bad argument, too many operations, ...): our fault."""


class EtcdClosed(EtcdError):
    """The client was closed."""


class WatchCompacted(EtcdError):
    """A watch start revision was compacted: range the prefix again and start a new watch."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision compacted; oldest available {compact_revision}")
        self.compact_revision = compact_revision


class WatchCanceled(EtcdError):
    """etcd canceled a watch for a reason other than compaction."""


def is_invalid_token(err: Any) -> bool:
    """True if a gRPC error says the auth token expired or is invalid (re-authenticate)."""
    code = err.code()
    details = str(err.details() or "")
    return bool(code == grpc.StatusCode.UNAUTHENTICATED and "token" in details)


def is_unavailable(err: Any) -> bool:
    """True if a gRPC error means the endpoint could not be reached or the connection broke."""
    return bool(err.code() == grpc.StatusCode.UNAVAILABLE)


def from_rpc_error(err: Any) -> EtcdError:
    """Translate a `grpc.aio.AioRpcError` into our hierarchy, keeping code and message."""
    code = err.code()
    details = str(err.details() or "")
    message = f"{getattr(code, 'name', code)}: {details}"
    status = grpc.StatusCode
    if code == status.UNAVAILABLE:
        return EtcdUnavailable(message)
    if code == status.RESOURCE_EXHAUSTED and "space exceeded" in details:
        return EtcdNoSpace(message)
    if code == status.DEADLINE_EXCEEDED:
        return EtcdTimeout(message)
    if code == status.CANCELLED:
        return EtcdUncertain(message)
    if "required revision has been compacted" in details:
        return EtcdCompacted(message)
    if "required revision is a future revision" in details:
        return EtcdFutureRevision(message)
    if code == status.NOT_FOUND and "lease" in details:
        return EtcdLeaseNotFound(message)
    if "election: no leader" in details:
        return EtcdNoLeader(message)
    if code in (status.UNAUTHENTICATED, status.PERMISSION_DENIED) or "authentication" in details:
        return EtcdAuthError(message)
    if code in (status.INVALID_ARGUMENT, status.FAILED_PRECONDITION, status.OUT_OF_RANGE):
        return EtcdRequestError(message)
    return EtcdError(message)
