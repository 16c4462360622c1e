"""Hand-built DHCP packets for the codec tests, written with `struct` alone (not the codec)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

COOKIE = bytes((99, 130, 83, 99))
MAC = bytes.fromhex("02005e0000a1")


def opt(code: int, value: bytes) -> bytes:
    """One option instance (value at most 255 bytes)."""
    assert len(value) <= 255
    return bytes((code, len(value))) + value


def header(
    *,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    hops: int = 0,
    xid: int = 0x3903F326,
    secs: int = 0,
    flags: int = 0,
    ciaddr: str = "0.0.0.0",
    yiaddr: str = "0.0.0.0",
    siaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    chaddr: bytes = MAC,
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = COOKIE,
) -> bytes:
    """The 236-byte BOOTP header followed by the magic cookie."""
    return (
        struct.pack(
            "!BBBBIHH4s4s4s4s16s64s128s",
            op,
            htype,
            hlen,
            hops,
            xid,
            secs,
            flags,
            IPv4Address(ciaddr).packed,
            IPv4Address(yiaddr).packed,
            IPv4Address(siaddr).packed,
            IPv4Address(giaddr).packed,
            chaddr,
            sname,
            file,
        )
        + cookie
    )


def pad300(data: bytes) -> bytes:
    return data + bytes(max(0, 300 - len(data)))
