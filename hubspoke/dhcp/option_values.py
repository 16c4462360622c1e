"""Typed DHCP option values: one encoder and one decoder per value kind. Pure; no I/O.

Encoders take what a configuration file holds (strings, ints, lists, mappings) and return the
option's bytes, raising `OptionValueError` that names the problem. Decoders take bytes from the
wire and raise `DecodeError` (reason `bad-option-value`): malformed input is the peer's fault.
Kinds cover RFC 2132 values plus the domain search list (RFC 3397, written uncompressed; read
with compression pointers) and classless static routes (RFC 3442).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from types import MappingProxyType

from hubspoke.dhcp.errors import DecodeError, Reason


class Kind(enum.Enum):
    IP = "ip"
    IP_LIST = "ip-list"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    I32 = "i32"
    STR = "str"
    BOOL = "bool"
    BYTES = "bytes"
    DOMAIN_LIST = "domain-list"  # RFC 3397
    ROUTES = "classless-routes"  # RFC 3442


class OptionValueError(ValueError):
    """A configured option value that cannot be encoded; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Route:
    """One classless static route (RFC 3442)."""

    destination: IPv4Network
    router: IPv4Address


def _bad(raw: bytes, what: str) -> DecodeError:
    return DecodeError(Reason.BAD_OPTION_VALUE, f"{raw.hex()}: {what}")


# -- encoders (config -> bytes) ------------------------------------------------------------


def encode_ip(value: object) -> bytes:
    if isinstance(value, IPv4Address):
        return value.packed
    if isinstance(value, str):
        try:
            return IPv4Address(value).packed
        except AddressValueError:
            pass
    raise OptionValueError(f"{value!r} is not an IPv4 address")


def _as_list(value: object) -> list[object]:
    """A list or tuple as given; a single string stands for a one-element list."""
    if isinstance(value, str | IPv4Address):
        return [value]
    if isinstance(value, list | tuple):
        if not value:
            raise OptionValueError("empty list")
        return list(value)
    raise OptionValueError(f"{value!r} is not a list")


def encode_ip_list(value: object) -> bytes:
    return b"".join(encode_ip(item) for item in _as_list(value))


