"""The only module with DHCP sockets: UDP port 67 per interface, and raw frames for replies.

One UDP socket per configured interface, bound to the server port with SO_BINDTODEVICE, so the
ingress interface of every datagram is known. IP_PKTINFO gives each datagram's destination
address: a datagram not sent to one of our own addresses (limited or directed broadcast) is
passed on as `broadcast=True`, which decides who answers it in a cluster. Readers drain the
socket (up to `DRAIN_BATCH` datagrams per wake-up) instead of reading one per loop turn.

Overload: the kernel stamps every datagram as it arrives (SO_TIMESTAMPNS). A datagram that
waited in the socket's queue longer than `max_queue_delay` is dropped unread (`on_stale`), so a
backlog cannot make every answer late: past its capacity the spoke goes on answering fresh
requests at its capacity instead of answering all of them too late (as a bounded packet queue
does in other DHCP servers).

A reply to a client that has no address yet (RFC 2131 4.1, `DestKind.HARDWARE`) goes out as a raw
Ethernet frame through an AF_PACKET socket: no ARP entry is injected, so a burst of thousands of
new clients does not fill the kernel neighbour table. dpkt builds the Ethernet/IPv4/UDP framing.

A unicast reply to a client's own address (`DestKind.CLIENT_IP`: RENEWING, INFORM) goes out the
same way, to the request's chaddr, when that address is on the receiving interface's link: a
UDP datagram would wait in the kernel for ARP, and for a client that has left the network since
it waits until ARP gives up (about 3 s), holding the UDP socket's send buffer meanwhile; enough of
them fill it, and then every reply on the interface fails with EAGAIN, broadcasts included. A raw
frame needs no ARP: a vanished client costs one frame on the wire. Replies to a relay (giaddr,
a router that answers ARP), to a client address off the link (reached through a router) and
broadcasts stay on UDP.

A datagram larger than `RECV_SIZE` arrives cut short (the kernel sets MSG_TRUNC): it is dropped
unread, counted (`truncated`, and `on_drop("truncated")`, which the spoke's `Wire` counts with
the other drops) and logged at most once per `SEND_ERROR_LOG_INTERVAL` per interface. No DHCP
message needs 4 KB; a cut one could still decode, as a different message.

A send that fails is counted and dropped, never retried or queued: a full send queue (EAGAIN,
ENOBUFS) is `queue-full`, anything else `error` (`send_errors`, by interface and reason). The log
says so at most once per `SEND_ERROR_LOG_INTERVAL` per interface and reason, with the number of
failures it held back (`suppressed`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import dpkt

from spoke.dhcp.reply import Destination, DestKind
from spoke.ratelimit import RateLimit

log = logging.getLogger("hubspoke.transport")

DRAIN_BATCH = 64
RECV_SIZE = 4096
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO_SIZE = 12  # struct in_pktinfo: ifindex, spec_dst, addr
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: seconds, nanoseconds
CMSG_SPACE = socket.CMSG_SPACE(PKTINFO_SIZE) + socket.CMSG_SPACE(TIMESPEC.size)
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
SIOCGIFHWADDR = 0x8927
ETH_P_IP = 0x0800
SEND_ERROR_LOG_INTERVAL = 10.0
QUEUE_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


class TransportError(RuntimeError):
    """A socket could not be set up (our configuration's fault, refused at start)."""


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    name: str
    index: int
    ip: IPv4Address
    mac: bytes
    network: IPv4Network | None = None  # the link's subnet (address and netmask); None: unknown

    def on_link(self, ip: IPv4Address) -> bool:
        """Whether `ip` is a host of this interface's subnet (reached without a router)."""
        net = self.network
        return (
            net is not None
            and ip in net
            and (net.prefixlen >= 31 or ip not in (net.network_address, net.broadcast_address))
        )


def interface_info(name: str) -> InterfaceInfo:
    """Index, IPv4 address and subnet, and hardware address of interface `name`."""
    try:
        index = socket.if_nametoindex(name)
    except OSError as e:
        raise TransportError(f"interface {name!r}: {e.strerror or e}") from e
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            addr = fcntl.ioctl(s.fileno(), SIOCGIFADDR, packed)
        except OSError as e:
            raise TransportError(f"interface {name!r} has no IPv4 address") from e
        mask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, packed)
        hw = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, packed)
    ip = IPv4Address(addr[20:24])
    network = IPv4Network(f"{ip}/{IPv4Address(mask[20:24])}", strict=False)
    return InterfaceInfo(name, index, ip, bytes(hw[18:24]), network)


