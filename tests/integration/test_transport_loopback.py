"""Transport on real loopback sockets: IP_PKTINFO tells a datagram sent to our address from one
that was not; stale and truncated datagrams are dropped unread; the interface's address and
subnet."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from spoke.transport import RECV_SIZE, InterfaceInfo, Transport, interface_info
from tests.lab.etcd import free_udp_port


def test_interface_info_reads_the_subnet() -> None:
    lo = interface_info("lo")
    assert lo.ip == IPv4Address("127.0.0.1") and lo.network == IPv4Network("127.0.0.0/8")


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


def hold_the_loop(seconds: float) -> None:
    """Keep the event loop from running (as a loop busy with other work does)."""
    time.sleep(seconds)


async def collect(
    port: int, lo: InterfaceInfo, **options: Any
) -> tuple[Transport, list[bytes], asyncio.Event]:
    """A started transport on loopback; datagrams go to the list; the event is set on 'fresh'."""
    got: list[bytes] = []
    fresh = asyncio.Event()

    def on_datagram(data: bytes, src: tuple[str, int], info: InterfaceInfo, bcast: bool) -> None:
        got.append(data)
        if data == b"fresh":
            fresh.set()

    transport = Transport((lo,), port, on_datagram, raw_frames=False, **options)
    transport.start()
    return transport, got, fresh


async def test_requests_that_waited_too_long_in_the_socket_are_dropped_unread() -> None:
    """Overload: datagrams that sat in the socket past `max_queue_delay` (the kernel's receive
    stamp says how long) are dropped before they are read as DHCP; fresh ones go through."""
    port = free_udp_port()
    stale: list[float] = []
    transport, got, fresh = await collect(
        port, interface_info("lo"), max_queue_delay=0.2, on_stale=stale.append
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for n in range(5):
                s.sendto(b"old %d" % n, ("127.0.0.1", port))
            hold_the_loop(0.5)  # they wait in the socket's queue
            s.sendto(b"fresh", ("127.0.0.1", port))
        await asyncio.wait_for(fresh.wait(), 5)
    finally:
        transport.close()
    assert got == [b"fresh"]
    assert transport.stale == 5 and len(stale) == 5
    assert all(0.45 < waited < 5 for waited in stale), stale


async def test_no_limit_delivers_everything() -> None:
    port = free_udp_port()
    transport, got, fresh = await collect(port, interface_info("lo"))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"old", ("127.0.0.1", port))
            hold_the_loop(0.3)
            s.sendto(b"fresh", ("127.0.0.1", port))
        await asyncio.wait_for(fresh.wait(), 5)
    finally:
        transport.close()
    assert got == [b"old", b"fresh"] and transport.stale == 0


async def test_a_datagram_larger_than_the_receive_buffer_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MSG_TRUNC: a datagram past RECV_SIZE arrives cut; it is counted and dropped, never
    passed on as a (shorter, different) message. One exactly RECV_SIZE long goes through."""
    port = free_udp_port()
    transport, got, fresh = await collect(port, interface_info("lo"))
    dropped: list[str] = []
    transport.on_drop = dropped.append
    try:
        with (
            caplog.at_level(logging.WARNING, logger="hubspoke.transport"),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
        ):
            for _ in range(3):
                s.sendto(b"x" * (RECV_SIZE + 1), ("127.0.0.1", port))
            s.sendto(b"y" * RECV_SIZE, ("127.0.0.1", port))
            s.sendto(b"fresh", ("127.0.0.1", port))
            await asyncio.wait_for(fresh.wait(), 5)
    finally:
        transport.close()
    assert got == [b"y" * RECV_SIZE, b"fresh"]
    assert transport.truncated == 3 and dropped == ["truncated"] * 3
    warnings = [r for r in caplog.records if r.getMessage() == "transport.truncated"]
    assert len(warnings) == 1  # at most one line per interval and interface
