"""Relayed clients: a client on a branch segment behind ISC dhcrelay gets a lease from the spoke.

Lab: the spoke (10.77.0.2) on `lan`; a relay host on `lan` (10.77.0.1) and `branch`
(10.78.0.1) running dhcrelay and forwarding IPv4 (so relayed clients can renew by unicast); a
scope for 10.78.0.0/24 selected by giaddr 10.78.0.1; a route in the server's namespace to
10.78.0.0/24 via the relay. With `dhcrelay -a` the relay adds agent information (option 82),
and a capture on the relay's upstream interface shows the spoke echoing it unchanged.

A relayed client renews by unicast to the server, routed by the relay host. dhcrelay's packet
filter on the branch interface also picks that unicast up and relays it (giaddr set); that copy
is the one the spoke ACKs. The directly routed copy (giaddr 0, ciaddr 10.78.0.x, arriving on the
spoke's lan interface) is NAKed "wrong network" today, because the spoke picks the scope by
ingress interface rather than by ciaddr (RFC 2131 4.3.2); the NAK is broadcast on lan and never
reaches the client. These tests do not depend on that copy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from spoke.dhcp.codec import decode
from spoke.dhcp.message import MessageType
from tests.lab.capture import read_capture, start_capture
from tests.lab.clients import (
    BOUND_REASONS,
    Dhclient,
    Dhcpcd,
    DhcpClient,
    Relay,
    Udhcpc,
    mac_of,
    wait_binding,
)
from tests.lab.netlab import Host, Lab, Segment
from tests.lab.spokelab import SERVER_IP, SpokeLab

pytestmark = pytest.mark.system

BRANCH_SUBNET = "10.78.0.0/24"
RELAY_LAN = "10.77.0.1"
RELAY_BRANCH = "10.78.0.1"
BRANCH_POOL = "10.78.0.50-10.78.0.99"
BRANCH_DNS = ("10.78.0.53",)
BRANCH_DOMAIN = "branch.example"
LEASE = 20


def branch_scope() -> dict[str, Any]:
    return {
        "name": "branch",
        "subnet": BRANCH_SUBNET,
        "pools": [BRANCH_POOL],
        "lease_time": LEASE,
        "t1": 8,
        "t2": 15,
        "min_lease_time": 10,
        "max_lease_time": 600,
        "options": {
            "routers": [RELAY_BRANCH],
            "dns_servers": list(BRANCH_DNS),
            "domain_name": BRANCH_DOMAIN,
        },
    }


def in_branch_pool(ip: str | None) -> bool:
    first, last = (IPv4Address(a) for a in BRANCH_POOL.split("-"))
    return ip is not None and first <= IPv4Address(ip) <= last


@dataclass
class Branch:
    spoke: SpokeLab
    segment: Segment
    relay_host: Host
    relay: Relay
    workdir: Path

    def client(self, lab: Lab, kind: type[DhcpClient], name: str = "c1") -> DhcpClient:
        return kind(lab.host(name, self.segment), self.workdir / f"{name}-{kind.program}")


def build_branch(
    lab: Lab, lan: Segment, spoke: SpokeLab, workdir: Path, *, agent_info: bool
) -> Branch:
    branch = lab.segment("branch", subnet=BRANCH_SUBNET)
    relay_host = lab.host("relay", [lan, branch], [f"{RELAY_LAN}/24", f"{RELAY_BRANCH}/24"])
    relay_host.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    spoke.server.run(["ip", "route", "add", BRANCH_SUBNET, "via", RELAY_LAN])
    spoke.scopes.append(branch_scope())
    spoke.start_spoke()
    relay = Relay(
        relay_host,
        workdir / "relay",
        downstream=relay_host.ifname(branch),
        upstream=relay_host.ifname(lan),
        server=SERVER_IP,
        agent_info=agent_info,
    )
    relay.start()
    return Branch(spoke, branch, relay_host, relay, workdir)


@pytest.fixture
def branch(lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path) -> Iterator[Branch]:
    yield build_branch(lab, lan, spoke, tmp_path, agent_info=False)


@pytest.mark.parametrize("kind", [Udhcpc, Dhclient, Dhcpcd], ids=lambda k: k.program)
def test_relayed_client_gets_renews_and_releases_a_branch_lease(
    kind: type[DhcpClient], lab: Lab, branch: Branch
) -> None:
    spoke = branch.spoke
    client = branch.client(lab, kind)
    client.start()
    bound = client.wait_for(BOUND_REASONS, timeout=30)
    assert in_branch_pool(bound.ip), bound
    assert bound.ip is not None
    assert bound.routers == (RELAY_BRANCH,)
    assert bound.dns == BRANCH_DNS
    assert bound.domain == BRANCH_DOMAIN
    assert bound.lease_time == LEASE
    assert bound.server_id == SERVER_IP

    first = spoke.bindings("branch")[bound.ip]
    assert first["state"] == "bound"
    assert first["hw"] == mac_of(client.host)
    assert spoke.bindings("lan") == {}

    # the renewal is unicast from the client's new address, routed through the relay host
    renewed = client.wait_for({"RENEW"}, after=bound.seq, timeout=45)
    assert renewed.ip == bound.ip
    second = wait_binding(
        spoke,
        bound.ip,
        lambda b: b["_mod_revision"] > first["_mod_revision"],
        scope="branch",
        timeout=10,
    )
    assert second["expires"] > first["expires"]
    assert second["client"] == first["client"]

    client.release()
    released = wait_binding(spoke, bound.ip, lambda b: b["state"] == "released", scope="branch")
    assert released["client"] == first["client"]


def test_relay_agent_information_is_echoed_to_the_relay(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    branch = build_branch(lab, lan, spoke, tmp_path, agent_info=True)
    upstream = branch.relay_host.ifname(lan)
    trace = tmp_path / "upstream.jsonl"
    capture = start_capture(branch.relay_host, upstream, trace, seconds=60)
    client = branch.client(lab, Udhcpc)
    client.start()
    bound = client.wait_for(BOUND_REASONS, timeout=30)
    assert in_branch_pool(bound.ip), bound
    client.stop()
    # the capture may still hold the ACK in its socket buffer: wait until it is written
    deadline = time.monotonic() + 15
    while not any(
        p.src == IPv4Address(SERVER_IP) and decode(p.payload).message_type is MessageType.ACK
        for p in read_capture(trace)
    ):
        assert time.monotonic() < deadline, read_capture(trace)
        time.sleep(0.1)
    branch.relay_host.stop(capture)

    packets = read_capture(trace)
    relayed = [p for p in packets if p.dst == IPv4Address(SERVER_IP) and p.dport == 67]
    replies = [p for p in packets if p.src == IPv4Address(SERVER_IP) and p.sport == 67]
    assert relayed, packets
    assert replies, packets
    requests = {m.xid: m for m in (decode(p.payload) for p in relayed)}
    kinds = []
    for p in replies:
        assert p.dst == IPv4Address(RELAY_BRANCH)
        reply = decode(p.payload)
        request = requests[reply.xid]
        agent = request.relay_agent_info
        assert agent is not None
        assert reply.relay_agent_info == agent
        assert reply.giaddr == IPv4Address(RELAY_BRANCH)
        kinds.append(reply.message_type)
    assert MessageType.OFFER in kinds
    assert MessageType.ACK in kinds
    # dhcrelay's circuit id (sub-option 1) names its downstream interface
    agent = next(iter(requests.values())).relay_agent_info
    assert agent is not None
    assert agent[0] == 1
    assert agent[2 : 2 + agent[1]] == branch.relay_host.ifname(branch.segment).encode()
