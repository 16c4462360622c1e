"""What the benchmark drives: the `ServerUnderTest` interface, the address plan, the bench lab.

Direct topology: every target's processes in namespaces of their own on one L2 segment,
perfdhcp in a client namespace on the same segment. perfdhcp relays (giaddr = its own
address), so every server's subnet is `AddressPlan.subnet`, which contains the client.

Relayed topology (`BenchEnv.build(..., relayed=True)`): the servers on a LAN segment
(`AddressPlan.lan_subnet`), perfdhcp alone on an edge segment (`AddressPlan.subnet`), and a
relay host joining both that forwards IP and runs ISC dhcrelay (`bench/relay.py`), which
sends every request to each server it is given, as a relay with several helper addresses does.
Servers reach perfdhcp (the giaddr) through the relay host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.lab.netlab import Host, Lab, Segment


class TargetUnavailable(RuntimeError):
    """This target cannot run here (a binary or module is missing); the row says why."""


class TargetFailed(RuntimeError):
    """The target did not reach its ready state (process exited, HA never synced, ...)."""


@dataclass(frozen=True)
class AddressPlan:
    """Test addresses, private and only ever configured inside lab namespaces."""

    subnet: str = "10.64.0.0/10"
    client: str = "10.64.0.2"
    first_server: str = "10.64.0.10"
    pool_first: str = "10.65.0.0"
    pool_last: str = "10.127.255.254"
    # Relayed topology: the servers' segment and the relay host's address on each side.
    lan_subnet: str = "10.63.0.0/24"
    lan_first_server: str = "10.63.0.10"
    relay_lan: str = "10.63.0.5"
    relay_edge: str = "10.64.0.1"

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def server(self, index: int, *, relayed: bool = False) -> str:
        """The address of the `index`-th server-side host (0-based), on the LAN if relayed."""
        first = self.lan_first_server if relayed else self.first_server
        return str(ipaddress.IPv4Address(first) + index)

    @property
    def lan_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.lan_subnet).prefixlen

    @property
    def pool_size(self) -> int:
        first = ipaddress.IPv4Address(self.pool_first)
        return int(ipaddress.IPv4Address(self.pool_last)) - int(first) + 1


@dataclass
class BenchEnv:
    """One target's lab: the servers' segment, the perfdhcp client host, a work directory.

    `relay` is the relay host in the relayed topology (None: direct); `segment` is always the
    servers' segment.
    """

    lab: Lab
    segment: Segment
    client: Host
    workdir: Path
    plan: AddressPlan = field(default_factory=AddressPlan)
    relay: Host | None = None
    client_segment: Segment | None = None
    relay_pids: list[int] = field(default_factory=list)
    _servers: int = 0

    @classmethod
    def build(
        cls, lab: Lab, workdir: Path, plan: AddressPlan | None = None, *, relayed: bool = False
    ) -> BenchEnv:
        plan = plan or AddressPlan()
        segment = lab.segment("lan")
        if not relayed:
            client = lab.host("client", segment, ip=f"{plan.client}/{plan.prefixlen}")
            return cls(
                lab=lab,
                segment=segment,
                client=client,
                workdir=workdir,
                plan=plan,
                client_segment=segment,
            )
        edge = lab.segment("edge")
        relay = lab.host(
            "relay",
            [segment, edge],
            [f"{plan.relay_lan}/{plan.lan_prefixlen}", f"{plan.relay_edge}/{plan.prefixlen}"],
        )
        relay.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        client = lab.host("client", edge, ip=f"{plan.client}/{plan.prefixlen}")
        client.run(["ip", "route", "add", plan.lan_subnet, "via", plan.relay_edge])
        return cls(
            lab=lab,
            segment=segment,
            client=client,
            workdir=workdir,
            plan=plan,
            relay=relay,
            client_segment=edge,
        )

    @property
    def relayed(self) -> bool:
        return self.relay is not None

    def add_host(self, role: str) -> Host:
        """A new server-side namespace on the servers' segment with the next server address.

        Relayed: on the LAN, with a route to the edge (perfdhcp, the giaddr) via the relay.
        """
        address = self.plan.server(self._servers, relayed=self.relayed)
        self._servers += 1
        if not self.relayed:
            return self.lab.host(role, self.segment, ip=f"{address}/{self.plan.prefixlen}")
        host = self.lab.host(role, self.segment, ip=f"{address}/{self.plan.lan_prefixlen}")
        host.run(["ip", "route", "add", self.plan.subnet, "via", self.plan.relay_lan])
        return host


class ServerUnderTest(Protocol):
    """A DHCP server (or a set of cooperating processes) the benchmark measures."""

    @property
    def name(self) -> str:
        """Short name used on the command line (`--targets`) and in the table."""
        ...

    @property
    def summary(self) -> str:
        """One line on how it is configured (persistence, threads, HA mode)."""
        ...

    @property
    def relayed(self) -> bool:
        """True: run in the relayed topology (perfdhcp behind dhcrelay); `start` starts it."""
        ...

    @property
    def target_address(self) -> str:
        """Where perfdhcp sends (the relay's server address)."""
        ...

    def start(self, env: BenchEnv) -> None:
        """Start every process in `env` and return once it serves; raise TargetFailed."""
        ...

    def pids(self) -> list[int]:
        """PIDs whose CPU time counts as the server's."""
        ...

    def check(self) -> str | None:
        """None while it still serves as started; else what went wrong (process exited, ...)."""
        ...

    def stop(self) -> None:
        """Stop every process started (the lab also kills them at teardown)."""
        ...
