"""The cluster topology of the system tests: three spokes on the lan, the hub on `db`, and an
edge segment where perfdhcp sits behind ISC dhcrelay.

perfdhcp behaves as a relay agent and sends to one address, so load reaches the spokes through
dhcrelay configured with every spoke as a server (as a relay with several helper addresses does
in production); each spoke answers only the clients in its buckets, back to perfdhcp (the
giaddr) through the relay host, which routes. Also: start the spokes then the hub and wait until
the plan is balanced, and read the CLI's status.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.lab.clusterlab import ClusterLab, lan_scope
from tests.lab.netlab import Host, Segment

RELAY_IP = "10.77.0.5"
RELAY_EDGE_IP = "10.78.0.1"
PERF_IP = "10.78.0.6"
SPOKE_IPS = {"s1": "10.77.0.11", "s2": "10.77.0.12", "s3": "10.77.0.13"}


def start_cluster(cl: ClusterLab, spokes: tuple[str, ...] = ("s1", "s2", "s3")) -> None:
    """Spokes first, then the hub: its first plan sees them all and shares evenly."""
    for name in spokes:
        cl.add_spoke(name, SPOKE_IPS[name]).start()
    cl.add_hub().start(wait_ready=None)
    wait_balanced(cl, spokes)


def status(cl: ClusterLab) -> dict[str, Any]:
    result: dict[str, Any] = cl.cli("status")
    return result


def spokes_by_node(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["node"]: s for s in state.get("spokes", [])}


def wait_balanced(cl: ClusterLab, spokes: tuple[str, ...], within: float = 30.0) -> None:
    """Every named spoke is live with buckets and at least one block."""

    def ready() -> bool:
        by = spokes_by_node(status(cl))
        return all(
            n in by and by[n]["live"] and by[n]["bucket_count"] > 0 and by[n]["blocks"]
            for n in spokes
        )

    cl.wait_for(f"buckets and blocks for {spokes}", ready, within)


def edge_scope(**overrides: Any) -> dict[str, Any]:
    """The relayed scope perfdhcp draws from: giaddr 10.78.0.6 lies in its subnet."""
    fields: dict[str, Any] = {
        "name": "edge",
        "subnet": "10.78.0.0/22",
        "pools": ["10.78.1.0-10.78.2.255"],
        "options": {"routers": [RELAY_EDGE_IP]},
    }
    return lan_scope(**(fields | overrides))


def start_relay(cl: ClusterLab, lan: Segment, servers: tuple[str, ...]) -> Host:
    """An edge segment with perfdhcp's host, and dhcrelay routing between it and the lan.

    dhcrelay listens on the edge and forwards every request to each spoke in `servers`; the
    spokes reach the edge (perfdhcp, the giaddr) through the relay host, which forwards IP.
    """
    edge = cl.lab.segment("edge", subnet="10.78.0.0/24")
    relay = cl.lab.host("relay", [lan, edge], [f"{RELAY_IP}/24", f"{RELAY_EDGE_IP}/24"])
    relay.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for name in cl.spokes:
        cl.spokes[name].host.run(["ip", "route", "add", "10.78.0.0/24", "via", RELAY_IP])
    perf = cl.lab.host("perf", edge, f"{PERF_IP}/24")
    perf.run(["ip", "route", "add", "10.77.0.0/24", "via", RELAY_EDGE_IP])
    relay.popen(
        ["dhcrelay", "-d", "-4", "-pf", str(cl.workdir / "dhcrelay.pid"),
         "-id", relay.ifname(edge), "-iu", relay.ifname(lan)]
        + [SPOKE_IPS[s] for s in servers],
        stdout=(cl.workdir / "dhcrelay.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(1.0)
    return perf
