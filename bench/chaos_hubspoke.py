"""Chaos against hubspoke: the cluster of one fault run, the faults, and running one of them.

Layout (lan 10.77.0.0/24): etcd on `db` (10.77.0.3) or a 3-member cluster on `e1`-`e3`
(10.77.0.21-23), the hub alone on `hubh` (10.77.0.4, so "etcd only" and "hub only" cuts are
different routes), spokes `s1`-`s3` (10.77.0.11-13), session TTL 3 s and the failover timings
the spoke ships with (`spoke/config.py`); perfdhcp behind dhcrelay (`tests.lab.chaos`). Each
fault acts on `s1` (the victim) or on a shared component, is held for its duration, then undone;
after the load the spokes are given time to replay journals, and the bindings are read from etcd
for the checks. `bench/soak.py` runs the same faults, one after another, on one cluster: a
fault's `repair` (a restart of what it killed) brings that cluster back to full strength.

Each fault names the takeover bound the docs publish for it (`tests.lab.bounds`): the
tests assert it (`tests/system/test_chaos.py`, `tests/system/test_etcd_faults.py`) and the soak
reports it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hubspoke.assign import BucketMap
from tests.lab import bounds
from tests.lab.bounds import (
    CRASH,
    ETCD_DOWN,
    MEMBER_LAB,
    MEMBER_SHIPPED,
    NO_PAUSE,
    QUORUM,
    SILENT,
    Bound,
)
from tests.lab.chaos import (
    CHAOS_POOL_FIRST,
    CHAOS_POOL_LAST,
    CHAOS_SUBNET,
    Ack,
    Binding,
    LoadRun,
    Outcome,
    edge_route,
    evaluate,
    longest_gap,
    start_edge,
)
from tests.lab.clusterlab import HUB_PORT, ROOT, ClusterLab, Proc, lan_scope
from tests.lab.etcd import EtcdMember, EtcdServer, clear_nospace, fill_until_nospace
from tests.lab.netlab import Host, Lab

SYSTEM = "hubspoke"
SPOKE_IPS = {"s1": "10.77.0.11", "s2": "10.77.0.12", "s3": "10.77.0.13"}
HUB_HOST_IP = "10.77.0.4"
ETCD_MEMBER_IPS = ("10.77.0.21", "10.77.0.22", "10.77.0.23")
VICTIM = "s1"
SCOPE = "edge"
SESSION_TTL = bounds.SESSION_TTL  # hub and spokes (the shipped default)
# The spoke's failover timings as shipped (spoke/config.py); the hub planner's match them.
INTERRUPTED_AFTER = bounds.INTERRUPTED_AFTER
MAX_INTERRUPTED = 30.0
MCLT = 60  # leases given while cut off outlive a run, so the end-of-run check sees them
PLANNER_INTERVAL = 0.5
SETTLE_S = 60.0
LAB_MEMBER_TIMINGS = (50, 500)  # heartbeat, election (ms) of the lab's 3-member etcd
QUOTA_BYTES = 16 * 1024 * 1024  # the NOSPACE fault's etcd: filled in about a second


# -- the cluster ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What a run's cluster is built with."""

    etcd_members: int = 1
    etcd_args: tuple[str, ...] = ()
    shipped_etcd_timings: bool = False  # etcd's defaults (deploy/) instead of the lab's fast ones
    lease_time: int = 300  # the relayed scope's
    spokes: tuple[str, ...] = tuple(SPOKE_IPS)


def chaos_scope(lease_time: int = 300) -> dict[str, Any]:
    return lan_scope(
        name=SCOPE,
        subnet=CHAOS_SUBNET,
        pools=[f"{CHAOS_POOL_FIRST}-{CHAOS_POOL_LAST}"],
        options={"routers": ["10.78.0.1"]},
        lease_time=lease_time,
    )


