"""The fuzz target of issue 12, point 7: datagrams through decode, the engine, the exchange and
the reply encoder, with a seed corpus (`seeds`).

The seeds: DISCOVERs captured from real clients (`fuzz_corpus/*.hex`: busybox udhcpc and dhcpcd
on a veth pair) and every kind of request built with `codec_packets` (SELECTING, INIT-REBOOT,
RENEWING, RELEASE, DECLINE, INFORM, relayed with option 82, overloaded, split options).

`Target.feed` drives the spoke's real `Exchange` (engine, memory etcd, the real `Wire` encoding
every reply onto a recording transport) and checks the property: no exception escapes, nothing
is counted `internal-error` or `encode-error` (both mean a bug), and every reply was either
encoded or dropped with a reason.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from spoke.dhcp.decisions import Drop
from spoke.dhcp.reply import Destination
from spoke.exchange import Wire
from spoke.transport import InterfaceInfo
from tests.lab.codec_packets import header, opt, pad300
from tests.lab.scripted_client import LAN, Server, site_scopes

CORPUS = Path(__file__).parent / "fuzz_corpus"
BUGS = frozenset({"internal-error", "encode-error"})
LO = InterfaceInfo(LAN.interface, 1, LAN.server_ip, bytes(6))
SID = LAN.server_ip.packed
OFFERED = IPv4Address("10.0.0.100").packed


def _request(mtype: int, *extra: bytes, **fields: object) -> bytes:
    return pad300(header(**fields) + opt(53, bytes([mtype])) + b"".join(extra) + b"\xff")  # type: ignore[arg-type]


def built_seeds() -> list[bytes]:
    prl = opt(55, bytes((1, 3, 6, 15, 28, 51, 58, 59)))
    cid = opt(61, b"\x01\x02\x00\x5e\x00\x00\xa1")
    rai = opt(82, b"\x01\x04port\x02\x06switch")
    return [
        _request(1, prl, cid, opt(12, b"laptop")),
        _request(1, prl, opt(50, OFFERED), opt(51, (600).to_bytes(4, "big"))),
        _request(3, opt(50, OFFERED), opt(54, SID), prl),  # SELECTING
        _request(3, opt(50, OFFERED), prl),  # INIT-REBOOT
        _request(3, prl, ciaddr="10.0.0.100"),  # RENEWING
        _request(7, opt(54, SID), ciaddr="10.0.0.100"),  # RELEASE
        _request(4, opt(50, OFFERED), opt(54, SID)),  # DECLINE
        _request(8, prl, ciaddr="10.0.0.100"),  # INFORM
        _request(1, prl, rai, giaddr="10.1.0.1", hops=1),  # relayed
        _request(1, opt(52, b"\x01"), file=(prl + cid + b"\xff").ljust(128, b"\0")),  # overload
        _request(1, opt(61, b"\x01\x02\x00"), opt(61, b"\x5e\x00\x00\xa1"), prl),  # split
        _request(1, prl, hlen=0, chaddr=bytes(16)),
    ]


def seeds() -> list[bytes]:
    real = [bytes.fromhex(p.read_text()) for p in sorted(CORPUS.glob("*.hex"))]
    return real + built_seeds()


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_drop = None

    def send(self, payload: bytes, dest: Destination, interface: str) -> None:
        self.sent.append(payload)


class _Tally:
    def __init__(self, drops: list[str]) -> None:
        self.drops = drops

    def decided(self, d: object) -> None:
        if isinstance(d, Drop):
            self.drops.append(d.reason)

    def packet_out(self, kind: str) -> None:
        pass


class Target:
    """A fresh spoke request path (standalone, the site scopes, blocks owned)."""

    def __init__(self) -> None:
        self.server = Server(site_scopes())
        self.transport = _Transport()
        self.wire_drops: list[str] = []
        path = self.server.path
        path.server_ids = {LAN.interface: LAN.server_ip}
        path.outbox = Wire(self.transport, _Tally(self.wire_drops))  # type: ignore[arg-type]
        self.now = 1_700_000_000.0

    def feed(self, data: bytes, *, broadcast: bool = True) -> None:
        """One datagram; raises AssertionError when the property does not hold."""
        self.now += 1.0
        self.server.now = self.now
        record = self.server._record
        record.decisions.clear()
        self.wire_drops.clear()
        self.server.path.on_datagram(data, ("10.0.0.50", 68), LO, broadcast)
        reasons = {d.reason for d in record.decisions if isinstance(d, Drop)}
        reasons |= set(self.wire_drops)
        assert not reasons & BUGS, (reasons, data.hex())
        assert set(self.wire_drops) <= {"reply-too-large", "ack-too-large"}, self.wire_drops
