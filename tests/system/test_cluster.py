"""A hub and several spokes on one LAN segment, with real clients and real processes.

perfdhcp behaves as a relay agent and sends to one address, so load reaches the spokes through
ISC dhcrelay configured with every spoke as a server: perfdhcp sits on an edge segment
(10.78.0.0/24), dhcrelay joins the edge and the lan and forwards each request to all the spokes,
as a relay with several helper addresses does in production, and each spoke answers only the
clients in its buckets, back to perfdhcp (the giaddr) through the relay host, which routes.
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.bounds import HUB_LOSS
from tests.lab.clients import BOUND_REASONS, Dhclient
from tests.lab.clusterlab import DB_IP, HUB_PORT, ClusterLab, lan_scope
from tests.lab.netlab import Host, Segment
from tests.lab.topology import (
    RELAY_EDGE_IP,
    SPOKE_IPS,
    edge_scope,
    spokes_by_node,
    start_cluster,
    start_relay,
    status,
    wait_balanced,
)


def run_perfdhcp(
    host: Host, clients: int, exchanges: int, rate: int, capture: Path
) -> tuple[list[tuple[str, str, str]], str]:
    """perfdhcp through the relay; returns every ACK seen (ip, mac, server id) and its output."""
    cap = host.popen(
        [sys.executable, "-m", "tests.lab.ackcapture", "eth0", str(capture), "--with-server"]
    )
    deadline = time.monotonic() + 15
    while not (capture.exists() and capture.read_text().startswith("# ready")):
        assert cap.poll() is None and time.monotonic() < deadline, "ack capture did not start"
        time.sleep(0.05)
    done = host.run(
        ["perfdhcp", "-4", "-l", "eth0", "-R", str(clients), "-r", str(rate), "-n",
         str(exchanges), "-W", "3000000", RELAY_EDGE_IP],
        check=False,
        timeout=180,
    )  # fmt: skip
    host.stop(cap)
    acks = []
    for line in capture.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, ip, mac, _, sid = line.split()
        acks.append((ip, mac, sid))
    return acks, done.stdout


def test_300_clients_get_300_distinct_addresses_from_three_spokes(
    cluster: ClusterLab, lan: Segment
) -> None:
    cluster.scopes = [lan_scope(), edge_scope()]
    start_cluster(cluster)
    perf = start_relay(cluster, lan, ("s1", "s2", "s3"))
    acks, out = run_perfdhcp(perf, 300, 4000, 400, cluster.workdir / "acks.txt")
    by_client: dict[str, set[str]] = collections.defaultdict(set)
    by_ip: dict[str, set[str]] = collections.defaultdict(set)
    per_server: collections.Counter[str] = collections.Counter()
    for ip, mac, sid in acks:
        by_client[mac].add(ip)
        by_ip[ip].add(mac)
        per_server[sid] += 1
    assert len(by_client) == 300, f"{len(by_client)} clients acknowledged\n{out}"
    assert all(len(v) == 1 for v in by_client.values()), "a client got two addresses"
    assert all(len(v) == 1 for v in by_ip.values()), "an address went to two clients"
    assert len(by_ip) == 300
    # Each spoke served roughly its share of the buckets (a third each).
    served_clients: collections.Counter[str] = collections.Counter()
    first_sid: dict[str, str] = {}
    for _ip, mac, sid in acks:
        first_sid.setdefault(mac, sid)
    served_clients.update(first_sid.values())
    assert set(served_clients) == set(SPOKE_IPS.values())
    for sid, n in served_clients.items():
        assert 50 <= n <= 150, f"spoke {sid} served {n} of 300 clients: {served_clients}"
    # etcd holds exactly those bindings, each written by the spoke that acknowledged it.
    bindings = cluster.bindings("edge")
    node_of = {ip: name for name, ip in SPOKE_IPS.items()}
    for ip, mac, _sid in acks:
        assert bindings[ip]["hw"] == mac
    for mac, sid in first_sid.items():
        ip = next(iter(by_client[mac]))
        assert bindings[ip]["node"] == node_of[sid]


def test_skewed_load_makes_the_hub_grant_blocks_to_the_busy_spoke(
    cluster: ClusterLab, lan: Segment
) -> None:
    cluster.scopes = [lan_scope(), edge_scope(pools=["10.78.1.0-10.78.1.255"])]
    cluster.planner = {"interval": 0.5, "low_watermark": 8, "block_size": 16}
    start_cluster(cluster)
    before = spokes_by_node(status(cluster))
    # Only s1 hears this traffic: it answers the clients in its buckets, and runs low.
    perf = start_relay(cluster, lan, ("s1",))
    acks, out = run_perfdhcp(perf, 240, 2400, 200, cluster.workdir / "acks.txt")
    assert acks, out

    def s1_grew() -> bool:
        by = spokes_by_node(status(cluster))
        return len(by["s1"]["blocks"]) > len(before["s1"]["blocks"])

    cluster.wait_for("a block granted to s1", s1_grew, within=30)
    after = spokes_by_node(status(cluster))
    assert len(after["s1"]["blocks"]) > max(len(after["s2"]["blocks"]), len(after["s3"]["blocks"]))
    hub = cluster.hubs["hub-1"]
    grants = [e for e in hub.events("hub.move") if e.get("to") == "s1"]
    assert grants, hub.tail()
    assert all(e["event"].startswith("hub.move: ") for e in grants)


def test_a_spoke_started_later_is_given_buckets_and_blocks(cluster: ClusterLab) -> None:
    start_cluster(cluster, ("s1", "s2"))
    counts = {n: s["bucket_count"] for n, s in spokes_by_node(status(cluster)).items()}
    assert sum(counts.values()) == 256
    cluster.add_spoke("s3", SPOKE_IPS["s3"]).start()
    wait_balanced(cluster, ("s1", "s2", "s3"))
    by = spokes_by_node(status(cluster))
    assert sum(by[n]["bucket_count"] for n in ("s1", "s2", "s3")) == 256
    for n in ("s1", "s2", "s3"):
        assert 80 <= by[n]["bucket_count"] <= 90
    # Only buckets that had to move moved: s1 and s2 each gave up about a third.
    for n in ("s1", "s2"):
        assert by[n]["bucket_count"] <= counts[n]
    assert cluster.spokes["s1"].starts == cluster.spokes["s2"].starts == 1


def test_kill_9_of_the_hub_promotes_another_and_the_cli_answers_from_it(
    cluster: ClusterLab, lan: Segment
) -> None:
    cluster.add_hub().start(wait_ready=None)
    cluster.wait_for("hub-1 elected", lambda: cluster.hubs["hub-1"].events("hub.elected"))
    standby_host = cluster.lab.host("db2", lan, "10.77.0.4/24")
    cluster.add_hub("hub-2", standby_host).start(wait_ready=None)
    for name in ("s1", "s2"):
        cluster.add_spoke(name, SPOKE_IPS[name]).start()
    wait_balanced(cluster, ("s1", "s2"))
    hubs = (f"{DB_IP}:{HUB_PORT}", f"10.77.0.4:{HUB_PORT}")
    first = cluster.cli("status", hubs=hubs)
    assert first["hub_node"] == "hub-1"
    killed_at = time.time()
    assert cluster.hubs["hub-1"].kill(signal.SIGKILL) == -signal.SIGKILL

    def promoted() -> dict[str, Any] | None:
        state: dict[str, Any] = cluster.cli("status", hubs=hubs)
        return state if state["hub_node"] == "hub-2" else None

    state = cluster.wait_for("hub-2 in charge", promoted, within=30)
    took = float(cluster.hubs["hub-2"].events("hub.elected")[0]["ts"]) - killed_at
    assert int(state["epoch"]) > int(first["epoch"])
    assert {s["node"] for s in state["spokes"] if s["live"]} == {"s1", "s2"}
    print(f"hub role taken over {took:.2f} s after kill -9 (session TTL 3 s)")
    HUB_LOSS.check(took, "hub-2's hub.elected after kill -9 of hub-1")


def test_a_scope_change_reaches_dhclients_next_renewal(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    cluster.scopes = [lan_scope(lease_time=20, t1=4, t2=15)]
    start_cluster(cluster, ("s1", "s2"))
    client = Dhclient(cluster.lab.host("c1", lan), tmp_path / "dhclient")
    client.start()
    bound = client.wait_for(BOUND_REASONS)
    assert bound.dns == ("10.77.0.53",)
    scope = cluster.cli("scopes", "show", "lan")
    doc = scope.get("scope", scope)
    doc["options"]["dns_servers"] = ["10.77.0.99"]
    path = tmp_path / "lan.json"
    path.write_text(json.dumps(doc))
    cluster.cli("scopes", "update", "lan", str(path))
    renewed = client.wait_for({"RENEW"}, after=bound.seq, timeout=40)
    assert renewed.ip == bound.ip
    assert renewed.dns == ("10.77.0.99",)
    client.stop()
