"""Frozen data the whole system speaks: scopes, reservations, bindings, blocks. Pure; no I/O."""

from __future__ import annotations

import enum
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network


def parse_ipv4(text: str) -> IPv4Address:
    """A dotted-quad address, as strict as `IPv4Address(text)` (no leading zeros, no
    whitespace, four decimal parts) at a fraction of its cost; for the paths that parse every
    binding the watch delivers. Raises ValueError."""
    try:
        return IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except OSError as e:
        raise ValueError(f"not an IPv4 address: {text!r}") from e


@dataclass(frozen=True, slots=True)
class Pool:
    """An inclusive range of addresses inside a scope's subnet."""

    first: IPv4Address
    last: IPv4Address

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and self.first <= ip <= self.last

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """A fixed address for one client, matched by hardware address or client identifier."""

    ip: IPv4Address
    hw_address: bytes | None = None
    client_id: bytes | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """One subnet served by the cluster.

    `options` holds encoded option values by code (router, DNS servers, domain name, any code);
    they are answered against the client's parameter request list. `interfaces` names the
    interfaces whose direct (non-relayed) traffic belongs to this scope; relayed traffic is
    matched by giaddr inside `subnet` or listed in `relay_addresses`.
    """

    name: str
    subnet: IPv4Network
    pools: tuple[Pool, ...]
    lease_time: int = 3600
    max_lease_time: int = 7200
    min_lease_time: int = 60
    t1: int | None = None
    t2: int | None = None
    options: Mapping[int, bytes] = field(default_factory=dict)
    reservations: tuple[Reservation, ...] = ()
    interfaces: tuple[str, ...] = ()
    relay_addresses: tuple[IPv4Address, ...] = ()

    def renewal_time(self, lease: int) -> int:
        """T1 for a lease of `lease` seconds: configured, else 50% (RFC 2131 4.4.5)."""
        t1 = self.t1 if self.t1 is not None else lease // 2
        return min(t1, max(lease - 2, 0))

    def rebinding_time(self, lease: int) -> int:
        """T2 for a lease of `lease` seconds: configured, else 87.5% (RFC 2131 4.4.5)."""
        t2 = self.t2 if self.t2 is not None else lease * 7 // 8
        return min(t2, max(lease - 1, 0))


class BindingState(enum.StrEnum):
    BOUND = "bound"
    RELEASED = "released"
    DECLINED = "declined"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Binding:
    """What etcd holds for one address: `leases/<scope>/<ip>`.

    Times are absolute (seconds since the epoch). `expires` is the end of validity for BOUND,
    for DECLINED the later of the end of probation and of the lease it held, and for RELEASED
    the end of the lease it ended: during one client's tenure of an address it never moves back.
    The address may be given to another client only after `expires + MCLT + reuse delay`
    (docs/cluster.md, "Why no address is bound twice").
    """

    scope: str
    ip: IPv4Address
    state: BindingState
    client_key: bytes
    hw_address: bytes
    start: float
    expires: float
    node: str
    hostname: str | None = None

    def is_active(self, now: float) -> bool:
        return self.state is BindingState.BOUND and now < self.expires


@dataclass(frozen=True, slots=True)
class Versioned:
    """A value read from etcd with the revisions the commit rule compares against."""

    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Block:
    """A contiguous run of a scope's pool, owned by at most one spoke."""

    scope: str
    first: IPv4Address
    last: IPv4Address

    @property
    def block_id(self) -> str:
        return f"{self.first}-{self.last}"

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and self.first <= ip <= self.last