def _int(value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionValueError(f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise OptionValueError(f"{value} is outside {lo}..{hi}")
    return value


def encode_u8(value: object) -> bytes:
    return _int(value, 0, 0xFF).to_bytes(1, "big")


def encode_u16(value: object) -> bytes:
    return _int(value, 0, 0xFFFF).to_bytes(2, "big")


def encode_u32(value: object) -> bytes:
    return _int(value, 0, 0xFFFFFFFF).to_bytes(4, "big")


def encode_i32(value: object) -> bytes:
    return _int(value, -(2**31), 2**31 - 1).to_bytes(4, "big", signed=True)


def encode_str(value: object) -> bytes:
    if not isinstance(value, str):
        raise OptionValueError(f"{value!r} is not a string")
    if not value:
        raise OptionValueError("empty string")
    if not value.isascii():
        raise OptionValueError(f"{value!r} is not ASCII")
    return value.encode("ascii")


def encode_bool(value: object) -> bytes:
    if not isinstance(value, bool):
        raise OptionValueError(f"{value!r} is not true or false")
    return b"\x01" if value else b"\x00"


def encode_bytes(value: object) -> bytes:
    """Raw bytes, or `{"hex": "0a0b"}` (separators ' ' and ':' allowed)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, Mapping) and set(value) == {"hex"} and isinstance(value["hex"], str):
        text = value["hex"].replace(":", "").replace(" ", "")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise OptionValueError(f"{value['hex']!r} is not hexadecimal") from None
    raise OptionValueError(f'{value!r} is neither bytes nor {{"hex": "..."}}')


def _domain(name: object) -> bytes:
    if not isinstance(name, str) or not name.isascii():
        raise OptionValueError(f"{name!r} is not an ASCII domain name")
    labels = name.removesuffix(".").split(".")
    out = bytearray()
    for label in labels:
        if not 1 <= len(label) <= 63:
            raise OptionValueError(f"{name!r} has a label that is empty or longer than 63")
        out += bytes((len(label),)) + label.encode("ascii")
    out += b"\x00"
    if len(out) > 255:
        raise OptionValueError(f"{name!r} is longer than 255 bytes")
    return bytes(out)


def encode_domain_list(value: object) -> bytes:
    """RFC 3397 search list, uncompressed (RFC 1035 labels, one name after another)."""
    return b"".join(_domain(name) for name in _as_list(value))


def _route(item: object) -> bytes:
    if not isinstance(item, Mapping) or set(item) != {"destination", "router"}:
        raise OptionValueError(f"{item!r} is not {{destination: a.b.c.d/n, router: ip}}")
    dest = item["destination"]
    if isinstance(dest, IPv4Network):
        net = dest
    else:
        try:
            if not isinstance(dest, str) or "/" not in dest:
                raise ValueError(dest)
            net = IPv4Network(dest, strict=True)
        except ValueError:
            raise OptionValueError(f"{dest!r} is not a.b.c.d/n without host bits") from None
    width = net.prefixlen
    return (
        bytes((width,)) + net.network_address.packed[: (width + 7) // 8] + encode_ip(item["router"])
    )


def encode_routes(value: object) -> bytes:
    """RFC 3442: per route, prefix width, significant octets of the destination, router."""
    if not isinstance(value, list | tuple) or not value:
        raise OptionValueError(f"{value!r} is not a non-empty list of routes")
    return b"".join(_route(item) for item in value)


# -- decoders (wire -> typed) --------------------------------------------------------------


def decode_ip(raw: bytes) -> IPv4Address:
    if len(raw) != 4:
        raise _bad(raw, "not 4 bytes")
    return IPv4Address(raw)


def decode_ip_list(raw: bytes) -> tuple[IPv4Address, ...]:
    if not raw or len(raw) % 4:
        raise _bad(raw, "not a non-empty multiple of 4 bytes")
    return tuple(IPv4Address(raw[i : i + 4]) for i in range(0, len(raw), 4))


def _decode_uint(raw: bytes, size: int) -> int:
    if len(raw) != size:
        raise _bad(raw, f"not {size} bytes")
    return int.from_bytes(raw, "big")


def decode_u8(raw: bytes) -> int:
    return _decode_uint(raw, 1)


def decode_u16(raw: bytes) -> int:
    return _decode_uint(raw, 2)


def decode_u32(raw: bytes) -> int:
    return _decode_uint(raw, 4)


def decode_i32(raw: bytes) -> int:
    if len(raw) != 4:
        raise _bad(raw, "not 4 bytes")
    return int.from_bytes(raw, "big", signed=True)


def decode_str(raw: bytes) -> str:
    """ASCII text; a trailing NUL, which some clients send, is dropped."""
    text = raw.removesuffix(b"\x00")
    if not text.isascii():
        raise _bad(raw, "not ASCII")
    return text.decode("ascii")


def decode_bool(raw: bytes) -> bool:
    if raw not in (b"\x00", b"\x01"):
        raise _bad(raw, "not a 0/1 byte")
    return raw == b"\x01"


def decode_bytes(raw: bytes) -> bytes:
    return raw


def _read_name(raw: bytes, i: int) -> tuple[str, int]:
    """One RFC 1035 name at `i` (pointers allowed, RFC 3397 4); returns (name, next index)."""
    labels: list[str] = []
    end = -1
    hops = 0
    while True:
        if i >= len(raw):
            raise _bad(raw, "name runs past the end")
        n = raw[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 == 0xC0:
            if i + 1 >= len(raw):
                raise _bad(raw, "truncated pointer")
            hops += 1
            if hops > 127:
                raise _bad(raw, "pointer loop")
            if end < 0:
                end = i + 2
            i = ((n & 0x3F) << 8) | raw[i + 1]
            continue
        if n > 63 or i + 1 + n > len(raw):
            raise _bad(raw, "bad label")
        label = raw[i + 1 : i + 1 + n]
        if not label.isascii():
            raise _bad(raw, "label not ASCII")
        labels.append(label.decode("ascii"))
        i += 1 + n
    return ".".join(labels), (end if end >= 0 else i)


def decode_domain_list(raw: bytes) -> tuple[str, ...]:
    names: list[str] = []
    i = 0
    while i < len(raw):
        name, i = _read_name(raw, i)
        names.append(name)
    if not names:
        raise _bad(raw, "empty search list")
    return tuple(names)


def decode_routes(raw: bytes) -> tuple[Route, ...]:
    routes: list[Route] = []
    i = 0
    while i < len(raw):
        width = raw[i]
        size = (width + 7) // 8
        if width > 32 or i + 1 + size + 4 > len(raw):
            raise _bad(raw, f"bad route at {i}")
        dest = raw[i + 1 : i + 1 + size] + bytes(4 - size)
        try:
            net = IPv4Network((dest, width), strict=True)
        except ValueError:
            raise _bad(raw, f"route at {i} has host bits set") from None
        routes.append(Route(net, IPv4Address(raw[i + 1 + size : i + 5 + size])))
        i += 5 + size
    if not routes:
        raise _bad(raw, "no routes")
    return tuple(routes)


ENCODERS: Mapping[Kind, Callable[[object], bytes]] = MappingProxyType(
    {
        Kind.IP: encode_ip,
        Kind.IP_LIST: encode_ip_list,
        Kind.U8: encode_u8,
        Kind.U16: encode_u16,
        Kind.U32: encode_u32,
        Kind.I32: encode_i32,
        Kind.STR: encode_str,
        Kind.BOOL: encode_bool,
        Kind.BYTES: encode_bytes,
        Kind.DOMAIN_LIST: encode_domain_list,
        Kind.ROUTES: encode_routes,
    }
)

DECODERS: Mapping[Kind, Callable[[bytes], object]] = MappingProxyType(
    {
        Kind.IP: decode_ip,
        Kind.IP_LIST: decode_ip_list,
        Kind.U8: decode_u8,
        Kind.U16: decode_u16,
        Kind.U32: decode_u32,
        Kind.I32: decode_i32,
        Kind.STR: decode_str,
        Kind.BOOL: decode_bool,
        Kind.BYTES: decode_bytes,
        Kind.DOMAIN_LIST: decode_domain_list,
        Kind.ROUTES: decode_routes,
    }
)
