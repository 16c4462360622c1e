"""Chaos against hubspoke: the cluster of one fault run, the faults, and running one of them.

Layout (lan 10.77.0.0/24): etcd on `db` (10.77.0.3) or a 3-member cluster on `e1`-`e3`
(10.77.0.21-23), the hub alone on `hubh` (10.77.0.4, so "etcd only" and "hub only" cuts are
different routes), spokes `s1`-`s3` (10.77.0.11-13), session TTL 3 s; perfdhcp behind dhcrelay
(`tests.support.chaos`). Each fault acts on `s1` (the victim) or on a shared component, is held
for its duration, then undone; after the load the spokes are given time to replay journals, and
the bindings are read from etcd for the checks.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hub.assign import BucketMap
from tests.support.chaos import (
    CHAOS_POOL_FIRST,
    CHAOS_POOL_LAST,
    CHAOS_SUBNET,
    Binding,
    LoadRun,
    Outcome,
    edge_route,
    evaluate,
    start_edge,
)
from tests.support.clusterlab import DB_IP, HUB_PORT, ROOT, ClusterLab, lan_scope
from tests.support.netlab import Host, Lab

SYSTEM = "hubspoke"
SPOKE_IPS = {"s1": "10.77.0.11", "s2": "10.77.0.12", "s3": "10.77.0.13"}
HUB_HOST_IP = "10.77.0.4"
ETCD_MEMBER_IPS = ("10.77.0.21", "10.77.0.22", "10.77.0.23")
VICTIM = "s1"
SCOPE = "edge"
INTERRUPTED_AFTER = 2.5
MAX_INTERRUPTED = 10.0
MCLT = 60  # leases given while cut off outlive the run, so the end-of-run check sees them
SETTLE_S = 60.0


def chaos_scope() -> dict[str, Any]:
    return lan_scope(
        name=SCOPE,
        subnet=CHAOS_SUBNET,
        pools=[f"{CHAOS_POOL_FIRST}-{CHAOS_POOL_LAST}"],
        options={"routers": ["10.78.0.1"]},
    )


@dataclass
class Cluster:
    """One run's cluster and load host."""

    cl: ClusterLab
    perf: Host

    @property
    def hub_addr(self) -> str:
        return f"{HUB_HOST_IP}:{HUB_PORT}"

    def status(self) -> dict[str, Any]:
        state: dict[str, Any] = self.cl.cli("status", hubs=(self.hub_addr,))
        return state

    def buckets_of(self, node: str) -> frozenset[int]:
        raw = self.cl.etcd.etcdctl("get", f"{ROOT}/assign/buckets", "--print-value-only")
        return BucketMap.decode(raw.strip().encode()).buckets_of(node)

    def spoke_host(self, node: str) -> Host:
        return self.cl.spokes[node].host

    def store(self) -> dict[str, Binding]:
        out = {}
        for ip, b in self.cl.bindings(SCOPE).items():
            if b.get("state") == "bound":
                out[ip] = Binding(ip, str(b["hw"]).lower(), float(b["start"]), float(b["expires"]))
        return out


def build(lab: Lab, workdir: Path, *, etcd_members: int = 1) -> Cluster:
    lan = lab.segment("lan", subnet="10.77.0.0/24")
    if etcd_members == 1:
        cl = ClusterLab.create(lab, lan, workdir)
    else:
        cl = ClusterLab.create_with_etcd_cluster(lab, lan, workdir, ETCD_MEMBER_IPS[:etcd_members])
    cl.planner = {"interval": 0.5, "max_interrupted": MAX_INTERRUPTED, "mclt": MCLT}
    cl.scopes = [lan_scope(), chaos_scope()]
    for node, ip in SPOKE_IPS.items():
        proc = cl.add_spoke(node, ip)
        path = workdir / f"{node}.yaml"
        cfg = yaml.safe_load(path.read_text())
        cfg["failover"] = {
            "interrupted_after": INTERRUPTED_AFTER,
            "max_interrupted": MAX_INTERRUPTED,
            "mclt": MCLT,
            "journal": str(workdir / f"{node}.journal"),
        }
        path.write_text(yaml.safe_dump(cfg))
        proc.start()
    hub_host = lab.host("hubh", lan, f"{HUB_HOST_IP}/24")
    cl.add_hub(host=hub_host).start(wait_ready=None)
    cluster = Cluster(cl, start_edge(lab, lan, [p.host for p in cl.spokes.values()], workdir))

    def balanced() -> bool:
        by = {s["node"]: s for s in cluster.status().get("spokes", [])}
        return all(
            n in by and by[n]["live"] and by[n]["bucket_count"] > 0 and by[n]["blocks"]
            for n in SPOKE_IPS
        )

    cl.wait_for("buckets and blocks for every spoke", balanced, within=60)
    return cluster


# -- faults -------------------------------------------------------------------------------------
Action = Callable[[Cluster], None]


def _nothing(c: Cluster) -> None:
    return None


def _kill_spoke(c: Cluster) -> None:
    c.cl.spokes[VICTIM].kill(signal.SIGKILL)


def _kill_hub(c: Cluster) -> None:
    c.cl.hubs["hub-1"].kill(signal.SIGKILL)


