"""Owns the chaos load and its verdict: perfdhcp behind a relay, every ACK recorded, the checks.

Load: perfdhcp on an edge segment (10.78.0.0/24) behind ISC dhcrelay, which forwards every
request to each server on the lan, at a bounded rate of mostly new clients (`-R` large) for a
bounded time; beside it a capture (`python -m tests.lab.chaos IFACE OUT --seconds N`)
writes one line per DHCPACK:
`<unix time> <yiaddr> <chaddr hex> <server id> <lease time> <client id hex or -> <xid hex>`, one
per DHCPNAK: `<unix time> NAK <chaddr hex> <server id> <xid hex>`, and one per renewal the load
sends (a DHCPREQUEST with a ciaddr): `<unix time> REQ <chaddr hex> <ciaddr> <xid hex>`.

Verdict (pure): (a) no address acknowledged to two clients with overlapping validity, from
the ACKs and from the bindings read at the end; (b) every acknowledged binding still valid at
the end present for its client; (c) the longest gap in ACKs after the fault, for the faulted
server's clients (their buckets) and, separately, for everyone else's (who must never pause).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubspoke.rfc3074 import client_bucket
from tests.lab.ackcapture import capture_acks
from tests.lab.netlab import Host, Lab, Segment

RELAY_LAN_IP = "10.77.0.5"
RELAY_EDGE_IP = "10.78.0.1"
PERF_IP = "10.78.0.6"
EDGE_NET = "10.78.0.0/24"
LAN_NET = "10.77.0.0/24"
# The relayed scope: giaddr (perfdhcp, 10.78.0.6) lies in it; 16,384 addresses outlast a run.
CHAOS_SUBNET = "10.78.0.0/16"
CHAOS_POOL_FIRST = "10.78.16.0"
CHAOS_POOL_LAST = "10.78.79.255"
CLIENT_RANGE = 1_000_000  # perfdhcp -R: nearly every exchange is a new client
PAUSE_S = 1.0  # a gap longer than this in a group's ACKs is a pause
ETH_P_IP = 0x0800


@dataclass(frozen=True)
class Ack:
    """One DHCPACK seen by the client side."""

    at: float  # wall clock when captured
    ip: str
    mac: str  # hex, no separators
    server: str
    lease: int  # seconds
    client_id: str = ""  # option 61 as echoed by the server, hex ("" when absent)
    xid: str = ""  # hex ("" when the capture did not record it)

    @property
    def bucket(self) -> int:
        """RFC 3074 bucket as the servers compute it: over the client id when sent (perfdhcp
        sends one), else chaddr."""
        cid = bytes.fromhex(self.client_id) if self.client_id else None
        return client_bucket(cid, bytes.fromhex(self.mac))

    @property
    def until(self) -> float:
        return self.at + self.lease


@dataclass(frozen=True)
class Nak:
    """One DHCPNAK seen by the client side."""

    at: float
    mac: str
    server: str
    xid: str = ""


@dataclass(frozen=True)
class Renewal:
    """One renewal the load sent (DHCPREQUEST with a ciaddr)."""

    at: float
    mac: str
    ip: str
    xid: str


def parse_acks(text: str) -> list[Ack]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("#") or len(parts) not in (5, 6, 7) or parts[1] in ("NAK", "REQ"):
            continue
        at, ip, mac, server, lease = parts[:5]
        cid = parts[5] if len(parts) >= 6 and parts[5] != "-" else ""
        xid = parts[6] if len(parts) == 7 else ""
        out.append(Ack(float(at), ip, mac.lower(), server, int(lease), cid, xid))
    return out


def parse_naks(text: str) -> list[Nak]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) in (4, 5) and parts[1] == "NAK":
            xid = parts[4] if len(parts) == 5 else ""
            out.append(Nak(float(parts[0]), parts[2].lower(), parts[3], xid))
    return out


def parse_renewals(text: str) -> list[Renewal]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] == "REQ":
            out.append(Renewal(float(parts[0]), parts[2].lower(), parts[3], parts[4]))
    return out


# -- the load -----------------------------------------------------------------------------------
def start_edge(lab: Lab, lan: Segment, servers: Sequence[Host], workdir: Path) -> Host:
    """The edge segment with perfdhcp's host and dhcrelay forwarding to every `servers` host.

    Each server gets a route to the edge through the relay host (`edge_route`).
    """
    edge = lab.segment("edge", subnet=EDGE_NET)
    relay = lab.host("relay", [lan, edge], [f"{RELAY_LAN_IP}/24", f"{RELAY_EDGE_IP}/24"])
    relay.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for host in servers:
        edge_route(host)
    perf = lab.host("perf", edge, f"{PERF_IP}/24")
    perf.run(["ip", "route", "add", LAN_NET, "via", RELAY_EDGE_IP])
    relay.popen(
        ["dhcrelay", "-d", "-q", "-4", "-pf", str(workdir / "dhcrelay.pid"),
         "-id", relay.ifname(edge), "-iu", relay.ifname(lan), *(h.ip for h in servers)],
        stdout=(workdir / "dhcrelay.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(1.0)
    return perf


def edge_route(host: Host) -> None:
    """(Re)install a server's route to the edge (a link going down deletes it)."""
    host.run(["ip", "route", "replace", EDGE_NET, "via", RELAY_LAN_IP])


