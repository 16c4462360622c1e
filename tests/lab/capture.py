"""A bounded DHCP packet capture for the system tests: the only code here that reads raw frames.

Run inside a lab namespace (`python -m tests.lab.capture IFACE OUT SECONDS`): it records every
IPv4/UDP datagram to or from port 67 or 68 seen on IFACE, in both directions, as one JSON line
each ({"src", "dst", "sport", "dport", "payload" hex}) in OUT, and stops by itself after SECONDS.
`start_capture` runs it in a lab host; `read_capture` turns the file back into `Captured`
datagrams for assertions.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests.lab.netlab import Host

ETH_P_ALL = 0x0003  # outgoing frames reach only ETH_P_ALL taps, so take all and filter
ETH_P_IP = 0x0800
DHCP_PORTS = frozenset({67, 68})
READY = "capture.ready"


@dataclass(frozen=True)
class Captured:
    src: IPv4Address
    dst: IPv4Address
    sport: int
    dport: int
    payload: bytes


def parse_ipv4_udp(packet: bytes) -> Captured | None:
    """The UDP datagram inside an IPv4 packet (no Ethernet header), or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    payload = packet[ihl + 8 : ihl + max(length, 8)]
    return Captured(
        IPv4Address(packet[12:16]), IPv4Address(packet[16:20]), sport, dport, bytes(payload)
    )


def read_capture(path: Path) -> list[Captured]:
    """Every complete line of a capture file (one still being written may end mid-line)."""
    out = []
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        rec = json.loads(line)
        out.append(
            Captured(
                IPv4Address(rec["src"]),
                IPv4Address(rec["dst"]),
                int(rec["sport"]),
                int(rec["dport"]),
                bytes.fromhex(rec["payload"]),
            )
        )
    return out


def capture(interface: str, out: Path, seconds: float) -> int:
    """Record DHCP datagrams on `interface` into `out` for at most `seconds`; return the count."""
    count = 0
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    with sock, out.open("w") as f:
        sock.bind((interface, 0))
        print(READY, flush=True)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], min(left, 0.5))
            if not readable:
                continue
            frame, (_, proto, *_) = sock.recvfrom(65535)
            got = parse_ipv4_udp(frame) if proto == ETH_P_IP else None
            if got is None or not ({got.sport, got.dport} & DHCP_PORTS):
                continue
            rec = {
                "src": str(got.src),
                "dst": str(got.dst),
                "sport": got.sport,
                "dport": got.dport,
                "payload": got.payload.hex(),
            }
            f.write(json.dumps(rec) + "\n")
            f.flush()
            count += 1
    return count


def start_capture(
    host: Host, interface: str, out: Path, seconds: float, timeout: float = 20.0
) -> subprocess.Popen[Any]:
    """Run this module in `host`'s namespace; return once it is reading frames."""
    log = out.with_suffix(".log")
    root = Path(__file__).resolve().parents[2]
    with log.open("wb") as f:
        proc = host.popen(
            [sys.executable, "-m", "tests.lab.capture", interface, str(out), str(seconds)],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    deadline = time.monotonic() + timeout
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"capture did not start: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m tests.lab.capture IFACE OUT SECONDS", file=sys.stderr)
        return 2
    capture(argv[0], Path(argv[1]), float(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