def unicast_mac(mac: bytes) -> bool:
    """An Ethernet address a frame can be sent to: six octets, not zero, not group."""
    return len(mac) == 6 and mac != bytes(6) and not mac[0] & 1


DatagramHandler = Callable[[bytes, tuple[str, int], InterfaceInfo, bool], None]
"""(payload, source, ingress interface, broadcast: not addressed to one of our addresses)."""


def destination_of(ancdata: list[tuple[int, int, bytes]]) -> IPv4Address | None:
    """The destination address from an IP_PKTINFO control message (`ipi_addr`), if present."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= PKTINFO_SIZE:
            return IPv4Address(data[8:12])
    return None


def received_at(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel received the datagram (SO_TIMESTAMPNS, wall clock), if stamped."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            at: float = seconds + nanoseconds / 1e9
            return at
    return None


class Transport:
    """UDP listeners on the configured interfaces and the reply sender."""

    def __init__(
        self,
        interfaces: tuple[InterfaceInfo, ...],
        port: int,
        on_datagram: DatagramHandler,
        *,
        bind_address: str = "0.0.0.0",
        raw_frames: bool = True,
        server_ids: frozenset[IPv4Address] = frozenset(),
        max_queue_delay: float = 0.0,
        on_stale: Callable[[float], None] | None = None,
    ) -> None:
        """`server_ids`: our addresses besides the interfaces' own (unicast to them is ours).
        `max_queue_delay`: seconds a datagram may wait in the socket before it is dropped
        unread, `on_stale(seconds waited)` told of each (0: no limit)."""
        self._interfaces = {i.name: i for i in interfaces}
        self._unicast = frozenset({i.ip for i in interfaces}) | server_ids
        self._port = port
        self._on_datagram = on_datagram
        self._bind_address = bind_address
        self._raw_frames = raw_frames
        self._udp: dict[str, socket.socket] = {}
        self._raw: dict[str, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_queue_delay = max_queue_delay
        self._on_stale = on_stale
        self.send_errors = 0
        self.send_errors_by: dict[tuple[str, str], int] = {}  # (interface, reason) -> count
        self._send_log = RateLimit(SEND_ERROR_LOG_INTERVAL)
        self.stale = 0
        self.truncated = 0
        self.on_drop: Callable[[str], None] | None = None
        """Told the reason of each datagram dropped before `on_datagram` (`truncated`)."""

    @property
    def interfaces(self) -> dict[str, InterfaceInfo]:
        return self._interfaces

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for info in self._interfaces.values():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, info.name.encode())
                s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                s.setblocking(False)
                s.bind((self._bind_address, self._port))
            except OSError as e:
                s.close()
                self.close()
                raise TransportError(
                    f"dhcp.interfaces: cannot listen on {info.name} port {self._port}: {e}"
                ) from e
            self._udp[info.name] = s
            self._loop.add_reader(s.fileno(), self._drain, s, info)
            if self._raw_frames:
                try:
                    r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
                    r.bind((info.name, 0))
                    r.setblocking(False)
                except OSError as e:
                    self.close()
                    raise TransportError(f"dhcp.interfaces: raw socket on {info.name}: {e}") from e
                self._raw[info.name] = r
            log.info(
                "transport.listening",
                extra={"interface": info.name, "ip": str(info.ip), "port": self._port},
            )

    def _drain(self, s: socket.socket, info: InterfaceInfo) -> None:
        limit = self._max_queue_delay
        now = time.time() if limit > 0 else 0.0
        for _ in range(DRAIN_BATCH):
            try:
                data, ancdata, flags, src = s.recvmsg(RECV_SIZE, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("transport.recv_error", extra={"interface": info.name, "error": str(e)})
                return
            if flags & socket.MSG_TRUNC:
                self._truncated(info, src)
                continue
            if limit > 0:
                at = received_at(ancdata)
                if at is not None and now - at > limit:
                    self.stale += 1
                    if self._on_stale is not None:
                        self._on_stale(now - at)
                    continue
            dst = destination_of(ancdata)
            self._on_datagram(data, src, info, dst is None or dst not in self._unicast)

    def _truncated(self, info: InterfaceInfo, src: tuple[str, int]) -> None:
        self.truncated += 1
        if self.on_drop is not None:
            self.on_drop("truncated")
        suppressed = self._send_log.allow(f"{info.name} truncated", time.monotonic())
        if suppressed is not None:
            log.warning(
                "transport.truncated",
                extra={
                    "interface": info.name,
                    "src": src[0],
                    "limit": RECV_SIZE,
                    "suppressed": suppressed,
                },
            )

    def raw_frame(self, dest: Destination, interface: str) -> bool:
        """Whether a reply to `dest` leaves `interface` as a raw frame (else a UDP datagram)."""
        if interface not in self._raw or not unicast_mac(dest.mac):
            return False
        if dest.kind is DestKind.HARDWARE:
            return True
        return dest.kind is DestKind.CLIENT_IP and self._interfaces[interface].on_link(dest.ip)

    def send(self, payload: bytes, dest: Destination, interface: str) -> None:
        """Send one encoded reply, without waiting. A failure is counted and the reply dropped
        (logged at most once per interval per interface and reason); it never raises."""
        try:
            if self.raw_frame(dest, interface):
                self._raw[interface].send(self._frame(payload, dest, self._interfaces[interface]))
            else:
                s = self._udp[interface]
                s.sendto(payload, (str(dest.ip), dest.port))
        except (OSError, KeyError) as e:
            self._send_failed(interface, dest, e)

    def _send_failed(self, interface: str, dest: Destination, e: Exception) -> None:
        reason = "queue-full" if isinstance(e, OSError) and e.errno in QUEUE_FULL else "error"
        key = (interface, reason)
        self.send_errors += 1
        self.send_errors_by[key] = self.send_errors_by.get(key, 0) + 1
        suppressed = self._send_log.allow(f"{interface} {reason}", time.monotonic())
        if suppressed is not None:
            log.warning(
                "transport.send_error",
                extra={
                    "interface": interface,
                    "reason": reason,
                    "dest": str(dest.ip),
                    "kind": dest.kind.value,
                    "error": str(e),
                    "suppressed": suppressed,
                },
            )

    def _frame(self, payload: bytes, dest: Destination, info: InterfaceInfo) -> bytes:
        udp = dpkt.udp.UDP(sport=self._port, dport=dest.port, data=payload)
        udp.ulen = len(udp)
        ip = dpkt.ip.IP(src=info.ip.packed, dst=dest.ip.packed, p=dpkt.ip.IP_PROTO_UDP, ttl=64)
        ip.data = udp
        ip.len = len(ip)
        eth = dpkt.ethernet.Ethernet(dst=dest.mac, src=info.mac, type=ETH_P_IP, data=ip)
        return bytes(eth)

    def close(self) -> None:
        for s in self._udp.values():
            if self._loop is not None:
                self._loop.remove_reader(s.fileno())
            s.close()
        for r in self._raw.values():
            r.close()
        self._udp.clear()
        self._raw.clear()