class LoadRun:
    """perfdhcp towards the relay for a bounded time, with every ACK captured beside it."""

    def __init__(self, host: Host, capture: Path) -> None:
        self.host = host
        self.capture = capture
        self.out_path = capture.with_suffix(".perfdhcp.log")
        self.cap: subprocess.Popen[Any] | None = None
        self.perf: subprocess.Popen[Any] | None = None
        self.started_at = 0.0
        self.ends_at = 0.0

    def start(
        self,
        *,
        rate: int,
        seconds: int,
        clients: int = CLIENT_RANGE,
        server: str = RELAY_EDGE_IP,
        renew_rate: int = 0,
    ) -> None:
        """perfdhcp as a relay towards `server` (the relay, or a spoke directly): `rate` new
        exchanges a second and, with `renew_rate`, that many renewals of leases it holds."""
        self.cap = self.host.popen(
            [sys.executable, "-m", "tests.lab.chaos", "eth0", str(self.capture),
             "--seconds", str(seconds + 120)]
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not (self.capture.exists() and self.capture.read_text().startswith("# ready")):
            if self.cap.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the ACK capture did not start")
            time.sleep(0.05)
        self.started_at = time.time()
        self.ends_at = self.started_at + seconds
        renew = ["-f", str(renew_rate)] if renew_rate else []
        self.perf = self.host.popen(
            ["perfdhcp", "-4", "-l", "eth0", "-R", str(clients), "-r", str(rate), *renew,
             "-p", str(seconds), "-W", "2000000", server],
            stdout=self.out_path.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self, slack: float = 60.0, *, now: bool = False) -> str:
        """Until perfdhcp ends (bounded), then stop the capture; perfdhcp's output. `now`:
        end the load early (SIGINT: perfdhcp prints its statistics and exits)."""
        assert self.perf is not None and self.cap is not None
        if now and self.perf.poll() is None:
            self.perf.send_signal(signal.SIGINT)
            self.ends_at = min(self.ends_at, time.time())
        try:
            self.perf.wait(max(1.0, self.ends_at - time.time()) + slack)
        except subprocess.TimeoutExpired:
            self.host.stop(self.perf)
        time.sleep(0.5)
        self.host.stop(self.cap)
        return self.out_path.read_text(errors="replace")

    def acks(self) -> list[Ack]:
        return parse_acks(self.capture.read_text())

    def naks(self) -> list[Nak]:
        return parse_naks(self.capture.read_text())

    def renewals(self) -> list[Renewal]:
        return parse_renewals(self.capture.read_text())


# -- the verdict (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Binding:
    """What the store holds for an address at the end: client and validity."""

    ip: str
    mac: str
    start: float
    expires: float


def overlapping_acks(acks: Iterable[Ack]) -> list[tuple[Ack, Ack]]:
    """Pairs (earlier, later) of ACKs of one address to two clients with overlapping validity."""
    by_ip: dict[str, list[Ack]] = {}
    for a in acks:
        by_ip.setdefault(a.ip, []).append(a)
    bad = []
    for group in by_ip.values():
        group.sort(key=lambda a: a.at)
        for i, later in enumerate(group):
            for earlier in group[:i]:
                if earlier.mac != later.mac and later.at < earlier.until:
                    bad.append((earlier, later))
                    break
    return bad


def store_conflicts(acks: Iterable[Ack], store: Mapping[str, Binding]) -> list[tuple[Ack, Binding]]:
    """ACKs whose validity overlaps a different client's binding for the same address."""
    bad = []
    for a in acks:
        b = store.get(a.ip)
        if b is not None and b.mac != a.mac and b.start < a.until and a.at < b.expires:
            bad.append((a, b))
    return bad


def lost_acks(acks: Iterable[Ack], store: Mapping[str, Binding], read_at: float) -> list[Ack]:
    """Each client's latest ACK per address, still valid at `read_at`, absent from the store."""
    last: dict[tuple[str, str], Ack] = {}
    for a in sorted(acks, key=lambda a: a.at):
        last[(a.ip, a.mac)] = a
    return [
        a
        for a in last.values()
        if a.until > read_at and (a.ip not in store or store[a.ip].mac != a.mac)
    ]


def longest_gap(times: Iterable[float], start: float, end: float) -> tuple[float, bool]:
    """Longest interval in [start, end] without an ACK; and whether any ACK came after start."""
    inside = sorted(t for t in times if start <= t <= end)
    if not inside:
        return end - start, False
    points = [start, *inside]
    return max(b - a for a, b in itertools.pairwise(points)), True


@dataclass(frozen=True)
class Outcome:
    """One fault against one system, checked."""

    fault: str
    system: str
    acks: int
    acks_before: int
    resume_s: float | None  # longest ACK gap after the fault for the faulted server's clients
    resumed: bool
    survivors_gap_s: float | None  # longest ACK gap for everyone else's clients (None: n/a)
    duplicates: int
    lost: int
    unchecked: int  # ACKs whose validity ended before the store was read
    notes: str = ""
    error: str = ""

    @property
    def survivors_paused(self) -> bool | None:
        return None if self.survivors_gap_s is None else self.survivors_gap_s > PAUSE_S

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.duplicates == 0
            and self.lost == 0
            and self.resumed
            and self.acks_before > 0
        )


