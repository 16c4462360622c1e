"""Scope definitions from plain data (YAML, JSON, API) to validated `Scope` objects. Pure; no I/O.

Owns the option-name table and every rule a scope must satisfy on its own and next to its
siblings. Option values are encoded by an injected `OptionCodec`; `default_option_codec()`
builds the real one from `hubspoke.dhcp.options`. Fields are read with `hubspoke.config`.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from types import MappingProxyType

from hubspoke.config import (
    ConfigError,
    Section,
    check_str,
    child,
    kind_of,
    parse_hex_bytes,
    parse_ipv4,
)
from hubspoke.dhcp import options as dhcp_options
from hubspoke.model import Pool, Reservation, Scope

MAX_LEASE = 0xFFFFFFFE  # 0xFFFFFFFF means "infinite" on the wire (RFC 2132 9.2); never configured
SCOPE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True, slots=True)
class OptionCodec:
    """How options from config become bytes, supplied by the DHCP codec.

    `encode` raises ValueError with a reason; `names` maps option names (hyphenated, e.g.
    `dns-servers`) to codes; config may spell them with `_` or `-`; `server_owned` codes are
    refused.
    """

    encode: Callable[[int, object], bytes]
    server_owned: frozenset[int]
    names: Mapping[str, int]


def default_option_codec() -> OptionCodec:
    """The real option encoder, option names and server-owned codes (`hubspoke.dhcp.options`)."""
    return OptionCodec(
        encode=dhcp_options.encode_option_value,
        server_owned=dhcp_options.SERVER_OWNED,
        names=dhcp_options.OPTION_NAMES,
    )


# -- scopes ---------------------------------------------------------------------------------

# fmt: off
SCOPE_KEYS = ("name", "subnet", "pools", "lease_time", "max_lease_time", "min_lease_time", "t1",
              "t2", "interfaces", "relay_addresses", "options", "reservations")
# fmt: on
RESERVATION_KEYS = ("ip", "hw_address", "client_id", "hostname")


def parse_subnet(value: object, path: str) -> IPv4Network:
    text = check_str(value, path).strip()
    try:
        return IPv4Network(text, strict=True)
    except ValueError as e:
        if isinstance(e, AddressValueError | NetmaskValueError):
            raise ConfigError(path, f"{text!r} is not an IPv4 network") from None
        raise ConfigError(path, f"{text}: host bits set") from None


def parse_pool(value: object, path: str, subnet: IPv4Network) -> Pool:
    text = check_str(value, path).strip()
    first_text, sep, last_text = text.partition("-")
    first = parse_ipv4(first_text, path)
    last = parse_ipv4(last_text if sep else first_text, path)
    if first > last:
        raise ConfigError(path, f"{text}: first address is after last")
    if first not in subnet or last not in subnet:
        raise ConfigError(path, f"{text}: not inside subnet {subnet}")
    if subnet.prefixlen <= 30:
        for edge, what in (
            (subnet.network_address, "network"),
            (subnet.broadcast_address, "broadcast"),
        ):
            if first <= edge <= last:
                raise ConfigError(path, f"{text}: includes the subnet's {what} address {edge}")
    return Pool(first, last)


def parse_options(value: object, path: str, codec: OptionCodec) -> dict[int, bytes]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {kind_of(value)}")
    out: dict[int, bytes] = {}
    for key, raw in value.items():
        where = child(path, key)
        code = _option_code(key, where, codec.names)
        if code in codec.server_owned:
            raise ConfigError(where, f"option {code} is set by the server, not by configuration")
        if code in out:
            raise ConfigError(where, f"option {code} is given twice")
        if raw is None:
            raise ConfigError(where, "required")
        try:
            out[code] = codec.encode(code, raw)
        except ValueError as e:
            raise ConfigError(where, str(e)) from None
    return out


def _option_code(key: object, path: str, names: Mapping[str, int]) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        code = key
    elif isinstance(key, str) and key.isdigit():
        code = int(key)
    elif isinstance(key, str):
        dashed = key.replace("_", "-")
        if dashed in names:
            return names[dashed]
        near = difflib.get_close_matches(dashed, list(names), n=1)
        hint = f" (did you mean {near[0].replace('-', '_')!r}?)" if near else ""
        raise ConfigError(path, f"unknown option name{hint}")
    else:
        raise ConfigError(path, f"option keys are names or codes, got {kind_of(key)}")
    if not 1 <= code <= 254:
        raise ConfigError(path, f"option code {code} must be 1..254")
    return code


def parse_reservation(value: object, path: str, subnet: IPv4Network) -> Reservation:
    s = Section.of(value, path, RESERVATION_KEYS, required=("ip",))
    ip = parse_ipv4(s.raw("ip"), s.at("ip"))
    if ip not in subnet:
        raise ConfigError(s.at("ip"), f"{ip} is not inside subnet {subnet}")
    if subnet.prefixlen <= 30 and ip in (subnet.network_address, subnet.broadcast_address):
        raise ConfigError(s.at("ip"), f"{ip} is the subnet's network or broadcast address")
    hw = (
        parse_hex_bytes(s.raw("hw_address"), s.at("hw_address"), max_len=16)
        if s.has("hw_address")
        else None
    )
    cid = (
        parse_hex_bytes(s.raw("client_id"), s.at("client_id"), max_len=255)
        if s.has("client_id")
        else None
    )
    if (hw is None) == (cid is None):
        raise ConfigError(path, "give exactly one of hw_address or client_id")
    return Reservation(ip=ip, hw_address=hw, client_id=cid, hostname=s.optional_text("hostname"))


def parse_scope(value: object, path: str, codec: OptionCodec) -> Scope:
    """One scope, checked on its own (pools, times, reservations, options)."""
    s = Section.of(value, path, SCOPE_KEYS, required=("name", "subnet", "pools"))
    name = s.text("name")
    if not SCOPE_NAME.fullmatch(name):
        raise ConfigError(s.at("name"), f"{name!r} must match {SCOPE_NAME.pattern}")
    subnet = parse_subnet(s.raw("subnet"), s.at("subnet"))
    pools = tuple(parse_pool(v, p, subnet) for p, v in s.items("pools"))
    if not pools:
        raise ConfigError(s.at("pools"), "at least one pool is required")
    lease = s.integer("lease_time", 3600, lo=1, hi=MAX_LEASE)
    longest = s.integer("max_lease_time", max(7200, lease), lo=1, hi=MAX_LEASE)
    shortest = s.integer("min_lease_time", min(60, lease), lo=1, hi=MAX_LEASE)
    t1 = s.optional_integer("t1", lo=1, hi=MAX_LEASE)
    t2 = s.optional_integer("t2", lo=1, hi=MAX_LEASE)
    if lease > longest:
        raise ConfigError(s.at("lease_time"), f"{lease} is above max_lease_time {longest}")
    if shortest > lease:
        raise ConfigError(s.at("min_lease_time"), f"{shortest} is above lease_time {lease}")
    eff_t2 = t2 if t2 is not None else lease * 7 // 8
    if t2 is not None and t2 >= lease:
        raise ConfigError(s.at("t2"), f"{t2} must be below lease_time {lease}")
    if t1 is not None and t1 >= eff_t2:
        raise ConfigError(s.at("t1"), f"{t1} must be below t2 {eff_t2}")
    if t2 is not None and t1 is None and lease // 2 >= t2:
        raise ConfigError(s.at("t2"), f"{t2} must be above the default t1 {lease // 2}")
    relays: list[IPv4Address] = []
    for p, v in s.items("relay_addresses"):
        ip = parse_ipv4(v, p)
        if ip in relays:
            raise ConfigError(p, f"{ip} is listed twice")
        relays.append(ip)
    reservations = tuple(parse_reservation(v, p, subnet) for p, v in s.items("reservations"))
    _check_reservations(reservations, pools, s.at("reservations"))
    return Scope(
        name=name,
        subnet=subnet,
        pools=pools,
        lease_time=lease,
        max_lease_time=longest,
        min_lease_time=shortest,
        t1=t1,
        t2=t2,
        options=MappingProxyType(parse_options(s.raw("options"), s.at("options"), codec)),
        reservations=reservations,
        interfaces=s.texts("interfaces"),
        relay_addresses=tuple(relays),
    )


def _check_reservations(
    reservations: Sequence[Reservation], pools: Sequence[Pool], path: str
) -> None:
    by_ip: dict[IPv4Address, int] = {}
    by_client: dict[tuple[str, bytes], int] = {}
    for i, r in enumerate(reservations):
        where = f"{path}[{i}]"
        if r.ip in by_ip:
            raise ConfigError(where, f"{r.ip} is already reserved by {path}[{by_ip[r.ip]}]")
        by_ip[r.ip] = i
        for pool in pools:
            if r.ip in pool:
                raise ConfigError(
                    where,
                    f"{r.ip} is inside pool {pool.first}-{pool.last}; reserve outside pools",
                )
        ident = (
            ("hw_address", r.hw_address)
            if r.hw_address is not None
            else ("client_id", r.client_id or b"")
        )
        if ident in by_client:
            raise ConfigError(
                where,
                f"{ident[0]} {ident[1].hex(':')} is already reserved by {path}[{by_client[ident]}]",
            )
        by_client[ident] = i


def parse_scopes(value: object, path: str, codec: OptionCodec) -> tuple[Scope, ...]:
    """A list of scopes, each valid on its own and none conflicting with another."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(path, f"expected a list, got {kind_of(value)}")
    scopes = tuple(parse_scope(v, f"{path}[{i}]", codec) for i, v in enumerate(value))
    check_scope_set(scopes, path)
    return scopes


