"""Where a reply goes (RFC 2131 section 4.1). Pure; no I/O.

The transport turns a `Destination` into a send: a UDP datagram for RELAY and BROADCAST, a raw
Ethernet frame for HARDWARE (unicast to an address the client does not have configured yet,
done without touching the kernel's neighbour table), and for CLIENT_IP a raw frame to the
client's hardware address (`mac`) when ciaddr is on the receiving interface's link, else a UDP
datagram. A client renewing by unicast is thus answered without ARP: one that has left the
network since costs one frame, not a reply queued in the kernel behind an ARP that never
resolves, holding the UDP socket's send buffer that every other reply needs (ISC dhcpd's
packet-filter path sends these to chaddr too).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from spoke.dhcp.message import BROADCAST, ZERO, Message, MessageType

SERVER_PORT = 67
CLIENT_PORT = 68


class DestKind(enum.Enum):
    RELAY = "relay"  # to giaddr, server port
    CLIENT_IP = "client-ip"  # to ciaddr, client port
    BROADCAST = "broadcast"  # 255.255.255.255, client port, on the ingress interface
    HARDWARE = "hardware"  # to yiaddr at chaddr (raw frame), client port


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestKind
    ip: IPv4Address
    port: int
    mac: bytes = b""  # HARDWARE: chaddr; CLIENT_IP: chaddr of an Ethernet client, else b""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A reply ready to encode, and where it goes."""

    message: Message
    dest: Destination
    interface: str


def destination(
    request: Message,
    reply: Message,
    *,
    server_port: int = SERVER_PORT,
    client_port: int = CLIENT_PORT,
) -> Destination:
    """RFC 2131 4.1 reply addressing for `reply` answering `request`.

    - giaddr set: to the relay agent at the server port (NAKs too; the relay sets the flag).
    - else a NAK: broadcast.
    - else ciaddr set: unicast to ciaddr (with chaddr as `mac` for an Ethernet client, so an
      on-link client is reached without ARP).
    - else broadcast flag set: broadcast.
    - else: unicast to yiaddr at chaddr.
    """
    if request.giaddr != ZERO:
        return Destination(DestKind.RELAY, request.giaddr, server_port)
    if reply.message_type is MessageType.NAK:
        return Destination(DestKind.BROADCAST, BROADCAST, client_port)
    ethernet = request.htype == 1 and request.hlen == 6
    if request.ciaddr != ZERO:
        mac = request.hardware_address if ethernet else b""
        return Destination(DestKind.CLIENT_IP, request.ciaddr, client_port, mac)
    if request.is_broadcast or reply.yiaddr == ZERO or not ethernet:
        return Destination(DestKind.BROADCAST, BROADCAST, client_port)
    return Destination(DestKind.HARDWARE, reply.yiaddr, client_port, request.hardware_address)
