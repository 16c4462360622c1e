"""Maintenance: `hubspoke drain s1` hands s1's buckets and blocks over while clients are served.

A hub and three spokes; perfdhcp behind dhcrelay runs throughout (every ACK captured) and a
stream of real udhcpc clients starts during the drain: each must get a lease. s1's buckets
move at once; each of its blocks is handed over by s1 itself (it stops offering from the
block, waits for its offers to lapse, and writes the new owner). s1 then shows MAINTENANCE
with no buckets and no blocks, and `hubspoke undrain s1` gives it work again. Times are
printed, never asserted on.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.lab.clients import BOUND_REASONS, Udhcpc
from tests.lab.clusterlab import ClusterLab, lan_scope
from tests.lab.failover import (
    PerfRun,
    acks_match_etcd,
    blocks_of,
    duplicates,
)
from tests.lab.netlab import Segment
from tests.lab.topology import (
    RELAY_EDGE_IP,
    SPOKE_IPS,
    edge_scope,
    spokes_by_node,
    start_cluster,
    start_relay,
    status,
)

CLIENTS = 5

pytestmark = pytest.mark.cluster(scopes=[lan_scope(), edge_scope()])


def test_drain_hands_buckets_and_blocks_over_while_every_client_is_answered(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    start_cluster(cluster)
    s1_blocks = blocks_of(cluster, "s1")
    assert s1_blocks
    perf = PerfRun(start_relay(cluster, lan, tuple(SPOKE_IPS)), RELAY_EDGE_IP, tmp_path / "a.txt")
    perf.start(clients=200, rate=50, seconds=20)
    time.sleep(2.0)

    drained_at = time.monotonic()
    assert cluster.cli("drain", "s1")["draining"] is True
    clients = []
    for i in range(CLIENTS):
        c = Udhcpc(cluster.lab.host(f"c{i}", lan), tmp_path / f"c{i}")
        c.start()
        clients.append(c)
    leases = [c.wait_for(BOUND_REASONS, timeout=30) for c in clients]
    assert len({b.ip for b in leases}) == CLIENTS

    def drained() -> bool:
        s1 = spokes_by_node(status(cluster))["s1"]
        return s1["state"] == "MAINTENANCE" and s1["bucket_count"] == 0 and not s1["blocks"]

    cluster.wait_for("s1 drained", drained, within=60)
    took = time.monotonic() - drained_at
    s1 = spokes_by_node(status(cluster))["s1"]
    assert s1["live"] and s1["draining"], s1
    handed = {f"{e['scope']}/{e['block']}" for e in cluster.spokes["s1"].events("cluster.handover")}
    assert handed >= s1_blocks, (handed, s1_blocks)
    assert not blocks_of(cluster, "s1")
    output = perf.wait()
    acks = perf.acks()
    assert acks, output
    assert not duplicates(acks), duplicates(acks)
    assert not acks_match_etcd(cluster, "edge", acks)
    drops = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("drops:")]
    print(
        f"drain of s1: buckets and {len(s1_blocks)} blocks handed over in {took:.1f} s; "
        f"{CLIENTS} udhcpc clients started during the drain all bound (by "
        f"{sorted(str(b.server_id) for b in leases)}); perfdhcp {drops}"
    )

    assert cluster.cli("undrain", "s1")["draining"] is False

    def working() -> bool:
        s = spokes_by_node(status(cluster))["s1"]
        return bool(s["state"] != "MAINTENANCE" and s["bucket_count"] > 0 and s["blocks"])

    cluster.wait_for("s1 working again", working, within=30)
    # The spoke itself went to MAINTENANCE (answering nothing) once its buckets were gone,
    # and back to NORMAL when the drain was lifted.
    moves = [(e["from"], e["to"]) for e in cluster.spokes["s1"].events("failover.transition")]
    assert ("NORMAL", "MAINTENANCE") in moves and ("MAINTENANCE", "NORMAL") in moves, moves
    for c in clients:
        c.stop()
