"""Chaos against ISC Kea 2.2 in HA hot-standby: the pair of one run, its faults, running one.

The pair is built from `bench/kea.py` (its config builders, `KeaInstance`, the HA hook
parameters: heartbeat-delay 1,000 ms, max-response-delay 3,000 ms, max-unacked-clients 0, so
the standby takes over once the primary has been silent for the response delay) on the same
lan/edge layout as the hubspoke run: primary `kea1` (10.77.0.11), standby `kea2` (10.77.0.12),
dhcrelay forwarding every request to both. Lost leases are ACKs missing from the survivor's
lease database (`lease4-get-all` on the standby's control socket).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kea import (
    HaPeer,
    KeaInstance,
    find_hook,
    ha_hook_parameters,
    ha_local_state,
    kea_command,
    kea_config,
)
from bench.target import AddressPlan, TargetFailed
from tests.lab.chaos import (
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
from tests.lab.netlab import Lab

SYSTEM = "kea-ha hot-standby"
PEER_IPS = ("10.77.0.11", "10.77.0.12")
READY_S = 45.0


@dataclass
class Pair:
    primary: KeaInstance
    standby: KeaInstance

    def states(self) -> list[str | None]:
        out: list[str | None] = []
        for i in (self.primary, self.standby):
            try:
                out.append(ha_local_state(i.command("status-get")))
            except OSError:
                out.append(None)
        return out

    def store(self) -> dict[str, Binding]:
        """The standby's leases (the survivor's database)."""
        answer = kea_command(self.standby.socket_path, "lease4-get-all", timeout=30.0)
        out = {}
        for lease in answer.get("arguments", {}).get("leases", []):
            if int(lease.get("state", 0)) != 0:
                continue
            start = float(lease["cltt"])
            out[lease["ip-address"]] = Binding(
                lease["ip-address"],
                str(lease["hw-address"]).replace(":", "").lower(),
                start,
                start + float(lease["valid-lft"]),
            )
        return out


def build(lab: Lab, workdir: Path) -> tuple[Pair, LoadRun]:
    lan = lab.segment("lan", subnet="10.77.0.0/24")
    hosts = [lab.host(f"kea{i + 1}", lan, f"{ip}/24") for i, ip in enumerate(PEER_IPS)]
    peers = [HaPeer("server1", PEER_IPS[0], "primary"), HaPeer("server2", PEER_IPS[1], "standby")]
    plan = AddressPlan(subnet=CHAOS_SUBNET, pool_first=CHAOS_POOL_FIRST, pool_last=CHAOS_POOL_LAST)
    hooks_lib = {"lease_cmds": find_hook("libdhcp_lease_cmds.so"), "ha": find_hook("libdhcp_ha.so")}
    instances = []
    for host, peer in zip(hosts, peers, strict=True):
        inst = KeaInstance(host, workdir / peer.name)
        hooks: list[dict[str, Any]] = [
            {"library": hooks_lib["lease_cmds"]},
            {"library": hooks_lib["ha"], "parameters": ha_hook_parameters(peer.name, peers)},
        ]
        inst.start(kea_config(workdir=inst.workdir, interface="eth0", plan=plan, hooks=hooks))
        instances.append(inst)
    deadline = time.monotonic() + READY_S
    for inst in instances:
        inst.wait_ready(deadline)
    pair = Pair(instances[0], instances[1])
    while pair.states() != ["hot-standby", "hot-standby"]:
        if time.monotonic() > deadline:
            raise TargetFailed(f"the Kea pair did not reach hot-standby: {pair.states()}")
        time.sleep(0.25)
    perf = start_edge(lab, lan, hosts, workdir)
    return pair, LoadRun(perf, workdir / "acks.txt")


Action = Callable[[Pair], None]


def _kill_primary(p: Pair) -> None:
    assert p.primary.proc is not None
    p.primary.proc.send_signal(signal.SIGKILL)
    p.primary.proc.wait(15)


def _nothing(p: Pair) -> None:
    return None


def _link_down(p: Pair) -> None:
    p.primary.host.run(["ip", "link", "set", "eth0", "down"])


def _link_up(p: Pair) -> None:
    p.primary.host.run(["ip", "link", "set", "eth0", "up"])
    edge_route(p.primary.host)


@dataclass(frozen=True)
class KeaFault:
    name: str
    inject: Action
    restore: Action
    hold: float


KEA_FAULTS: tuple[KeaFault, ...] = (
    KeaFault("kill -9 primary", _kill_primary, _nothing, 0.0),
    KeaFault("primary link down 20 s", _link_down, _link_up, 20.0),
)


def run_fault(
    fault: KeaFault,
    lab: Lab,
    workdir: Path,
    *,
    rate: int = 150,
    pre: float = 3.0,
    post: float = 10.0,
) -> Outcome:
    pair, load = build(lab, workdir)
    load.start(rate=rate, seconds=round(pre + fault.hold + post))
    time.sleep(pre)
    fault_at = time.time()
    fault.inject(pair)
    try:
        time.sleep(fault.hold)
    finally:
        fault.restore(pair)
    load.wait()
    time.sleep(2.0)  # lease updates in flight reach the standby
    acks = load.acks()
    by_server: dict[str, int] = {}
    for a in acks:
        if a.at >= fault_at:
            by_server[a.server] = by_server.get(a.server, 0) + 1
    served = ", ".join(f"{s}: {n}" for s, n in sorted(by_server.items()))
    return evaluate(
        fault=fault.name,
        system=SYSTEM,
        acks=acks,
        store=pair.store(),
        read_at=time.time(),
        fault_at=fault_at,
        end_at=load.ends_at,
        victim_buckets=None,
        notes=f"HA states at end {pair.states()}; ACKs after the fault by {served or 'nobody'}",
    )
