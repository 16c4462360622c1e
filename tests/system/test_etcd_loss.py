"""A spoke cut off from etcd keeps serving its buckets from its blocks, then recovers.

Hub and two spokes as real processes (ClusterLab). s1's namespace gets a blackhole route to
etcd's host for ~10 s while udhcpc clients in its buckets arrive: it goes
COMMUNICATION-INTERRUPTED, hands out leases capped at MCLT from its own blocks (each journaled
and fsync'd before the ACK), then after the route is removed RECOVER -> NORMAL, with every ACK
it sent committed in etcd and no address bound to two clients.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hubspoke.assign import BucketMap
from hubspoke.rfc3074 import client_bucket
from tests.lab.clients import Udhcpc, mac_of
from tests.lab.clusterlab import DB_IP, ROOT, ClusterLab
from tests.lab.netlab import Segment
from tests.lab.topology import SPOKE_IPS, wait_balanced

MCLT = 30
CUT_SECONDS = 10.0


def transitions(cl: ClusterLab, node: str) -> list[dict[str, Any]]:
    return [e for e in cl.spokes[node].events("failover.transition")]


def metric_state(cl: ClusterLab, node: str) -> str:
    script = (
        "import urllib.request as u\n"
        "t = u.urlopen('http://127.0.0.1:9167/metrics', timeout=5).read().decode()\n"
        "print([l for l in t.splitlines() if l.startswith('hubspoke_state{') "
        "and l.endswith(' 1.0')])"
    )
    return str(cl.spokes[node].host.run([sys.executable, "-c", script]).stdout)


def test_a_spoke_cut_off_from_etcd_keeps_serving_and_recovers(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    cluster.planner = {"interval": 0.5, "max_interrupted": 30, "mclt": MCLT}
    for name in ("s1", "s2"):
        proc = cluster.add_spoke(name, SPOKE_IPS[name])
        path = cluster.workdir / f"{name}.yaml"
        cfg = yaml.safe_load(path.read_text())
        # A session longer than the cut keeps s1 a member meanwhile, so the hub leaves its
        # buckets alone and s1 alone answers its clients while it journals (with TTL 3 the
        # hub would move them at once and both spokes would race to answer).
        cfg["cluster"]["session_ttl"] = 20
        cfg["failover"] = {
            "interrupted_after": 2.0,
            "max_interrupted": 30,
            "mclt": MCLT,
            "journal": str(cluster.workdir / f"{name}.journal"),
        }
        path.write_text(yaml.safe_dump(cfg))
        proc.start()
    cluster.add_hub().start(wait_ready=None)
    wait_balanced(cluster, ("s1", "s2"))
    raw = cluster.get_prefix("assign/buckets")[f"{ROOT}/assign/buckets"]
    mine = BucketMap.decode(json.dumps(raw).encode()).buckets_of("s1")
    # clients whose bucket is s1's (udhcpc sends 01+MAC as its client identifier)
    hosts = []
    for i in range(16):
        host = cluster.lab.host(f"c{i}", lan)
        mac = bytes.fromhex(mac_of(host))
        if client_bucket(b"\x01" + mac, mac) in mine:
            hosts.append(host)
        if len(hosts) == 4:
            break
    assert len(hosts) >= 2, "too few clients hash into s1's buckets"

    s1 = cluster.spokes["s1"]
    s1.host.run(["ip", "route", "add", "blackhole", f"{DB_IP}/32"])
    cut_at = time.monotonic()
    try:
        cluster.wait_for(
            "s1 COMMUNICATION-INTERRUPTED",
            lambda: any(e["to"] == "COMMUNICATION-INTERRUPTED" for e in transitions(cluster, "s1")),
            within=10,
        )
        detected = time.monotonic() - cut_at
        clients = [Udhcpc(h, tmp_path / f"udhcpc-{h.name}") for h in hosts]
        for c in clients:
            c.start()
        bound = [c.wait_for({"BOUND"}, timeout=20) for c in clients]
        assert "communication-interrupted" in metric_state(cluster, "s1")
        time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
    finally:
        s1.host.run(["ip", "route", "del", "blackhole", f"{DB_IP}/32"])
    restored_at = time.monotonic()
    cluster.wait_for(
        "s1 back to NORMAL",
        lambda: [e["to"] for e in transitions(cluster, "s1")][-1:] == ["NORMAL"],
        within=60,
    )
    to_normal = time.monotonic() - restored_at
    states = [e["to"] for e in transitions(cluster, "s1")]
    assert states[:4] == ["NORMAL", "COMMUNICATION-INTERRUPTED", "RECOVER", "NORMAL"], states

    # leases s1 gave while cut off are capped at MCLT, and there was at least one
    from_s1 = [b for b in bound if b.server_id == SPOKE_IPS["s1"]]
    assert from_s1, [(b.ip, b.server_id) for b in bound]
    assert all(b.lease_time is not None and b.lease_time <= MCLT for b in from_s1)
    # every ACK is in etcd, for the client that got it; no address went to two clients
    bindings = cluster.bindings()
    ips = [b.ip for b in bound]
    assert len(set(ips)) == len(ips)
    for c, b in zip(clients, bound, strict=True):
        assert b.ip in bindings, (b.ip, s1.tail())
        assert bindings[b.ip]["hw"] == mac_of(c.host)
    for c in clients:
        held = [ip for ip, v in bindings.items() if v["hw"] == mac_of(c.host)]
        assert len(held) == 1, held  # one address per client, each in etcd once
    assert not (cluster.workdir / "s1.journal").read_bytes()
    for c in clients:
        c.stop()
    print(
        f"etcd cut detected in {detected:.1f} s; {len(from_s1)} of {len(bound)} clients "
        f"leased by s1 while cut off; restore -> NORMAL in {to_normal:.1f} s"
    )
