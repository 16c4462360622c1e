"""The hubspoke target: one etcd member and one spoke, each in its own namespace.

Owns the bench's spoke configuration and the etcd and spoke processes of one bench run.
etcd listens on its segment address (a namespace cannot reach the root namespace's loopback);
the spoke reaches it there and serves DHCP on the same segment as the perfdhcp client.

>>> SPOKE INTEGRATION POINT <<<
`spoke_command` and `spoke_config` are the only places that assume the spoke's command line
and file format (today: `python -m spoke.main --config FILE`, the YAML format of
`deploy/spoke.example.yaml`). Until `spoke.main` exists the target reports itself unavailable.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.target import AddressPlan, BenchEnv, TargetFailed, TargetUnavailable
from tests.lab.netlab import Host

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
READY_TIMEOUT_S = 60.0
# Addresses the spoke serves: more than a bounded rate search consumes, far fewer than Kea's
# pool, because the spoke claims every block of its pool at start.
POOL_SIZE = 1 << 17


def etcd_command(name: str, address: str, data_dir: Path) -> list[str]:
    """A one-member etcd listening on `address` (its namespace's segment address)."""
    client_url = f"http://{address}:{ETCD_CLIENT_PORT}"
    peer_url = f"http://{address}:{ETCD_PEER_PORT}"
    return [
        ETCD,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"{name}={peer_url}",
        "--log-level",
        "warn",
    ]


def spoke_config(
    *, etcd_endpoint: str, interface: str, plan: AddressPlan, pool_size: int, journal: Path
) -> dict[str, Any]:
    """The spoke's YAML configuration (format of deploy/spoke.example.yaml).

    The failover journal lives in the run's work directory (the default path is shared by
    every process with the same node name). Logs at info: lifecycle and failover transitions,
    nothing per packet.
    """
    first = ipaddress.IPv4Address(plan.pool_first)
    last = first + min(pool_size, plan.pool_size) - 1
    # >>> SPOKE: keep in step with spoke/config.py.
    return {
        "node": "bench-spoke",
        "etcd": {"endpoints": [etcd_endpoint]},
        "dhcp": {"interfaces": [interface], "max_inflight_commits": 256},
        "metrics": None,
        "tracing": {"otlp_endpoint": None},
        "failover": {"journal": str(journal)},  # the shipped timings
        "log": {"level": "info", "format": "json"},
        "scopes": [
            {
                "name": "bench",
                "subnet": plan.subnet,
                "pools": [f"{first}-{last}"],
                "lease_time": 3600,
                "interfaces": [interface],
            }
        ],
    }


def spoke_command(config_path: Path, ready_file: Path) -> list[str]:
    """How to start one spoke. >>> SPOKE: adjust if the entry point differs."""
    return [
        sys.executable,
        "-m",
        "spoke.main",
        "--config",
        str(config_path),
        "--ready-file",
        str(ready_file),
    ]


def spoke_available() -> bool:
    return importlib.util.find_spec("spoke.main") is not None


def wait_serving(client: Host, local: str, server: str, deadline: float) -> None:
    """Until one full DORA through perfdhcp succeeds (the generic "it serves" check)."""
    while True:
        probe = client.run(
            # `-n 1 -n 1`: one DISCOVER and one REQUEST. perfdhcp 2.2 stops waiting (`-W`) once
            # the replies received (OFFERs + ACKs) equal the `-n` counts summed: with a single
            # `-n 1` the OFFER alone satisfies that and an ACK after a commit counts as lost.
            [
                "perfdhcp",
                "-4",
                "-l",
                local,
                "-r",
                "1",
                "-n",
                "1",
                "-n",
                "1",
                "-R",
                "1000",
                "-W",
                "3000000",
                server,
            ],
            check=False,
            timeout=10,
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TargetFailed(f"no DHCP answer from {server} to a single perfdhcp exchange")
        time.sleep(0.5)


def wait_etcd(host: Host, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        health = host.run(
            [ETCDCTL, "--endpoints", url, "--command-timeout=2s", "endpoint", "health"],
            check=False,
            timeout=10,
        )
        if health.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TargetFailed(f"etcd at {url} not healthy: {health.stderr.strip()[-300:]}")
        time.sleep(0.2)


def _tail(path: Path, chars: int = 400) -> str:
    try:
        return " ".join(path.read_text()[-chars:].split())
    except OSError:
        return "(no log)"


class SpokeServer:
    """hubspoke: one spoke committing every binding to a one-member etcd before it ACKs."""

    name = "spoke"
    summary = "hubspoke spoke + etcd 3.4 (one member), every ACK after an etcd commit"
    relayed = False

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        self.pool_size = pool_size
        self._procs: list[tuple[Host, subprocess.Popen[Any]]] = []
        self._address = ""

    @property
    def target_address(self) -> str:
        return self._address

    def start(self, env: BenchEnv) -> None:
        if not spoke_available():
            raise TargetUnavailable("spoke.main is not there yet (the spoke is being built)")
        etcd_host = env.add_host("etcd")
        spoke_host = env.add_host("spoke")
        workdir = env.workdir / "spoke"
        workdir.mkdir(parents=True, exist_ok=True)
        etcd_address = str(etcd_host.address().ip)
        with (workdir / "etcd.log").open("w") as log:
            etcd = etcd_host.popen(
                etcd_command("bench", etcd_address, workdir / "etcd-data"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._procs.append((etcd_host, etcd))
        wait_etcd(etcd_host, f"http://{etcd_address}:{ETCD_CLIENT_PORT}", READY_TIMEOUT_S)
        config_path = workdir / "spoke.yaml"
        config_path.write_text(
            yaml.safe_dump(
                spoke_config(
                    etcd_endpoint=f"{etcd_address}:{ETCD_CLIENT_PORT}",
                    interface=spoke_host.ifname(env.segment),
                    plan=env.plan,
                    pool_size=self.pool_size,
                    journal=workdir / "spoke.journal",
                )
            )
        )
        ready_file = workdir / "ready.json"
        with (workdir / "spoke.log").open("w") as log:
            spoke = spoke_host.popen(
                spoke_command(config_path, ready_file),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        self._procs.append((spoke_host, spoke))
        self._address = str(spoke_host.address().ip)
        wait_serving(env.client, env.plan.client, self._address, time.monotonic() + READY_TIMEOUT_S)

    def pids(self) -> list[int]:
        return [proc.pid for _, proc in self._procs]

    def hosts(self) -> list[Host]:
        """The namespaces of the processes, in start order (etcd, then the spoke)."""
        return [host for host, _ in self._procs]

    def check(self) -> str | None:
        for host, proc in self._procs:
            if proc.poll() is not None:
                return f"a process in {host.netns} exited ({proc.returncode})"
        return None

    def stop(self) -> None:
        for host, proc in reversed(self._procs):
            host.stop(proc)