def check_scope_set(scopes: Sequence[Scope], path: str = "scopes") -> None:
    """Rules across scopes: unique names, no shared pool address, subnet, relay or interface."""
    names: dict[str, int] = {}
    for i, sc in enumerate(scopes):
        if sc.name in names:
            raise ConfigError(
                f"{path}[{i}].name", f"{sc.name!r} is already used by {path}[{names[sc.name]}]"
            )
        names[sc.name] = i
    spans = sorted(
        (pool.first, pool.last, i, j)
        for i, sc in enumerate(scopes)
        for j, pool in enumerate(sc.pools)
    )
    for (_, a_last, ai, aj), (b_first, b_last, bi, bj) in itertools.pairwise(spans):
        if b_first <= a_last:
            raise ConfigError(
                f"{path}[{bi}].pools[{bj}]",
                f"{b_first}-{b_last} overlaps {path}[{ai}].pools[{aj}] "
                f"({scopes[ai].pools[aj].first}-{a_last})",
            )
    for i, sc in enumerate(scopes):
        for j in range(i):
            if sc.subnet.overlaps(scopes[j].subnet):
                raise ConfigError(
                    f"{path}[{i}].subnet",
                    f"{sc.subnet} overlaps {path}[{j}].subnet {scopes[j].subnet}",
                )
    relays: dict[IPv4Address, str] = {}
    for i, sc in enumerate(scopes):
        for k, ip in enumerate(sc.relay_addresses):
            where = f"{path}[{i}].relay_addresses[{k}]"
            owner = relays.get(ip) or next(
                (f"{path}[{j}].subnet" for j, o in enumerate(scopes) if j != i and ip in o.subnet),
                None,
            )
            if owner is not None:
                raise ConfigError(where, f"{ip} already selects {owner}")
            relays[ip] = where
    claimed: dict[str, str] = {}
    for i, sc in enumerate(scopes):
        for k, ifname in enumerate(sc.interfaces):
            where = f"{path}[{i}].interfaces[{k}]"
            if ifname in claimed:
                raise ConfigError(where, f"{ifname!r} is already claimed by {claimed[ifname]}")
            claimed[ifname] = where
