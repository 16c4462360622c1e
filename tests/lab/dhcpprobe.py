"""Scripted DHCP clients for the system tests, run inside a lab namespace with plain UDP sockets.

`python -m tests.lab.dhcpprobe lease IFACE OUT`: one DORA with the broadcast flag (chaddr
is IFACE's own address, no client identifier), the address configured on IFACE, then one
RENEWING request unicast from it to the server, whose ACK must come back to that address;
writes {"ip", "server", "mac", "renewed_in"} to OUT.

`python -m tests.lab.dhcpprobe renew SERVER CIADDR=CHADDR... --rate R --seconds S OUT`:
unicast RENEWING requests (ciaddr, chaddr in hex) to SERVER:67, the clients in turn, at R per
second for S seconds, whoever sends them: what a spoke receives from clients that renew and then
leave the network, when the requests arrive and the clients are gone before the answers leave.
OUT gets {"sent"}.

`python -m tests.lab.dhcpprobe discover IFACE --rate R --seconds S OUT`: DISCOVERs with the
broadcast flag from `--clients` chaddrs in turn (02:ee:00:00:00:NN), at R per second for S
seconds; each OFFER broadcast back is matched by xid. OUT gets {"sent", "answered",
"latencies"}: the share of other clients a server kept answering, and how fast.

Each writes OUT (JSON) when done; a line `probe.ready` on stdout says it is sending.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from spoke.dhcp.codec import DecodeError, decode, encode
from spoke.dhcp.message import BROADCAST_FLAG, ZERO, Message, MessageType, Op, Opt

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
READY = "probe.ready"


def _client_socket(iface: str | None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if iface is not None:
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.encode())
    s.bind(("0.0.0.0", 68))
    return s


def _request(
    mtype: MessageType,
    xid: int,
    mac: bytes,
    *,
    ciaddr: IPv4Address = ZERO,
    broadcast: bool = False,
    options: dict[int, bytes] | None = None,
) -> bytes:
    return encode(
        Message(
            op=Op.BOOTREQUEST,
            xid=xid,
            chaddr=mac.ljust(16, b"\0"),
            flags=BROADCAST_FLAG if broadcast else 0,
            ciaddr=ciaddr,
            options={Opt.MESSAGE_TYPE: bytes([mtype]), **(options or {})},
        )
    )


def _await_reply(s: socket.socket, xid: int, want: MessageType, within: float) -> Message:
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([s], [], [], left)
        if not readable:
            break
        data = s.recv(4096)
        try:
            msg = decode(data)
        except DecodeError:
            continue
        if msg.op is Op.BOOTREPLY and msg.xid == xid and msg.message_type is want:
            return msg
    raise TimeoutError(f"no {want.name} for xid {xid:#x} in {within} s")


def lease(iface: str, out: Path) -> None:
    mac = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    with _client_socket(iface) as s:
        print(READY, flush=True)
        s.sendto(
            _request(MessageType.DISCOVER, xid, mac, broadcast=True),
            ("255.255.255.255", 67),
        )
        offer = _await_reply(s, xid, MessageType.OFFER, 5.0)
        server = offer.server_id
        assert server is not None
        s.sendto(
            _request(
                MessageType.REQUEST,
                xid,
                mac,
                broadcast=True,
                options={Opt.SERVER_ID: server.packed, Opt.REQUESTED_ADDRESS: offer.yiaddr.packed},
            ),
            ("255.255.255.255", 67),
        )
        ack = _await_reply(s, xid, MessageType.ACK, 5.0)
    ip = ack.yiaddr
    subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", iface], check=True)
    xid += 1
    with _client_socket(iface) as s:
        started = time.monotonic()
        s.sendto(_request(MessageType.REQUEST, xid, mac, ciaddr=ip), (str(server), 67))
        _await_reply(s, xid, MessageType.ACK, 5.0)
        renewed_in = time.monotonic() - started
    out.write_text(
        json.dumps(
            {"ip": str(ip), "server": str(server), "mac": mac.hex(), "renewed_in": renewed_in}
        )
    )


def renew(server: str, clients: list[str], rate: float, seconds: float, out: Path) -> None:
    who = [(IPv4Address(ip), bytes.fromhex(mac)) for ip, mac in (c.split("=") for c in clients)]
    sent = 0
    with _client_socket(None) as s:
        print(READY, flush=True)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            if sent < elapsed * rate:
                ciaddr, mac = who[sent % len(who)]
                packet = _request(MessageType.REQUEST, 0x5000_0000 + sent, mac, ciaddr=ciaddr)
                s.sendto(packet, (server, 67))
                sent += 1
            else:
                time.sleep(min(0.002, 1 / rate))
    out.write_text(json.dumps({"sent": sent}))


def discover(iface: str, rate: float, seconds: float, clients: int, out: Path) -> None:
    sent_at: dict[int, float] = {}
    latencies: dict[int, float] = {}
    base = int.from_bytes(os.urandom(2), "big") << 16
    with _client_socket(iface) as s:
        s.setblocking(False)
        print(READY, flush=True)
        start = time.monotonic()
        end = start + seconds
        while (now := time.monotonic()) < end + 2.0:  # 2 s for the last answers
            if now < end and len(sent_at) < (now - start) * rate:
                n = len(sent_at)
                xid = base + n
                mac = bytes([2, 0xEE, 0, 0, 0, n % clients])
                s.sendto(
                    _request(MessageType.DISCOVER, xid, mac, broadcast=True),
                    ("255.255.255.255", 67),
                )
                sent_at[xid] = now
            readable, _, _ = select.select([s], [], [], 0.002)
            while readable:
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    break
                try:
                    msg = decode(data)
                except DecodeError:
                    continue
                if msg.message_type is MessageType.OFFER and msg.xid in sent_at:
                    latencies.setdefault(msg.xid, time.monotonic() - sent_at[msg.xid])
    out.write_text(
        json.dumps(
            {
                "sent": len(sent_at),
                "answered": len(latencies),
                "latencies": sorted(latencies.values()),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.lab.dhcpprobe")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("lease")
    a.add_argument("iface")
    a.add_argument("out", type=Path)
    r = sub.add_parser("renew")
    r.add_argument("server")
    r.add_argument("clients", nargs="+", metavar="CIADDR=CHADDR")
    r.add_argument("--rate", type=float, default=100.0)
    r.add_argument("--seconds", type=float, default=5.0)
    r.add_argument("out", type=Path)
    d = sub.add_parser("discover")
    d.add_argument("iface")
    d.add_argument("--rate", type=float, default=10.0)
    d.add_argument("--seconds", type=float, default=5.0)
    d.add_argument("--clients", type=int, default=16)
    d.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "lease":
        lease(args.iface, args.out)
    elif args.cmd == "renew":
        renew(args.server, args.clients, args.rate, args.seconds, args.out)
    else:
        discover(args.iface, args.rate, args.seconds, args.clients, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
