"""What the engine decides: pure data; no I/O.

`Engine.handle` returns one `Decision`: `Drop` (send nothing), `Reply` (send now) or `Commit`
(write one binding to etcd in one transaction, then send `on_success`, if any, only after the
commit succeeded). The runtime owns sockets and etcd; these types are the whole contract.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from hub.model import Binding, Block, Versioned
from spoke.dhcp.message import Message
from spoke.dhcp.reply import Outgoing


@dataclass(frozen=True, slots=True)
class Ingress:
    """Where a request came in: the interface and our address on it (our server identifier)."""

    interface: str
    server_ip: IPv4Address


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing. `reason` is a stable string for logs and metrics."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `out` now. `outcome`: "offer", "nak", "inform", "ack-early-renewal"."""

    out: Outgoing
    outcome: str


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