@dataclass
class Cluster:
    """One run's cluster and load host; `held` keeps what a fault froze or killed."""

    cl: ClusterLab
    perf: Host
    setup: Setup = field(default_factory=Setup)
    held: list[EtcdServer] = field(default_factory=list)

    @property
    def hub_addr(self) -> str:
        return f"{HUB_HOST_IP}:{HUB_PORT}"

    @property
    def etcd_ips(self) -> list[str]:
        return [s.host for s in self.cl.etcd_servers]

    def status(self) -> dict[str, Any]:
        state: dict[str, Any] = self.cl.cli("status", hubs=(self.hub_addr,))
        return state

    def spokes_by_node(self) -> dict[str, dict[str, Any]]:
        return {s["node"]: s for s in self.status().get("spokes", [])}

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

    def balanced(self) -> bool:
        """Every spoke live, NORMAL, with buckets and blocks (the hub's view)."""
        by = self.spokes_by_node()
        return all(
            n in by
            and by[n]["live"]
            and by[n]["state"] == "NORMAL"
            and by[n]["bucket_count"] > 0
            and by[n]["blocks"]
            for n in self.cl.spokes
        )


def spoke_config(cl: ClusterLab, node: str) -> None:
    """The chaos spoke: shipped failover timings, journal in the work directory."""
    path = cl.workdir / f"{node}.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["failover"] = {
        "interrupted_after": INTERRUPTED_AFTER,
        "max_interrupted": MAX_INTERRUPTED,
        "mclt": MCLT,
        "journal": str(cl.workdir / f"{node}.journal"),
    }
    cfg["cluster"]["session_ttl"] = SESSION_TTL
    path.write_text(yaml.safe_dump(cfg))


def build(lab: Lab, workdir: Path, setup: Setup | None = None) -> Cluster:
    setup = setup or Setup()
    lan = lab.segment("lan", subnet="10.77.0.0/24")
    if setup.etcd_members == 1:
        cl = ClusterLab.create(lab, lan, workdir, etcd_args=setup.etcd_args)
    else:
        cl = ClusterLab.create_with_etcd_cluster(
            lab,
            lan,
            workdir,
            ETCD_MEMBER_IPS[: setup.etcd_members],
            etcd_args=setup.etcd_args,
            timings=None if setup.shipped_etcd_timings else LAB_MEMBER_TIMINGS,
        )
    cl.planner = {
        "interval": PLANNER_INTERVAL,
        "max_interrupted": MAX_INTERRUPTED,
        "mclt": MCLT,
    }
    cl.scopes = [lan_scope(), chaos_scope(setup.lease_time)]
    for node in setup.spokes:
        proc = cl.add_spoke(node, SPOKE_IPS[node])
        spoke_config(cl, node)
        proc.start()
    hub_host = lab.host("hubh", lan, f"{HUB_HOST_IP}/24")
    cl.add_hub(host=hub_host).start(wait_ready=None)
    cluster = Cluster(cl, start_edge(lab, lan, [p.host for p in cl.spokes.values()], workdir))
    cluster.setup = setup
    cl.wait_for("buckets and blocks for every spoke", cluster.balanced, within=60)
    return cluster


# -- faults -------------------------------------------------------------------------------------
Action = Callable[[Cluster], None]


def _nothing(c: Cluster) -> None:
    return None


def _kill_spoke(c: Cluster) -> None:
    c.cl.spokes[VICTIM].kill(signal.SIGKILL)


def _restart_spoke(c: Cluster) -> None:
    proc = c.cl.spokes[VICTIM]
    if not proc.alive:
        proc.start()


def _kill_hub(c: Cluster) -> None:
    c.cl.hubs["hub-1"].kill(signal.SIGKILL)


def _restart_hub(c: Cluster) -> None:
    proc = c.cl.hubs["hub-1"]
    if not proc.alive:
        proc.start(wait_ready=None)


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


def _blackhole(ips: Callable[[Cluster], list[str]]) -> tuple[Action, Action]:
    def cut(c: Cluster) -> None:
        for ip in ips(c):
            c.spoke_host(VICTIM).run(["ip", "route", "add", "blackhole", f"{ip}/32"])

    def heal(c: Cluster) -> None:
        for ip in ips(c):
            c.spoke_host(VICTIM).run(["ip", "route", "del", "blackhole", f"{ip}/32"])

    return cut, heal


