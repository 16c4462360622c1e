"""Helpers for the failover system tests (spoke loss, one-to-one, drain).

Owns reading ownership out of etcd in a `ClusterLab` (bucket map, block owners), picking client
MAC addresses whose RFC 3074 bucket a given spoke owns, and running perfdhcp in the background
behind the relay with an ACK capture, so a test can act (kill, freeze, drain) while load runs
and then read every ACK with its time and server.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubspoke.assign import BucketMap
from hubspoke.rfc3074 import client_bucket
from tests.lab.clusterlab import ROOT, ClusterLab
from tests.lab.netlab import Host


def bucket_map(cl: ClusterLab) -> BucketMap:
    value = cl.get_prefix("assign/buckets")[f"{ROOT}/assign/buckets"]
    return BucketMap.decode(json.dumps(value).encode())


def block_owners(cl: ClusterLab) -> dict[str, str | None]:
    """`<scope>/<block id>` -> owner (None: the reserve) as etcd holds it now."""
    prefix = f"{ROOT}/assign/blocks/"
    return {k[len(prefix) :]: v.get("owner") for k, v in cl.get_prefix("assign/blocks/").items()}


def blocks_of(cl: ClusterLab, node: str) -> set[str]:
    return {b for b, owner in block_owners(cl).items() if owner == node}


def mac_in(buckets: frozenset[int], rng: random.Random, *, client_id: bool) -> str:
    """A locally administered MAC whose bucket is in `buckets` (with `client_id`, also the
    bucket of the client identifier udhcpc sends: type 1 + MAC)."""
    for _ in range(100_000):
        mac = bytes([0x02, *(rng.randrange(256) for _ in range(5))])
        if client_bucket(None, mac) not in buckets:
            continue
        if client_id and client_bucket(b"\x01" + mac, mac) not in buckets:
            continue
        return ":".join(f"{b:02x}" for b in mac)
    raise AssertionError(f"no MAC found for buckets {sorted(buckets)[:8]}...")


def set_mac(host: Host, mac: str, interface: str = "eth0") -> None:
    host.run(["ip", "link", "set", interface, "address", mac])


@dataclass(frozen=True)
class Ack:
    at: float  # wall clock, when the capture saw it
    ip: str
    mac: str  # hex, no separators
    server: str
    client_id: str = ""  # option 61 as the server echoed it, hex ("" when absent)

    @property
    def bucket(self) -> int:
        """The RFC 3074 bucket as the spokes compute it: over the client identifier when the
        client sent one (perfdhcp does), else over chaddr."""
        cid = bytes.fromhex(self.client_id) if self.client_id else None
        return client_bucket(cid, bytes.fromhex(self.mac))


class PerfRun:
    """perfdhcp through the relay for `seconds`, with every ACK captured on its interface."""

    def __init__(self, host: Host, relay_ip: str, capture: Path) -> None:
        self.host = host
        self.relay_ip = relay_ip
        self.capture = capture
        self.cap: subprocess.Popen[Any] | None = None
        self.perf: subprocess.Popen[Any] | None = None
        self.out_path = capture.with_suffix(".perfdhcp.log")

    def start(self, *, clients: int, rate: int, seconds: int) -> None:
        self.cap = self.host.popen(
            [sys.executable, "-m", "tests.lab.ackcapture", "eth0", str(self.capture),
             "--with-server", "--with-client-id", "--seconds", str(seconds + 60)]
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not (self.capture.exists() and self.capture.read_text().startswith("# ready")):
            assert self.cap.poll() is None and time.monotonic() < deadline, "capture not ready"
            time.sleep(0.05)
        self.perf = self.host.popen(
            ["perfdhcp", "-4", "-l", "eth0", "-R", str(clients), "-r", str(rate),
             "-p", str(seconds), "-W", "2000000", self.relay_ip],
            stdout=self.out_path.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self, timeout: float = 120.0) -> str:
        """Wait for perfdhcp to end (bounded), stop the capture; perfdhcp's output."""
        assert self.perf is not None and self.cap is not None
        try:
            self.perf.wait(timeout)
        except subprocess.TimeoutExpired:
            self.host.stop(self.perf)
        time.sleep(0.5)  # the last ACKs reach the capture
        self.host.stop(self.cap)
        return self.out_path.read_text(errors="replace")

    def acks(self) -> list[Ack]:
        out = []
        for line in self.capture.read_text().splitlines():
            parts = line.split()
            if line.startswith("#") or len(parts) != 6:
                continue
            at, ip, mac, _xid, sid, cid = parts
            out.append(Ack(float(at), ip, mac, sid, "" if cid == "-" else cid))
        return out


def duplicates(acks: list[Ack]) -> dict[str, set[str]]:
    """Addresses acknowledged to more than one client."""
    by_ip: dict[str, set[str]] = {}
    for a in acks:
        by_ip.setdefault(a.ip, set()).add(a.mac)
    return {ip: macs for ip, macs in by_ip.items() if len(macs) > 1}


def acks_match_etcd(cl: ClusterLab, scope: str, acks: list[Ack]) -> list[str]:
    """Each acknowledged address's binding in etcd names the client last acknowledged for it;
    returns the mismatches (empty: all match)."""
    bindings = cl.bindings(scope)
    last: dict[str, Ack] = {}
    for a in acks:
        last[a.ip] = a
    bad = []
    for ip, a in sorted(last.items()):
        b = bindings.get(ip)
        hw = str(b.get("hw", "")).replace(":", "").lower() if b else ""
        if hw != a.mac.lower():
            bad.append(f"{ip}: acked to {a.mac} by {a.server}, etcd says {b}")
    return bad


def wait_until(what: str, predicate: Any, within: float, poll: float = 0.05) -> Any:
    """`predicate()` until truthy (bounded); its value. Faster polling than `ClusterLab.wait_for`
    for measurements, without the CLI."""
    deadline = time.monotonic() + within
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {within} s")
        time.sleep(poll)
