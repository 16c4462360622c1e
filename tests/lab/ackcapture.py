"""Records every DHCPACK seen on an interface: `python -m tests.lab.ackcapture IFACE OUT`.

Runs inside a lab namespace (AF_PACKET needs root) beside a load generator, and writes one line
per ACK, `<unix time> <yiaddr> <chaddr hex> <xid hex>` (then `<server id>` with
`--with-server`), flushed as it goes, until SIGTERM or `--seconds` pass. Tests compare these
lines with what etcd holds: an acknowledged binding must be there.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

import dpkt

from spoke.dhcp.codec import DecodeError, decode
from spoke.dhcp.message import Message, MessageType, Op

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003


def capture_acks(
    iface: str,
    out_path: str,
    seconds: float,
    line: Callable[[Message], str],
    nak_line: Callable[[Message], str] | None = None,
    renew_line: Callable[[Message], str] | None = None,
) -> None:
    """Write `line(ack)` (with a leading unix time) for every DHCPACK a server sends on `iface`,
    after a `# ready` line, until SIGTERM or `seconds` pass; with `nak_line`, the same for every
    DHCPNAK, and with `renew_line` for every DHCPREQUEST with a ciaddr (a renewal) seen there."""
    stop = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    # Outgoing frames reach only ETH_P_ALL packet sockets: renewals are the load's own.
    proto = ETH_P_ALL if renew_line is not None else ETH_P_IP
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    s.settimeout(0.2)
    deadline = time.monotonic() + seconds
    with open(out_path, "w", buffering=1) as out:
        out.write("# ready\n")
        while not stop and time.monotonic() < deadline:
            try:
                frame = s.recv(65535)
            except (TimeoutError, InterruptedError):
                continue
            try:
                ip = dpkt.ethernet.Ethernet(frame).data
                if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                    continue
                if ip.data.sport != 67:
                    continue
                msg = decode(bytes(ip.data.data))
            except (dpkt.dpkt.UnpackError, DecodeError):
                continue
            if msg.op is not Op.BOOTREPLY:
                renewal = msg.message_type is MessageType.REQUEST and int(msg.ciaddr) != 0
                if renewal and renew_line is not None:
                    out.write(f"{time.time():.6f} {renew_line(msg)}\n")
                continue
            if msg.message_type is MessageType.ACK:
                out.write(f"{time.time():.6f} {line(msg)}\n")
            elif msg.message_type is MessageType.NAK and nak_line is not None:
                out.write(f"{time.time():.6f} {nak_line(msg)}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("iface")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--with-server", action="store_true", help="add the server identifier")
    p.add_argument(
        "--with-client-id", action="store_true", help="add option 61 as echoed, hex (- if none)"
    )
    args = p.parse_args(argv)

    def line(msg: Message) -> str:
        text = f"{msg.yiaddr} {msg.hardware_address.hex()} {msg.xid:08x}"
        if args.with_server:
            text += f" {msg.server_id}"
        if args.with_client_id:
            text += f" {msg.client_id.hex() if msg.client_id else '-'}"
        return text

    capture_acks(args.iface, args.out, args.seconds, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