_cut_etcd, _heal_etcd = _blackhole(lambda c: c.etcd_ips)
_cut_hub, _heal_hub = _blackhole(lambda c: [HUB_HOST_IP])


def _stop_etcd(c: Cluster) -> None:
    """Stop etcd: the one server, or every member."""
    for s in c.cl.etcd_servers:
        s.stop()


def _start_etcd(c: Cluster) -> None:
    servers = c.cl.etcd_servers
    for s in servers:
        if isinstance(s, EtcdMember):
            s.forming = True  # a member alone has no quorum: wait once they all run
        s.start()
    for s in servers:
        if isinstance(s, EtcdMember):
            s.forming = False
    servers[0].wait_healthy()


def _freeze_etcd(c: Cluster) -> None:
    """SIGSTOP every etcd process: connections stay open, every call hangs."""
    c.held = c.cl.etcd_servers
    for s in c.held:
        s.freeze()


def _thaw(c: Cluster) -> None:
    for s in c.held:
        s.thaw()
    c.held = []


def _freeze_quorum(c: Cluster) -> None:
    """SIGSTOP two of three members, the leader among them: no quorum, no leader."""
    assert c.cl.etcd_cluster is not None, "needs a 3-member etcd"
    members = c.cl.etcd_cluster.members
    leader = c.cl.etcd_cluster.leader()
    first = next((m for m in members if m.name == leader), members[0])
    c.held = [first, next(m for m in members if m is not first)]
    for s in c.held:
        s.freeze()


def _kill_etcd_member(c: Cluster) -> None:
    c.cl.etcd.kill()  # e1: the first endpoint every process dials
    c.held = [c.cl.etcd]


def _kill_etcd_leader(c: Cluster) -> None:
    assert c.cl.etcd_cluster is not None, "needs a 3-member etcd"
    leader = c.cl.etcd_cluster.leader()
    member = next(m for m in c.cl.etcd_cluster.members if m.name == leader)
    member.kill()
    c.held = [member]


def _restart_members(c: Cluster) -> None:
    for s in c.held:
        if s.pid is None:
            s.start()
    c.held = []


def _revoke_session(c: Cluster) -> None:
    """What the hub's crash probe does, to a spoke that is alive: revoke its session lease."""
    member = c.cl.get_prefix(f"members/{VICTIM}")[f"{ROOT}/members/{VICTIM}"]
    c.cl.etcd.etcdctl("lease", "revoke", f"{int(member['lease']):x}")


def _fill_etcd(c: Cluster) -> None:
    fill_until_nospace(c.cl.etcd)


def _clear_etcd(c: Cluster) -> None:
    clear_nospace(c.cl.etcd)


@dataclass(frozen=True)
class Fault:
    """A fault: injected, held `hold` seconds (bench; tests pass shorter), then undone.
    `repair` is what the soak does afterwards to bring the cluster back to full strength."""

    name: str
    inject: Action
    restore: Action
    hold: float
    victim: str | None = VICTIM  # whose clients are "the faulted side's"
    setup: Setup = Setup()
    bound: Bound | None = None
    repair: Action = _nothing
    kind: str = ""  # the soak's name for it (a short one)

    @property
    def etcd_members(self) -> int:
        return self.setup.etcd_members


