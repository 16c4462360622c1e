"""Transport: IP_PKTINFO tells a datagram sent to our address from one that was not (loopback)."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address

import pytest

from spoke.transport import IP_PKTINFO, InterfaceInfo, Transport, destination_of, interface_info
from tests.support.etcd import free_udp_port


def test_destination_of_reads_ipi_addr() -> None:
    data = (3).to_bytes(4, "little") + bytes([10, 0, 0, 2]) + bytes([255, 255, 255, 255])
    assert destination_of([(socket.IPPROTO_IP, IP_PKTINFO, data)]) == IPv4Address("255.255.255.255")
    assert destination_of([(socket.SOL_SOCKET, 1, data)]) is None
    assert destination_of([]) is None


@pytest.mark.parametrize(
    ("dest", "server_ids", "broadcast"),
    [
        ("127.0.0.1", frozenset(), False),  # the interface's own address
        ("127.0.0.9", frozenset(), True),  # not ours: seen like a broadcast
        ("127.0.0.9", frozenset({IPv4Address("127.0.0.9")}), False),  # a configured server id
    ],
)
async def test_broadcast_flag_from_destination(
    dest: str, server_ids: frozenset[IPv4Address], broadcast: bool
) -> None:
    port = free_udp_port()
    got: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()

    def on_datagram(data: bytes, src: tuple[str, int], info: InterfaceInfo, bcast: bool) -> None:
        got.put_nowait((data, bcast))

    lo = interface_info("lo")
    transport = Transport((lo,), port, on_datagram, raw_frames=False, server_ids=server_ids)
    transport.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"hello", (dest, port))
        data, bcast = await asyncio.wait_for(got.get(), 5.0)
    finally:
        transport.close()
    assert data == b"hello" and bcast is broadcast
