"""The DHCP message as data: pure; no I/O.

`Message` is what the codec decodes to and encodes from, and what the engine reads and builds.
Options are kept as raw bytes per code (already joined across split instances, RFC 3396, and
across the overloaded `file`/`sname` fields, RFC 2132 9.3); typed accessors live on the class.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hubspoke.values import sanitize_hostname

ZERO = IPv4Address(0)
BROADCAST = IPv4Address("255.255.255.255")
BROADCAST_FLAG = 0x8000
MIN_CLIENT_ID, MAX_CLIENT_ID = 2, 255  # RFC 2132 9.14: at least 2; one option's worth at most


class Op(enum.IntEnum):
    BOOTREQUEST = 1
    BOOTREPLY = 2


class MessageType(enum.IntEnum):
    """Option 53 values (RFC 2132 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(enum.IntEnum):
    """Option codes this project reads or writes by name (RFC 2132, 3046, 3396, 6842)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    BROADCAST_ADDRESS = 28
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS_ID = 60
    CLIENT_ID = 61
    RELAY_AGENT_INFO = 82
    END = 255


@dataclass(frozen=True, slots=True)
class Message:
    """One BOOTP/DHCP message (RFC 2131 section 2, figure 1).

    `chaddr` holds all 16 bytes of the field; `hardware_address` the first `hlen` of them.
    `options` maps a code to its joined value, in the order the codes first appeared.
    """

    op: Op
    xid: int
    chaddr: bytes
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    file: bytes = b""
    options: Mapping[int, bytes] = field(default_factory=dict)

    # -- typed accessors (None when absent or malformed) ---------------------------------
    @property
    def hardware_address(self) -> bytes:
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def message_type(self) -> MessageType | None:
        raw = self.options.get(Opt.MESSAGE_TYPE)
        if raw is None or len(raw) != 1:
            return None
        try:
            return MessageType(raw[0])
        except ValueError:
            return None

    def _ip_option(self, code: int) -> IPv4Address | None:
        raw = self.options.get(code)
        if raw is None or len(raw) != 4:
            return None
        return IPv4Address(raw)

    @property
    def requested_address(self) -> IPv4Address | None:
        return self._ip_option(Opt.REQUESTED_ADDRESS)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._ip_option(Opt.SERVER_ID)

    @property
    def client_id(self) -> bytes | None:
        raw = self.options.get(Opt.CLIENT_ID)
        return raw if raw else None

    @property
    def lease_time(self) -> int | None:
        raw = self.options.get(Opt.LEASE_TIME)
        if raw is None or len(raw) != 4:
            return None
        return int.from_bytes(raw, "big")

    @property
    def parameter_request_list(self) -> tuple[int, ...]:
        return tuple(self.options.get(Opt.PARAMETER_REQUEST_LIST, b""))

    @property
    def hostname(self) -> str | None:
        """Option 12 sanitized (`hubspoke.values.sanitize_hostname`): RFC 1035 characters only,
        at most 253; None when absent or nothing printable is left."""
        raw = self.options.get(Opt.HOSTNAME)
        if not raw:
            return None
        return sanitize_hostname(raw)

    @property
    def relay_agent_info(self) -> bytes | None:
        return self.options.get(Opt.RELAY_AGENT_INFO)

    @property
    def is_broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    @property
    def client_key(self) -> bytes:
        """Client identity (RFC 2131 4.2): option 61 when present, else htype + chaddr."""
        cid = self.client_id
        if cid is not None:
            return b"\x00" + cid
        return b"\x01" + bytes([self.htype & 0xFF]) + self.hardware_address