THREE = Setup(etcd_members=3)
FAULTS: tuple[Fault, ...] = (
    Fault("kill -9 spoke", _kill_spoke, _nothing, 0.0, bound=CRASH, repair=_restart_spoke,
          kind="kill-spoke"),
    Fault("kill -9 hub", _kill_hub, _nothing, 0.0, victim=None, bound=NO_PAUSE,
          repair=_restart_hub, kind="kill-hub"),
    Fault("SIGSTOP spoke 10 s (> TTL)", _stop_spoke, _cont_spoke, 10.0, bound=SILENT,
          kind="stop-spoke"),
    Fault("spoke link down 20 s", _link_down, _link_up, 20.0, bound=SILENT, kind="link-down"),
    Fault("spoke cut from etcd only 30 s", _cut_etcd, _heal_etcd, 30.0, bound=SILENT,
          kind="cut-etcd"),
    Fault("spoke cut from hub only 20 s", _cut_hub, _heal_hub, 20.0, bound=NO_PAUSE,
          kind="cut-hub"),
    Fault("etcd stopped 20 s", _stop_etcd, _start_etcd, 20.0, victim=None,
          bound=ETCD_DOWN, kind="stop-etcd"),
    Fault("kill -9 of 1 of 3 etcd members", _kill_etcd_member, _nothing, 0.0, None, THREE,
          MEMBER_LAB, _restart_members, "kill-member"),
    Fault("etcd frozen 20 s (SIGSTOP)", _freeze_etcd, _thaw, 20.0, victim=None,
          bound=ETCD_DOWN, kind="freeze-etcd"),
    Fault("etcd quorum lost 15 s (2 of 3 frozen)", _freeze_quorum, _thaw, 15.0, None, THREE,
          QUORUM, kind="lose-quorum"),
    Fault("spoke session revoked", _revoke_session, _nothing, 0.0, bound=CRASH,
          kind="revoke-session"),
    Fault("etcd out of space 20 s", _fill_etcd, _clear_etcd, 20.0, victim=None,
          setup=Setup(etcd_args=(f"--quota-backend-bytes={QUOTA_BYTES}",)), bound=ETCD_DOWN,
          kind="nospace"),
    Fault("kill -9 of the etcd leader (shipped timings)", _kill_etcd_leader, _nothing, 0.0,
          None, Setup(etcd_members=3, shipped_etcd_timings=True), MEMBER_SHIPPED,
          _restart_members, "kill-leader"),
)  # fmt: skip


def long_cut(lease_time: int) -> Fault:
    """s1 cut from etcd for three lease times while it stays on the lan (its clients renew
    through it; new clients go on arriving at the others)."""
    return Fault(
        f"spoke cut from etcd 3 x lease ({3 * lease_time} s)",
        _cut_etcd,
        _heal_etcd,
        3.0 * lease_time,
        setup=Setup(lease_time=lease_time),
        bound=SILENT,
        kind="long-cut",
    )


def fault_named(name: str) -> Fault:
    return next(f for f in FAULTS if f.name == name)


# -- after a fault ----------------------------------------------------------------------------
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


def normal_since(proc: Proc) -> float | None:
    """Wall-clock time of a spoke's last transition if it ended in NORMAL (0.0: it never left
    NORMAL, or never logged one); None while it is in another state."""
    events = proc.events("failover.transition")
    if not events:
        return 0.0
    last = events[-1]
    return float(last["ts"]) if last.get("to") == "NORMAL" else None


def normal_after(c: Cluster, since: float) -> float | None:
    """Seconds from `since` until every running spoke was NORMAL for good (None: one is not)."""
    worst = 0.0
    for proc in c.cl.spokes.values():
        if not proc.alive:
            continue
        at = normal_since(proc)
        if at is None:
            return None
        worst = max(worst, at - since)
    return worst


