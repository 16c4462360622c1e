"""Scope selection and reservation lookup for the engine. Pure; no I/O.

Relayed traffic (giaddr set) belongs to the scope whose subnet contains giaddr or whose
`relay_addresses` lists it; direct traffic to the scope that names the ingress interface, else
the scope whose subnet contains our address on that interface (RFC 2131 4.3.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address

from hubspoke.model import Reservation, Scope
from spoke.dhcp.message import ZERO, Message


def reservation_matches(r: Reservation, msg: Message) -> bool:
    """Does reservation `r` belong to the client that sent `msg` (client id, else MAC)?"""
    if r.client_id is not None and r.client_id == msg.client_id:
        return True
    return r.hw_address is not None and r.hw_address == msg.hardware_address


class ScopeIndex:
    """Immutable after construction: build a new one when the scopes change."""

    def __init__(self, scopes: Sequence[Scope]) -> None:
        names = [s.name for s in scopes]
        if len(set(names)) != len(names):
            raise ValueError("duplicate scope names")
        self.scopes: tuple[Scope, ...] = tuple(scopes)
        self._by_name = {s.name: s for s in scopes}
        self._by_relay: dict[IPv4Address, Scope] = {}
        self._by_interface: dict[str, Scope] = {}
        self._reserved: dict[str, dict[IPv4Address, Reservation]] = {}
        for s in scopes:
            for ip in s.relay_addresses:
                self._by_relay.setdefault(ip, s)
            for name in s.interfaces:
                self._by_interface.setdefault(name, s)
            self._reserved[s.name] = {r.ip: r for r in s.reservations}

    def get(self, name: str) -> Scope | None:
        return self._by_name.get(name)

    def _containing(self, ip: IPv4Address) -> Scope | None:
        best: Scope | None = None
        for s in self.scopes:
            if ip in s.subnet and (best is None or s.subnet.prefixlen > best.subnet.prefixlen):
                best = s
        return best

    def select(
        self, msg: Message, interface: str, server_ip: IPv4Address, *, unicast: bool = False
    ) -> Scope | None:
        """The scope a request belongs to: by giaddr when relayed; for a unicast request from
        a client with an address (RENEWING, INFORM: RFC 2131 4.3.2, 4.3.5) by ciaddr, since it
        may come from a routed network through no relay; otherwise by the receiving interface.
        """
        if msg.giaddr != ZERO:
            return self._by_relay.get(msg.giaddr) or self._containing(msg.giaddr)
        if unicast and msg.ciaddr != ZERO:
            scope = self._containing(msg.ciaddr)
            if scope is not None:
                return scope
        return self._by_interface.get(interface) or self._containing(server_ip)

    def reservation_at(self, scope: Scope, ip: IPv4Address) -> Reservation | None:
        return self._reserved[scope.name].get(ip)

    def reservation_for(self, scope: Scope, msg: Message) -> Reservation | None:
        for r in scope.reservations:
            if reservation_matches(r, msg):
                return r
        return None

    def reserved_for_other(self, scope: Scope, ip: IPv4Address, msg: Message) -> bool:
        r = self.reservation_at(scope, ip)
        return r is not None and not reservation_matches(r, msg)


def in_pools(scope: Scope, ip: IPv4Address) -> bool:
    return any(ip in p for p in scope.pools)