def evaluate(
    *,
    fault: str,
    system: str,
    acks: Sequence[Ack],
    store: Mapping[str, Binding],
    read_at: float,
    fault_at: float,
    end_at: float,
    victim_buckets: frozenset[int] | None,
    notes: str = "",
) -> Outcome:
    """The checks of one run. `victim_buckets` None: every client is the faulted side's."""
    dup_ips = {b.ip for _, b in overlapping_acks(acks)} | {
        a.ip for a, _ in store_conflicts(acks, store)
    }
    lost = lost_acks(acks, store, read_at)
    unchecked = {(a.ip, a.mac) for a in acks if a.until <= read_at}
    after = [a for a in acks if a.at >= fault_at]
    if victim_buckets is None:
        resume, resumed = longest_gap((a.at for a in after), fault_at, end_at)
        survivors: float | None = None
    else:
        mine = [a.at for a in after if a.bucket in victim_buckets]
        others = [a.at for a in after if a.bucket not in victim_buckets]
        resume, resumed = longest_gap(mine, fault_at, end_at)
        survivors, _ = longest_gap(others, fault_at, end_at)
    return Outcome(
        fault=fault,
        system=system,
        acks=len(acks),
        acks_before=sum(1 for a in acks if a.at < fault_at),
        resume_s=resume,
        resumed=resumed,
        survivors_gap_s=survivors,
        duplicates=len(dup_ips),
        lost=len(lost),
        unchecked=len(unchecked),
        notes=notes,
    )


# -- the capture process ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Write every DHCPACK seen on IFACE to OUT until SIGTERM or `--seconds`:
    `<time> <yiaddr> <chaddr hex> <server id> <lease time> <client id hex or ->`."""
    p = argparse.ArgumentParser()
    p.add_argument("iface")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=300.0)
    args = p.parse_args(argv)
    capture_acks(
        args.iface,
        args.out,
        args.seconds,
        lambda msg: (
            f"{msg.yiaddr} {msg.hardware_address.hex()} {msg.server_id} {msg.lease_time or 0} "
            f"{msg.client_id.hex() if msg.client_id else '-'} {msg.xid:08x}"
        ),
        lambda msg: f"NAK {msg.hardware_address.hex()} {msg.server_id} {msg.xid:08x}",
        lambda msg: f"REQ {msg.hardware_address.hex()} {msg.ciaddr} {msg.xid:08x}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
