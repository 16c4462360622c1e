"""The one-to-one model: two spokes, both hub-eligible, no hub process.

The hub role runs inside whichever spoke holds the election and seeds the scopes from its
`hub.scopes`. `hub.model: hot-standby` with `primary: s1` gives s1 every bucket (s2 has weight
0 and gets buckets only while s1 is down); `load-balancing` splits them evenly. Load comes from
perfdhcp behind dhcrelay (forwarding to both spokes) with every ACK captured. Takeover times are
asserted against the bounds docs/cluster.md publishes (`tests.lab.bounds`: the standby
serves within the session TTL + 1 s of the primary's crash, the primary having run the hub
role too; a load-balancing survivor within the crash probe's 1 s).
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from tests.lab.bounds import CRASH, STANDBY
from tests.lab.clusterlab import HUB_PORT, ClusterLab, lan_scope
from tests.lab.failover import (
    PerfRun,
    acks_match_etcd,
    bucket_map,
    duplicates,
    wait_until,
)
from tests.lab.netlab import Segment
from tests.lab.topology import RELAY_EDGE_IP, SPOKE_IPS, edge_scope, start_relay

NODES = ("s1", "s2")
HUBS = tuple(f"{SPOKE_IPS[n]}:{HUB_PORT}" for n in NODES)
SESSION_TTL = 3


def start_pair(cl: ClusterLab, model: str) -> None:
    """s1 then s2, both eligible, with the hub role's model, planner and seed scopes."""
    for node in NODES:
        proc = cl.add_spoke(node, SPOKE_IPS[node], hub_eligible=True)
        path = cl.workdir / f"{node}.yaml"
        cfg: dict[str, Any] = yaml.safe_load(path.read_text())
        cfg["hub"] |= {
            "model": model,
            "primary": "s1",
            "planner": {"interval": 0.5, "max_interrupted": 2, "mclt": 3},
            "scopes": [lan_scope(), edge_scope()],
        }
        path.write_text(yaml.safe_dump(cfg))
        proc.start()


def counts(cl: ClusterLab) -> dict[str, int]:
    return bucket_map(cl).counts()


def spokes(cl: ClusterLab) -> dict[str, dict[str, Any]]:
    state = cl.cli("status", hubs=HUBS)
    return {s["node"]: s for s in state.get("spokes", [])}


def wait_state(cl: ClusterLab, want: dict[str, int], within: float = 30.0) -> float:
    """Wait until the bucket counts are `want`; seconds it took."""
    t0 = time.monotonic()
    wait_until(f"bucket counts {want}", lambda: counts(cl) == want, within)
    return time.monotonic() - t0


def no_resync(cl: ClusterLab, node: str) -> None:
    bad = [e for e in cl.spokes[node].events() if "watch_compacted" in str(e.get("event"))]
    assert not bad, bad


def test_hot_standby_fails_over_to_the_standby_and_back_without_a_pause(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    start_pair(cluster, "hot-standby")
    wait_state(cluster, {"s1": 256})
    cluster.wait_for("both with blocks", lambda: all(s["blocks"] for s in spokes(cluster).values()))
    perf = PerfRun(start_relay(cluster, lan, NODES), RELAY_EDGE_IP, tmp_path / "acks.txt")
    perf.start(clients=150, rate=50, seconds=26)
    time.sleep(3.0)

    killed_at = time.time()
    assert cluster.spokes["s1"].kill(signal.SIGKILL) == -signal.SIGKILL
    took_over = wait_state(cluster, {"s2": 256})
    time.sleep(3.0)
    restarted_at = time.time()
    cluster.spokes["s1"].start()
    took_back = wait_state(cluster, {"s1": 256})
    output = perf.wait()
    acks = perf.acks()

    by_s2 = [a for a in acks if a.at > killed_at and a.server == SPOKE_IPS["s2"]]
    assert by_s2, output
    first_s2 = min(a.at for a in by_s2) - killed_at
    around = sorted(a.at for a in acks if a.at > restarted_at - 1.0)
    gap = max((b - a for a, b in itertools.pairwise(around)), default=0.0)
    assert [a for a in acks if a.at > restarted_at + took_back + 1.0], "no ACKs after s1 is back"
    print(
        f"hot-standby: kill -9 of the primary (and hub) -> s2 owns every bucket after "
        f"{took_over:.2f} s and ACKs after {first_s2:.2f} s (TTL {SESSION_TTL} s); the restarted "
        f"primary took its buckets back {took_back:.2f} s after it was ready; longest gap between "
        f"ACKs around its return {gap * 1000:.0f} ms at 50 exchanges/s"
    )
    STANDBY.check(first_s2, "s2's first ACK after kill -9 of the primary")
    no_resync(cluster, "s1")
    assert not duplicates(acks), duplicates(acks)
    assert not acks_match_etcd(cluster, "edge", acks)


def test_load_balancing_splits_evenly_and_the_survivor_takes_all(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    start_pair(cluster, "load-balancing")
    wait_state(cluster, {"s1": 128, "s2": 128})
    perf = PerfRun(start_relay(cluster, lan, NODES), RELAY_EDGE_IP, tmp_path / "acks.txt")
    perf.start(clients=150, rate=50, seconds=12)
    time.sleep(3.0)
    killed_at = time.time()
    assert cluster.spokes["s2"].kill(signal.SIGKILL) == -signal.SIGKILL
    took = wait_state(cluster, {"s1": 256})
    output = perf.wait()
    acks = perf.acks()
    s2_before = {a.bucket for a in acks if a.at < killed_at and a.server == SPOKE_IPS["s2"]}
    after = [a for a in acks if a.at > killed_at and a.bucket in s2_before]
    assert after and all(a.server == SPOKE_IPS["s1"] for a in after), output
    first = min(a.at for a in after) - killed_at
    print(
        f"load-balancing: kill -9 of s2 -> s1 owns every bucket after {took:.2f} s, first ACK "
        f"for a client of s2's buckets after {first:.3f} s"
    )
    CRASH.check(first, "s1's first ACK for a client of s2's buckets after kill -9 of s2")
    assert not duplicates(acks), duplicates(acks)
    assert not acks_match_etcd(cluster, "edge", acks)
