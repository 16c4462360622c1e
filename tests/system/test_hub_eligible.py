"""A hub-eligible spoke takes the hub role when the dedicated hub dies or stops.

A dedicated hub process on `db` and two spokes, `s1` hub-eligible (it campaigns with its own
session and would run the role in-process) and `s2` not. The hub is killed with SIGKILL (its
leader key lingers until its session's TTL runs out) or stopped with SIGTERM (it resigns at
once). Takeover times are measured from the signal to s1's `hub.elected` log line and asserted
against the bounds docs/cluster.md publishes (`tests.lab.bounds`: the session TTL after a
crash, at once after a graceful stop, about a second for a returning hub process); DHCP clients
are served by the spokes throughout, including while no hub is elected.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.lab.bounds import HUB_HANDOVER, HUB_LOSS, HUB_RETURN
from tests.lab.clients import BOUND_REASONS, Udhcpc, mac_of
from tests.lab.clusterlab import DB_IP, HUB_PORT, ROOT, ClusterLab
from tests.lab.netlab import Segment

SPOKE_IPS = {"s1": "10.77.0.11", "s2": "10.77.0.12"}
HUBS = (f"{DB_IP}:{HUB_PORT}", f"{SPOKE_IPS['s1']}:{HUB_PORT}")
SESSION_TTL = 3  # the lab's session TTL for hubs and spokes


def status(cl: ClusterLab) -> dict[str, Any]:
    result: dict[str, Any] = cl.cli("status", hubs=HUBS)
    return result


def live_spokes(state: dict[str, Any]) -> set[str]:
    return {s["node"] for s in state.get("spokes", []) if s["live"]}


def start(cl: ClusterLab) -> dict[str, Any]:
    """The dedicated hub first (so it leads), then s1 (eligible) and s2; both balanced."""
    cl.add_hub().start(wait_ready=None)
    cl.wait_for("hub-1 elected", lambda: status(cl)["hub_node"] == "hub-1")
    cl.add_spoke("s1", SPOKE_IPS["s1"], hub_eligible=True).start()
    cl.add_spoke("s2", SPOKE_IPS["s2"]).start()

    def balanced() -> dict[str, Any] | None:
        state = status(cl)
        by = {s["node"]: s for s in state.get("spokes", [])}
        ok = all(
            n in by and by[n]["live"] and by[n]["bucket_count"] > 0 and by[n]["blocks"]
            for n in SPOKE_IPS
        )
        return state if ok else None

    first: dict[str, Any] = cl.wait_for("s1 and s2 with buckets and blocks", balanced)
    assert first["hub_node"] == "hub-1"
    members = cl.get_prefix("members/")
    s1, s2 = members[f"{ROOT}/members/s1"], members[f"{ROOT}/members/s2"]
    assert (s1["hub_eligible"], s1["grpc"]) == (True, f"{SPOKE_IPS['s1']}:{HUB_PORT}")
    # a spoke that is not hub-eligible advertises its health port (the hub's crash probe)
    assert (s2["hub_eligible"], s2["grpc"]) == (False, f"{SPOKE_IPS['s2']}:7501")
    cl.wait_for("s1 campaigning", lambda: cl.spokes["s1"].events("hub.campaigning"))
    return first


def elected_at(cl: ClusterLab) -> float:
    """Wall-clock time of s1's (first) `hub.elected` log line."""
    events = cl.wait_for("s1 elected", lambda: cl.spokes["s1"].events("hub.elected"))
    return float(events[0]["ts"])


def wait_promoted(cl: ClusterLab, first: dict[str, Any]) -> dict[str, Any]:
    """The CLI, given both addresses, answers from s1, with both spokes live."""

    def promoted() -> dict[str, Any] | None:
        state = status(cl)
        ok = state["hub_node"] == "s1" and live_spokes(state) == set(SPOKE_IPS)
        return state if ok else None

    state: dict[str, Any] = cl.wait_for("s1 in charge, both spokes live", promoted, within=30)
    assert int(state["epoch"]) > int(first["epoch"])
    return state


