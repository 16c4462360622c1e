"""What the engine decides: pure data; no I/O.

`Engine.handle` returns one `Decision`: `Drop` (send nothing), `Reply` (send now) or `Commit`
(write one binding to etcd in one transaction, then send `on_success`, if any, only after the
commit succeeded). The runtime owns sockets and etcd; these types are the whole contract.
`needs_bucket` says which requests only the client's bucket owner answers in a cluster.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from hubspoke.model import Binding, Block, Versioned
from spoke.dhcp.message import ZERO, Message, MessageType
from spoke.dhcp.reply import Outgoing


@dataclass(frozen=True, slots=True)
class Ingress:
    """Where a request came in: the interface and our address on it (our server identifier).

    `broadcast`: the datagram was not addressed to one of our own addresses (limited or
    directed broadcast). The default keeps callers that cannot tell on the safe side: a
    broadcast request is answered only by the client's bucket owner.
    """

    interface: str
    server_ip: IPv4Address
    broadcast: bool = True


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing. `reason` is a stable string for logs and metrics."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `out` now. `outcome`: "offer", "nak", "inform", "ack-early-renewal".

    `scope`: the scope the reply serves, when known (per-scope offer counters).
    """

    out: Outgoing
    outcome: str
    scope: str | None = None


class CommitKind(enum.Enum):
    ACK = "ack"  # a REQUEST: bind or extend, ACK after the commit
    DECLINE = "decline"  # quarantine the address; no reply
    RELEASE = "release"  # the client gave the address back; no reply


@dataclass(frozen=True, slots=True)
class BindingWrite:
    """One compare-and-put of `leases/<scope>/<ip>`.

    `expected=None`: the key must never have been written (create_revision == 0); else the key's
    mod_revision must equal `expected.mod_revision`. `fence`, set for a new allocation: the block
    key's mod_revision must equal the fencing revision.
    """

    scope: str
    ip: IPv4Address
    binding: Binding
    expected: Versioned | None
    fence: tuple[Block, int] | None


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit `write`; on success send `on_success` (None: no reply), then `table.apply(...)`
    and `engine.committed(...)`; on a failed compare, refresh the table and call
    `engine.commit_failed(...)`, which returns what to do instead."""

    write: BindingWrite
    on_success: Outgoing | None
    kind: CommitKind
    request: Message
    ingress: Ingress

    @property
    def outcome(self) -> str:
        return self.kind.value


Decision = Drop | Reply | Commit


@dataclass(frozen=True, slots=True)
class ServingPolicy:
    """What the failover state lets the engine do: `lease_cap` (seconds; None: the scope's
    limits only) caps every lease; `allocate_new=False` refuses new allocations.

    While etcd cannot be written (`lease_cap` set, the MCLT), a lease may end no later than the
    latest of: the expiry etcd recorded for this client at the address plus `lease_cap`, and,
    for an address in one of our blocks, `journal_until` (wall clock; the failover machine's
    `journal_horizon`). docs/cluster.md, "Why no address is bound twice", says why."""

    lease_cap: int | None = None
    allocate_new: bool = True
    journal_until: float | None = None


def needs_bucket(msg: Message, ingress: Ingress) -> bool:
    """Is `msg` heard by every server, so that only the client's bucket owner may answer it?"""
    broadcast = ingress.broadcast or msg.giaddr != ZERO
    mtype = msg.message_type
    if mtype is MessageType.DISCOVER:
        return True
    if mtype is MessageType.REQUEST:
        if msg.server_id is not None:  # SELECTING: the named server answers
            return False
        if msg.ciaddr == ZERO:  # INIT-REBOOT
            return True
        return broadcast  # REBINDING (broadcast) or RENEWING (unicast to us)
    if mtype is MessageType.INFORM:
        return broadcast
    # DECLINE and RELEASE name their server; one naming none is the bucket owner's when broadcast
    return msg.server_id is None and broadcast
