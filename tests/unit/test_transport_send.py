"""Transport.send: which replies leave as raw frames, and how a failing send is counted and
logged (hand-written fake sockets stand in for the kernel's); reading IP_PKTINFO. Real sockets:
tests/integration/test_transport_loopback.py."""

from __future__ import annotations

import errno
import logging
import socket
from ipaddress import IPv4Address, IPv4Network

import dpkt
import pytest

from spoke.dhcp.message import BROADCAST
from spoke.dhcp.reply import Destination, DestKind
from spoke.transport import IP_PKTINFO, InterfaceInfo, Transport, destination_of, unicast_mac

MAC = bytes.fromhex("02aabbccdd01")
OURS = InterfaceInfo(
    "eth0", 2, IPv4Address("10.0.0.2"), bytes.fromhex("02000000aa02"), IPv4Network("10.0.0.0/24")
)


class FakeSocket:
    """Records what is sent; raises `error` instead while it is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int] | None]] = []
        self.error: OSError | None = None

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, None))
        return len(data)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, address))
        return len(data)


def transport(raw: bool = True) -> tuple[Transport, FakeSocket, FakeSocket]:
    t = Transport((OURS,), 67, lambda *_: None)
    udp, frames = FakeSocket(), FakeSocket()
    t._udp["eth0"] = udp  # type: ignore[assignment]
    if raw:
        t._raw["eth0"] = frames  # type: ignore[assignment]
    return t, udp, frames


def test_unicast_mac() -> None:
    assert unicast_mac(MAC)
    assert not unicast_mac(bytes(6))
    assert not unicast_mac(bytes.fromhex("ffffffffffff"))
    assert not unicast_mac(bytes.fromhex("01005e000001"))  # group address
    assert not unicast_mac(b"")
    assert not unicast_mac(MAC + b"\0")


def test_on_link_is_the_interface_subnet_without_network_and_broadcast() -> None:
    assert OURS.on_link(IPv4Address("10.0.0.57"))
    assert not OURS.on_link(IPv4Address("10.0.1.57"))
    assert not OURS.on_link(IPv4Address("10.0.0.0"))
    assert not OURS.on_link(IPv4Address("10.0.0.255"))
    p2p = InterfaceInfo("p", 3, IPv4Address("10.1.0.0"), MAC, IPv4Network("10.1.0.0/31"))
    assert p2p.on_link(IPv4Address("10.1.0.1"))
    assert not InterfaceInfo("x", 4, IPv4Address("10.0.0.2"), MAC).on_link(OURS.ip)


def test_destination_of_reads_ipi_addr() -> None:
    data = (3).to_bytes(4, "little") + bytes([10, 0, 0, 2]) + bytes([255, 255, 255, 255])
    assert destination_of([(socket.IPPROTO_IP, IP_PKTINFO, data)]) == IPv4Address("255.255.255.255")
    assert destination_of([(socket.SOL_SOCKET, 1, data)]) is None
    assert destination_of([]) is None


@pytest.mark.parametrize(
    ("dest", "raw"),
    [
        (Destination(DestKind.HARDWARE, IPv4Address("10.0.0.58"), 68, MAC), True),
        (Destination(DestKind.CLIENT_IP, IPv4Address("10.0.0.57"), 68, MAC), True),  # renewal
        (Destination(DestKind.CLIENT_IP, IPv4Address("10.5.0.57"), 68, MAC), False),  # routed
        (Destination(DestKind.CLIENT_IP, IPv4Address("10.0.0.57"), 68), False),  # no chaddr
        (Destination(DestKind.CLIENT_IP, IPv4Address("10.0.0.57"), 68, bytes(6)), False),
        (Destination(DestKind.RELAY, IPv4Address("10.0.0.1"), 67), False),
        (Destination(DestKind.BROADCAST, BROADCAST, 68), False),
    ],
)
def test_which_replies_leave_as_raw_frames(dest: Destination, raw: bool) -> None:
    t, udp, frames = transport()
    assert t.raw_frame(dest, "eth0") is raw
    t.send(b"reply", dest, "eth0")
    if raw:
        assert udp.sent == [] and len(frames.sent) == 1
        eth = dpkt.ethernet.Ethernet(frames.sent[0][0])
        assert (eth.dst, eth.src) == (dest.mac, OURS.mac)
        assert (eth.data.src, eth.data.dst) == (OURS.ip.packed, dest.ip.packed)
        assert (eth.data.data.sport, eth.data.data.dport) == (67, dest.port)
        assert eth.data.data.data == b"reply"
    else:
        assert frames.sent == [] and udp.sent == [(b"reply", (str(dest.ip), dest.port))]


def test_without_raw_sockets_everything_is_udp() -> None:
    t, udp, _ = transport(raw=False)
    dest = Destination(DestKind.CLIENT_IP, IPv4Address("10.0.0.57"), 68, MAC)
    assert not t.raw_frame(dest, "eth0")
    t.send(b"reply", dest, "eth0")
    assert udp.sent == [(b"reply", ("10.0.0.57", 68))]


def test_a_full_send_queue_drops_and_logs_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t, udp, _ = transport()
    dest = Destination(DestKind.BROADCAST, BROADCAST, 68)
    caplog.set_level(logging.WARNING, logger="hubspoke.transport")
    udp.error = BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    for _ in range(1000):
        t.send(b"reply", dest, "eth0")
    udp.error = OSError(errno.ENOBUFS, "No buffer space available")
    t.send(b"reply", dest, "eth0")
    udp.error = OSError(errno.ENETUNREACH, "Network is unreachable")
    t.send(b"reply", dest, "eth0")
    assert t.send_errors == 1002
    assert t.send_errors_by == {("eth0", "queue-full"): 1001, ("eth0", "error"): 1}
    lines = [r for r in caplog.records if r.getMessage() == "transport.send_error"]
    assert [(r.__dict__["reason"], r.__dict__["suppressed"]) for r in lines] == [
        ("queue-full", 0),
        ("error", 0),
    ]
    udp.error = None
    t.send(b"reply", dest, "eth0")  # the socket has room again: the reply goes
    assert udp.sent == [(b"reply", ("255.255.255.255", 68))]


def test_the_next_line_after_the_interval_says_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t, udp, _ = transport()
    dest = Destination(DestKind.BROADCAST, BROADCAST, 68)
    caplog.set_level(logging.WARNING, logger="hubspoke.transport")
    udp.error = BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    for _ in range(5):
        t.send(b"reply", dest, "eth0")
    t._send_log.interval = 0.0  # as if the interval had passed
    t.send(b"reply", dest, "eth0")
    lines = [r for r in caplog.records if r.getMessage() == "transport.send_error"]
    assert [r.__dict__["suppressed"] for r in lines] == [0, 4]