def test_kill_9_of_the_hub_hands_the_role_to_the_eligible_spoke_and_dhcp_never_pauses(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    first = start(cluster)
    hub = cluster.hubs["hub-1"]
    killed_at = time.time()
    assert hub.kill(signal.SIGKILL) == -signal.SIGKILL
    # A client that starts right after the kill is served while no hub is elected: hub-1's
    # leader key lives until its session expires, and the spokes do not need a hub to serve.
    c1 = cluster.lab.host("c1", lan)
    during = Udhcpc(c1, tmp_path / "c1")
    during.start()
    bound = during.wait_for(BOUND_REASONS)
    leased_at = time.time()
    assert bound.ip is not None and bound.server_id in SPOKE_IPS.values()

    state = wait_promoted(cluster, first)
    elected = elected_at(cluster)
    took = elected - killed_at
    print(
        f"s1 took the hub role {took:.2f} s after kill -9 of the hub (session TTL "
        f"{SESSION_TTL} s); a client started after the kill was bound "
        f"{leased_at - killed_at:.2f} s after it"
    )
    HUB_LOSS.check(took, "s1's hub.elected after kill -9 of the hub")
    assert leased_at < elected, "the client was bound only after the new hub was elected"
    assert cluster.bindings()[bound.ip]["hw"] == mac_of(c1)
    assert {s["node"] for s in state["spokes"]} >= set(SPOKE_IPS)

    # After the takeover: the new hub's API serves, and another client is served too.
    after = Udhcpc(cluster.lab.host("c2", lan), tmp_path / "c2")
    after.start()
    bound2 = after.wait_for(BOUND_REASONS)
    assert bound2.ip is not None and bound2.ip != bound.ip
    assert all(cluster.spokes[n].alive for n in SPOKE_IPS)
    during.stop()
    after.stop()


def test_sigterm_of_the_hub_hands_the_role_over_at_once(cluster: ClusterLab) -> None:
    first = start(cluster)
    hub = cluster.hubs["hub-1"]
    stopped_at = time.time()
    assert hub.kill(signal.SIGTERM) == 0
    wait_promoted(cluster, first)
    took = elected_at(cluster) - stopped_at
    print(
        f"s1 took the hub role {took:.3f} s after SIGTERM of the hub "
        f"(graceful hand-over; session TTL {SESSION_TTL} s)"
    )
    HUB_HANDOVER.check(took, "s1's hub.elected after SIGTERM of the hub")
    down = [e for e in hub.events("hub.stepped_down") if e.get("why") == "stopped"]
    assert down, hub.tail()
    assert all(cluster.spokes[n].alive for n in SPOKE_IPS)


def test_a_returning_hub_process_gets_the_role_back_from_the_spoke(
    cluster: ClusterLab, lan: Segment, tmp_path: Path
) -> None:
    """Spokes hold the role only while no hub process campaigns (DESIGN.md): when hub-1
    comes back, s1 resigns at once, hub-1 leads, s1 queues again, DHCP goes on."""
    first = start(cluster)
    hub = cluster.hubs["hub-1"]
    assert hub.kill(signal.SIGTERM) == 0
    promoted = wait_promoted(cluster, first)
    restarted_at = time.time()
    hub.start(wait_ready=None)

    def hub_back() -> dict[str, Any] | None:
        state = status(cluster)
        ok = state["hub_node"] == "hub-1" and live_spokes(state) == set(SPOKE_IPS)
        return state if ok else None

    back: dict[str, Any] = cluster.wait_for("hub-1 in charge again", hub_back, within=30)
    assert int(back["epoch"]) > int(promoted["epoch"])
    s1 = cluster.spokes["s1"]
    handed = [e for e in s1.events("hub.handing_back") if e.get("to") == "hub-1"]
    assert handed, s1.tail()
    why = "handed back to hub process hub-1"
    cluster.wait_for(
        "s1 stepped down (its API server stops after the resignation)",
        lambda: [e for e in s1.events("hub.stepped_down") if e.get("why") == why],
    )
    took = float(hub.events("hub.elected")[-1]["ts"]) - restarted_at
    print(f"hub-1 led again {took:.2f} s after its restart")
    HUB_RETURN.check(took, "hub-1's hub.elected after its restart")
    # s1 campaigns again (queued behind hub-1) and goes on serving DHCP
    assert len(s1.events("hub.campaigning")) >= 2
    c = Udhcpc(cluster.lab.host("c3", lan), tmp_path / "c3")
    c.start()
    bound = c.wait_for(BOUND_REASONS)
    assert bound.ip is not None and bound.server_id in SPOKE_IPS.values()
    c.stop()
    assert all(cluster.spokes[n].alive for n in SPOKE_IPS)
