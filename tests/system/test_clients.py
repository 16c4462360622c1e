"""Real clients against the real spoke: udhcpc, dhclient and dhcpcd obtain, renew and release.

Each client runs in its own namespace on the lab's `lan` segment against a spoke whose scope has
a short lease (20 s, T1 8 s, T2 15 s), so every client sends a genuine RENEWING request on its
own timer (unicast to the server id, ciaddr set) within the test. What the clients report
through their hook scripts is checked against the scope, and every step against etcd.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.lab.clients import (
    BOUND_REASONS,
    Dhclient,
    Dhcpcd,
    DhcpClient,
    Udhcpc,
    mac_of,
    wait_binding,
)
from tests.lab.netlab import Lab, Segment
from tests.lab.spokelab import DNS, DOMAIN, POOL, ROUTER, SERVER_IP, SpokeLab

pytestmark = pytest.mark.system

LEASE = 20
SHORT_LEASE = {"lease_time": LEASE, "t1": 8, "t2": 15, "min_lease_time": 10}
CLIENTS: list[type[DhcpClient]] = [Udhcpc, Dhclient, Dhcpcd]
INFORM_IP = "10.77.0.20"  # inside the subnet, outside the pool


def in_pool(ip: str | None) -> bool:
    first, last = (IPv4Address(a) for a in POOL.split("-"))
    return ip is not None and first <= IPv4Address(ip) <= last


@pytest.fixture
def short_lease_spoke(spoke: SpokeLab) -> SpokeLab:
    spoke.scopes[0].update(SHORT_LEASE)
    spoke.start_spoke()
    return spoke


@pytest.mark.parametrize("kind", CLIENTS, ids=lambda k: k.program)
def test_client_obtains_renews_and_releases(
    kind: type[DhcpClient], lab: Lab, lan: Segment, short_lease_spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke = short_lease_spoke
    host = lab.host("c1", lan)
    client = kind(host, tmp_path / kind.program)
    client.start()

    # 1. a lease with the scope's options, committed to etcd before the client heard of it
    bound = client.wait_for(BOUND_REASONS, timeout=30)
    assert in_pool(bound.ip), bound
    assert bound.ip is not None
    assert bound.routers == (ROUTER,)
    assert bound.dns == tuple(DNS)
    assert bound.domain == DOMAIN
    assert bound.lease_time == LEASE
    assert bound.server_id == SERVER_IP
    first = spoke.bindings()[bound.ip]
    assert first["state"] == "bound"
    assert first["hw"] == mac_of(host)
    assert first["expires"] - first["start"] == pytest.approx(LEASE)

    # 2. the client's own RENEWING request at T1 extends the same binding in etcd
    renewed = client.wait_for({"RENEW"}, after=bound.seq, timeout=45)
    assert renewed.ip == bound.ip
    assert renewed.lease_time == LEASE
    second = wait_binding(
        spoke, bound.ip, lambda b: b["_mod_revision"] > first["_mod_revision"], timeout=10
    )
    assert second["state"] == "bound"
    assert second["client"] == first["client"]
    assert second["expires"] > first["expires"]

    # 3. DHCPRELEASE marks the binding released
    client.release()
    released = wait_binding(spoke, bound.ip, lambda b: b["state"] == "released")
    assert released["client"] == first["client"]
    assert released["_mod_revision"] > second["_mod_revision"]

    # 4. the same client asking again gets the same address back
    last = client.events()[-1].seq
    client.start()
    again = client.wait_for(BOUND_REASONS, after=last, timeout=30)
    assert again.ip == bound.ip
    rebound = wait_binding(spoke, bound.ip, lambda b: b["state"] == "bound")
    assert rebound["client"] == first["client"]
    client.stop()
    assert [ip for ip, b in spoke.bindings().items() if b["client"] == first["client"]] == [
        bound.ip
    ]


def test_dhcpcd_inform_gets_options_and_writes_no_binding(
    lab: Lab, lan: Segment, spoke: SpokeLab, tmp_path: Path
) -> None:
    spoke.start_spoke()
    host = lab.host("c1", lan)
    client = Dhcpcd(host, tmp_path / "dhcpcd", inform=f"{INFORM_IP}/24")
    client.start()
    informed = client.wait_for({"INFORM"}, timeout=30)
    assert informed.ip == INFORM_IP
    assert informed.routers == (ROUTER,)
    assert informed.dns == tuple(DNS)
    assert informed.domain == DOMAIN
    assert informed.server_id == SERVER_IP
    assert informed.lease_time is None  # an INFORM reply carries no lease (RFC 2131 4.3.5)
    client.stop()
    assert spoke.bindings() == {}
