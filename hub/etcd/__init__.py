"""The only code that talks to etcd: client, session, watch and election over grpc.aio.

Import the public names from here: `from hub.etcd import EtcdClient, EtcdConfig, Compare, Op`.
"""

from hub.etcd.client import EtcdClient
from hub.etcd.election import Election, Leader, Leadership
from hub.etcd.errors import (
    EtcdAuthError,
    EtcdClosed,
    EtcdCompacted,
    EtcdError,
    EtcdFutureRevision,
    EtcdLeaseNotFound,
    EtcdNoLeader,
    EtcdRequestError,
    EtcdTimeout,
    EtcdUnavailable,
    EtcdUncertain,
    WatchCanceled,
    WatchCompacted,
)
from hub.etcd.records import (
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
    prefix_end,
)
from hub.etcd.session import Session
from hub.etcd.transport import EtcdConfig
from hub.etcd.watch import EventType, WatchBatch, WatchEvent, watch_prefix

__all__ = [
    "Compare",
    "DeleteResult",
    "Election",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdClosed",
    "EtcdCompacted",
    "EtcdConfig",
    "EtcdError",
    "EtcdFutureRevision",
    "EtcdLeaseNotFound",
    "EtcdNoLeader",
    "EtcdRequestError",
    "EtcdTimeout",
    "EtcdUnavailable",
    "EtcdUncertain",
    "EventType",
    "KeyValue",
    "Leader",
    "Leadership",
    "Lease",
    "LeaseTimeToLive",
    "Op",
    "PutResult",
    "RangeResult",
    "Session",
    "SortOrder",
    "SortTarget",
    "Status",
    "TxnResult",
    "WatchBatch",
    "WatchCanceled",
    "WatchCompacted",
    "WatchEvent",
    "prefix_end",
    "watch_prefix",
]
