"""What the benchmark drives: the `ServerUnderTest` interface, the address plan, the bench lab.

Every target runs the same way: its processes in namespaces of their own on one L2 segment,
perfdhcp in a client namespace on the same segment. perfdhcp relays (giaddr = its own
address), so every server's subnet is `AddressPlan.subnet`, which contains the client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.support.netlab import Host, Lab, Segment


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

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def server(self, index: int) -> str:
        """The address of the `index`-th server-side host (0-based)."""
        return str(ipaddress.IPv4Address(self.first_server) + index)

    @property
    def pool_size(self) -> int:
        first = ipaddress.IPv4Address(self.pool_first)
        return int(ipaddress.IPv4Address(self.pool_last)) - int(first) + 1


@dataclass
class BenchEnv:
    """One target's lab: the segment, the perfdhcp client host, a work directory."""

    lab: Lab
    segment: Segment
    client: Host
    workdir: Path
    plan: AddressPlan = field(default_factory=AddressPlan)
    _servers: int = 0

    @classmethod
    def build(cls, lab: Lab, workdir: Path, plan: AddressPlan | None = None) -> BenchEnv:
        plan = plan or AddressPlan()
        segment = lab.segment("lan")
        client = lab.host("client", segment, ip=f"{plan.client}/{plan.prefixlen}")
        return cls(lab=lab, segment=segment, client=client, workdir=workdir, plan=plan)

    def add_host(self, role: str) -> Host:
        """A new server-side namespace on the segment with the next server address."""
        address = self.plan.server(self._servers)
        self._servers += 1
        return self.lab.host(role, self.segment, ip=f"{address}/{self.plan.prefixlen}")


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
