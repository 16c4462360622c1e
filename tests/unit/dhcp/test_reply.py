"""Reply addressing (RFC 2131 4.1): every branch of `destination`."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from spoke.dhcp.message import BROADCAST, BROADCAST_FLAG, ZERO, Message, MessageType, Op, Opt
from spoke.dhcp.reply import CLIENT_PORT, SERVER_PORT, Destination, DestKind, destination

MAC = bytes.fromhex("02aabbccdd01")
CIADDR = IPv4Address("10.0.0.57")
YIADDR = IPv4Address("10.0.0.58")
GIADDR = IPv4Address("10.9.0.1")


def request(
    *,
    ciaddr: IPv4Address = ZERO,
    giaddr: IPv4Address = ZERO,
    broadcast: bool = False,
    htype: int = 1,
    hlen: int = 6,
) -> Message:
    return Message(
        op=Op.BOOTREQUEST,
        xid=7,
        chaddr=MAC.ljust(16, b"\0"),
        htype=htype,
        hlen=hlen,
        flags=BROADCAST_FLAG if broadcast else 0,
        ciaddr=ciaddr,
        giaddr=giaddr,
        options={Opt.MESSAGE_TYPE: bytes([MessageType.REQUEST])},
    )


def reply(mtype: MessageType = MessageType.ACK, yiaddr: IPv4Address = YIADDR) -> Message:
    return Message(
        op=Op.BOOTREPLY,
        xid=7,
        chaddr=MAC.ljust(16, b"\0"),
        yiaddr=yiaddr,
        options={Opt.MESSAGE_TYPE: bytes([mtype])},
    )


def test_relayed_goes_to_giaddr_at_the_server_port_naks_too() -> None:
    want = Destination(DestKind.RELAY, GIADDR, SERVER_PORT)
    assert destination(request(giaddr=GIADDR, ciaddr=CIADDR), reply()) == want
    assert destination(request(giaddr=GIADDR), reply(MessageType.NAK, ZERO)) == want


def test_a_nak_not_relayed_is_broadcast_even_to_a_client_with_an_address() -> None:
    got = destination(request(ciaddr=CIADDR), reply(MessageType.NAK, ZERO))
    assert got == Destination(DestKind.BROADCAST, BROADCAST, CLIENT_PORT)


def test_ciaddr_is_unicast_to_the_client_address_carrying_chaddr() -> None:
    """RENEWING, INFORM: to ciaddr; chaddr comes along so the transport can reach an on-link
    client without ARP. The broadcast flag does not change it (RFC 2131 4.1)."""
    want = Destination(DestKind.CLIENT_IP, CIADDR, CLIENT_PORT, MAC)
    assert destination(request(ciaddr=CIADDR), reply(yiaddr=CIADDR)) == want
    assert destination(request(ciaddr=CIADDR, broadcast=True), reply(yiaddr=CIADDR)) == want
    assert destination(request(ciaddr=CIADDR), reply(MessageType.ACK, ZERO)) == want  # INFORM


@pytest.mark.parametrize(("htype", "hlen"), [(6, 6), (1, 8), (32, 20)])
def test_ciaddr_of_a_client_that_is_not_ethernet_carries_no_hardware_address(
    htype: int, hlen: int
) -> None:
    got = destination(request(ciaddr=CIADDR, htype=htype, hlen=hlen), reply(yiaddr=CIADDR))
    assert got == Destination(DestKind.CLIENT_IP, CIADDR, CLIENT_PORT)


def test_broadcast_flag_or_no_usable_hardware_address_is_broadcast() -> None:
    bcast = Destination(DestKind.BROADCAST, BROADCAST, CLIENT_PORT)
    assert destination(request(broadcast=True), reply()) == bcast
    assert destination(request(), reply(yiaddr=ZERO)) == bcast
    assert destination(request(htype=6), reply()) == bcast
    assert destination(request(hlen=16), reply()) == bcast


def test_otherwise_unicast_to_yiaddr_at_chaddr() -> None:
    got = destination(request(), reply(MessageType.OFFER))
    assert got == Destination(DestKind.HARDWARE, YIADDR, CLIENT_PORT, MAC)


def test_ports_are_the_configured_ones() -> None:
    assert destination(request(giaddr=GIADDR), reply(), server_port=1067).port == 1067
    assert destination(request(ciaddr=CIADDR), reply(), client_port=1068).port == 1068
