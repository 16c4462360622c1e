"""ISC dhcrelay in the relayed bench topology: its command line and the process of one run.

Owns the dhcrelay process: listening for clients on the relay host's edge interface, it sends
every request to each server given (on the LAN), the way a relay with several helper addresses
does in production. Replies go from the servers to perfdhcp (the giaddr) through the relay
host's IP forwarding, not through dhcrelay. Its CPU time is reported on its own: on a small
machine the relay is a real share of the load.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench.target import BenchEnv, TargetFailed, TargetUnavailable

DHCRELAY = "dhcrelay"
SETTLE_S = 0.5


def dhcrelay_command(
    edge_interface: str, lan_interface: str, servers: Sequence[str], pid_file: Path
) -> list[str]:
    """dhcrelay in the foreground, DHCPv4, clients downstream on the edge, servers upstream."""
    if not servers:
        raise ValueError("dhcrelay needs at least one server")
    return [
        DHCRELAY,
        "-d",
        "-q",
        "-4",
        "-pf",
        str(pid_file),
        "-id",
        edge_interface,
        "-iu",
        lan_interface,
        *servers,
    ]


def start_relay(env: BenchEnv, servers: Sequence[str]) -> str:
    """Start dhcrelay on the relay host forwarding to `servers`; return where perfdhcp sends."""
    relay, edge = env.relay, env.client_segment
    if relay is None or edge is None:
        raise TargetFailed("start_relay needs the relayed topology (BenchEnv.build relayed=True)")
    if shutil.which(DHCRELAY) is None:
        raise TargetUnavailable("dhcrelay is not installed (Debian package isc-dhcp-relay)")
    workdir = env.workdir / "relay"
    workdir.mkdir(parents=True, exist_ok=True)
    edge_if = relay.ifname(edge)
    lan_if = relay.ifname(env.segment)
    log_path = workdir / "dhcrelay.log"
    with log_path.open("w") as log:
        proc = relay.popen(
            dhcrelay_command(edge_if, lan_if, servers, workdir / "dhcrelay.pid"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    time.sleep(SETTLE_S)
    if proc.poll() is not None:
        raise TargetFailed(f"dhcrelay exited ({proc.returncode}): {log_path.read_text()[-300:]}")
    env.relay_pids.append(proc.pid)
    return env.plan.relay_edge