def wait_normal(c: Cluster, within: float) -> bool:
    """Bounded wait until every running spoke's last transition is to NORMAL."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(normal_since(p) is not None for p in c.cl.spokes.values() if p.alive):
            return True
        time.sleep(0.2)
    return False


def alarm_events(c: Cluster, event: str) -> dict[str, int]:
    """How many `event` log lines each spoke wrote (e.g. failover.duplicate_alarm)."""
    return {n: len(p.events(event)) for n, p in c.cl.spokes.items()}


@dataclass
class FaultRun:
    """One fault under load, measured. The cluster is still running (the caller's lab owns it)."""

    fault: Fault
    cluster: Cluster
    outcome: Outcome
    acks: list[Ack]
    fault_at: float
    restored_at: float
    end_at: float
    restored_gap_s: float  # longest gap in everyone's ACKs from the restore to the load's end
    restored_resumed: bool
    normal_after_s: float | None  # restore -> every running spoke NORMAL (None: not settled)
    duplicate_alarms: dict[str, int]

    @property
    def measured_s(self) -> float | None:
        """What the fault's bound is about: the resume time after the fault or its restore."""
        if self.fault.bound is not None and self.fault.bound.since == "restore":
            return self.restored_gap_s if self.restored_resumed else None
        return self.outcome.resume_s if self.outcome.resumed else None

    def within_bound(self) -> bool:
        bound = self.fault.bound
        measured = self.measured_s
        if bound is None or measured is None:
            return bound is None
        if bound.since == "restore":
            normal = self.normal_after_s
            return measured <= bound.limit and normal is not None and normal <= bound.limit
        return measured <= bound.limit

    def summary(self) -> str:
        bound = self.fault.bound
        b = "" if bound is None else f" (bound {bound.seconds:.1f} s + {bound.margin:.1f})"
        normal = "n/a" if self.normal_after_s is None else f"{self.normal_after_s:.2f}"
        return (
            f"{self.fault.name}: new clients served again after {self.measured_s} s{b}; "
            f"gap after the restore {self.restored_gap_s:.2f} s; every spoke NORMAL {normal} s "
            f"after the restore; {self.outcome.acks} ACKs, {self.outcome.duplicates} duplicates, "
            f"{self.outcome.lost} lost; {self.outcome.notes}"
        )


def run(
    fault: Fault,
    lab: Lab,
    workdir: Path,
    *,
    hold: float | None = None,
    rate: int = 150,
    pre: float = 3.0,
    post: float = 10.0,
    idle: bool = False,
    during: Action | None = None,
) -> FaultRun:
    """Build a fresh cluster, run the load with `fault` in it, and check the outcome.

    `idle`: no load while the fault is held (one load of `pre` seconds before it, one of
    `post` seconds from its restore on). `during`: called once the fault is in (a test's
    checks of the faulted cluster); the hold counts from the injection all the same."""
    c = build(lab, workdir, fault.setup)
    held = fault.hold if hold is None else hold
    victim_buckets = c.buckets_of(fault.victim) if fault.victim else None
    leader = c.cl.etcd_cluster.leader() if c.cl.etcd_cluster else None
    loads = [LoadRun(c.perf, workdir / "acks.txt")]
    if idle:
        loads[0].start(rate=rate, seconds=round(pre))
        loads[0].wait()
    else:
        loads[0].start(rate=rate, seconds=round(pre + held + post))
        time.sleep(pre)
    fault_at = time.time()
    fault.inject(c)
    try:
        if during is not None:
            during(c)
        time.sleep(max(0.0, fault_at + held - time.time()))
    finally:
        fault.restore(c)
    restored_at = time.time()
    if idle:
        loads.append(LoadRun(c.perf, workdir / "acks-after.txt"))
        loads[1].start(rate=rate, seconds=round(post))
        loads[1].wait()
    else:
        loads[0].wait()
    end_at = loads[-1].ends_at
    notes = [settle(c)]
    if leader is not None and fault.etcd_members > 1:
        notes.append(f"etcd leader was {leader}")
    if fault.victim and c.cl.spokes[fault.victim].alive:
        notes.append(f"{fault.victim}: {'>'.join(s[:6] for s in transitions(c, fault.victim))}")
    acks = [a for load in loads for a in load.acks()]
    store = c.store()
    outcome = evaluate(
        fault=fault.name,
        system=SYSTEM,
        acks=acks,
        store=store,
        read_at=time.time(),
        fault_at=fault_at,
        end_at=end_at,
        victim_buckets=victim_buckets,
        notes="; ".join(n for n in notes if n),
    )
    gap, resumed = longest_gap((a.at for a in acks), restored_at, end_at)
    return FaultRun(
        fault=fault,
        cluster=c,
        outcome=outcome,
        acks=acks,
        fault_at=fault_at,
        restored_at=restored_at,
        end_at=end_at,
        restored_gap_s=gap,
        restored_resumed=resumed,
        normal_after_s=normal_after(c, restored_at),
        duplicate_alarms=alarm_events(c, "failover.duplicate_alarm"),
    )


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
    """`run`, the outcome alone (the `make chaos` table)."""
    return run(fault, lab, workdir, hold=hold, rate=rate, pre=pre, post=post).outcome
