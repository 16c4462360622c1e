"""The only code that talks to etcd: client, session, watch and election over grpc.aio.

Import the public names from here: `from hubspoke.etcd import EtcdClient, EtcdConfig, Compare, Op`.
"""

from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.election import Election, Leader, Leadership
from hubspoke.etcd.errors import (
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
    prefix_end,
)
from hubspoke.etcd.session import Session
from hubspoke.etcd.transport import EtcdConfig
from hubspoke.etcd.watch import EventType, WatchBatch, WatchEvent, watch_prefix

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