def _stop_spoke(c: Cluster) -> None:
    c.cl.spokes[VICTIM].send(signal.SIGSTOP)


def _cont_spoke(c: Cluster) -> None:
    c.cl.spokes[VICTIM].send(signal.SIGCONT)


def _link_down(c: Cluster) -> None:
    c.spoke_host(VICTIM).run(["ip", "link", "set", "eth0", "down"])


def _link_up(c: Cluster) -> None:
    host = c.spoke_host(VICTIM)
    host.run(["ip", "link", "set", "eth0", "up"])
    edge_route(host)


def _blackhole(ip: str) -> tuple[Action, Action]:
    def cut(c: Cluster) -> None:
        c.spoke_host(VICTIM).run(["ip", "route", "add", "blackhole", f"{ip}/32"])

    def heal(c: Cluster) -> None:
        c.spoke_host(VICTIM).run(["ip", "route", "del", "blackhole", f"{ip}/32"])

    return cut, heal


def _stop_etcd(c: Cluster) -> None:
    c.cl.etcd.stop()


def _start_etcd(c: Cluster) -> None:
    c.cl.etcd.start()


def _kill_etcd_member(c: Cluster) -> None:
    c.cl.etcd.kill()  # e1: the first endpoint every process dials


_cut_etcd, _heal_etcd = _blackhole(DB_IP)
_cut_hub, _heal_hub = _blackhole(HUB_HOST_IP)


@dataclass(frozen=True)
class Fault:
    """A fault: injected, held `hold` seconds (bench; tests pass shorter), then undone."""

    name: str
    inject: Action
    restore: Action
    hold: float
    victim: str | None = VICTIM  # whose clients are "the faulted side's"
    etcd_members: int = 1


FAULTS: tuple[Fault, ...] = (
    Fault("kill -9 spoke", _kill_spoke, _nothing, 0.0),
    Fault("kill -9 hub", _kill_hub, _nothing, 0.0, victim=None),
    Fault("SIGSTOP spoke 10 s (> TTL)", _stop_spoke, _cont_spoke, 10.0),
    Fault("spoke link down 20 s", _link_down, _link_up, 20.0),
    Fault("spoke cut from etcd only 30 s", _cut_etcd, _heal_etcd, 30.0),
    Fault("spoke cut from hub only 20 s", _cut_hub, _heal_hub, 20.0),
    Fault("etcd (1 member) stopped 20 s", _stop_etcd, _start_etcd, 20.0, victim=None),
    Fault("kill -9 of 1 of 3 etcd members", _kill_etcd_member, _nothing, 0.0, None, 3),
)


def settle(c: Cluster, within: float = SETTLE_S) -> str:
    """Wait (bounded) until every running spoke's journal is empty and it is NORMAL; a note."""
    deadline = time.monotonic() + within
    pending: list[str] = []
    while time.monotonic() < deadline:
        pending = []
        for node, proc in c.cl.spokes.items():
            if not proc.alive:
                continue
            journal = c.cl.workdir / f"{node}.journal"
            states = [e.get("to") for e in proc.events("failover.transition")]
            if (journal.exists() and journal.stat().st_size) or states[-1:] not in ([], ["NORMAL"]):
                pending.append(f"{node}:{states[-1:]}")
        if not pending:
            return ""
        time.sleep(0.5)
    return f"not settled in {within:.0f} s: {' '.join(pending)}"


def transitions(c: Cluster, node: str) -> list[str]:
    return [str(e.get("to")) for e in c.cl.spokes[node].events("failover.transition")]


def run_fault(
    fault: Fault,
    lab: Lab,
    workdir: Path,
    *,
    hold: float | None = None,
    rate: int = 150,
    pre: float = 3.0,
    post: float = 10.0,
) -> Outcome:
    """Build a fresh cluster, run the load with `fault` in it, and check the outcome."""
    c = build(lab, workdir, etcd_members=fault.etcd_members)
    held = fault.hold if hold is None else hold
    victim_buckets = c.buckets_of(fault.victim) if fault.victim else None
    leader = c.cl.etcd_cluster.leader() if c.cl.etcd_cluster else None
    load = LoadRun(c.perf, workdir / "acks.txt")
    load.start(rate=rate, seconds=round(pre + held + post))
    time.sleep(pre)
    fault_at = time.time()
    fault.inject(c)
    try:
        time.sleep(held)
    finally:
        fault.restore(c)
    load.wait()
    notes = [settle(c)]
    if leader is not None:
        notes.append(f"killed e1 ({'the leader' if leader == 'e1' else 'a follower'})")
    if fault.victim and c.cl.spokes[fault.victim].alive:
        notes.append(f"{fault.victim}: {'>'.join(s[:6] for s in transitions(c, fault.victim))}")
    acks = load.acks()
    store = c.store()
    return evaluate(
        fault=fault.name,
        system=SYSTEM,
        acks=acks,
        store=store,
        read_at=time.time(),
        fault_at=fault_at,
        end_at=load.ends_at,
        victim_buckets=victim_buckets,
        notes="; ".join(n for n in notes if n),
    )
