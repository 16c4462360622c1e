"""The cluster target: etcd, a hub and two cluster-mode spokes, perfdhcp behind dhcrelay.

Owns the bench's hub and cluster-spoke configurations (pure builders) and the processes of one
run: etcd and the hub (`python -m hub.main`) share a namespace on the LAN, each spoke has its
own, and dhcrelay on the relay host sends every request to both spokes; each spoke answers only
the clients in its buckets. Measuring starts once the hub reports both spokes live with
buckets and blocks (`python -m hub.cli.main ... --json status`).

>>> HUB/SPOKE INTEGRATION POINT <<<
`hub_config`, `cluster_spoke_config` and `hub_cli_command` assume the YAML of
`tests/lab/clusterlab.py` (`ClusterLab.add_hub`, `ClusterLab.add_spoke`) and the CLI's JSON.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.relay import start_relay
from bench.spoke import (
    ETCD_CLIENT_PORT,
    READY_TIMEOUT_S,
    etcd_command,
    spoke_available,
    spoke_command,
    wait_etcd,
    wait_serving,
)
from bench.target import AddressPlan, BenchEnv, TargetFailed, TargetUnavailable
from tests.lab.netlab import Host

ROOT = "/hubspoke/v1"
HUB_PORT = 7500
TOKEN = "bench-token-0123456789"
SPOKES = ("s1", "s2")
SCOPE = "bench"
# 2^17 addresses in blocks of 1,024: the first plan hands each of two spokes 48 blocks (75% of
# the pool, the rest in reserve), more than a bounded rate search consumes.
POOL_SIZE = 1 << 17
BLOCK_SIZE = 1024
PLANNER_INTERVAL_S = 1.0
BALANCED_TIMEOUT_S = 60.0


def bench_scope(plan: AddressPlan, pool_size: int) -> dict[str, Any]:
    """The one scope the hub seeds: perfdhcp's address (the giaddr) lies in its subnet."""
    first = ipaddress.IPv4Address(plan.pool_first)
    last = first + min(pool_size, plan.pool_size) - 1
    return {"name": SCOPE, "subnet": plan.subnet, "pools": [f"{first}-{last}"], "lease_time": 3600}


def hub_config(
    *, etcd_endpoint: str, listen: str, plan: AddressPlan, pool_size: int = POOL_SIZE
) -> dict[str, Any]:
    """The hub's YAML (format of `ClusterLab.add_hub`)."""
    return {
        "node": "bench-hub",
        "etcd": {"endpoints": [etcd_endpoint], "root": ROOT},
        "grpc": {"listen": listen, "advertise": listen, "tokens": [TOKEN]},
        "planner": {"interval": PLANNER_INTERVAL_S, "block_size": BLOCK_SIZE},
        "session_ttl": 3,
        "metrics": None,
        "log": {"level": "warning", "format": "json"},
        "scopes": [bench_scope(plan, pool_size)],
    }


def cluster_spoke_config(
    *, node: str, etcd_endpoint: str, interface: str, journal: Path
) -> dict[str, Any]:
    """One cluster-mode spoke's YAML (format of `ClusterLab.add_spoke`); scopes come from etcd.

    Journal in the run's work directory; logs at info (lifecycle, failover transitions).
    """
    return {
        "node": node,
        "mode": "cluster",
        "etcd": {"endpoints": [etcd_endpoint], "root": ROOT},
        "dhcp": {"interfaces": [interface], "max_inflight_commits": 256},
        "cluster": {"report_interval": 1.0, "session_ttl": 5, "token": TOKEN},
        "hub": {"eligible": False},
        "metrics": None,
        "tracing": {"otlp_endpoint": None},
        "failover": {"journal": str(journal)},  # the shipped timings
        "log": {"level": "info", "format": "json"},
    }


def hub_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "hub.main", "--config", str(config_path)]


def hub_cli_command(hub: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli.main", "--hub", hub, "--token", TOKEN, "--json", *args]


def balanced(status: dict[str, Any], spokes: tuple[str, ...] = SPOKES) -> bool:
    """Every spoke in `spokes` is live with at least one bucket and one block."""
    by_node = {s.get("node"): s for s in status.get("spokes", [])}
    return all(
        n in by_node
        and by_node[n].get("live")
        and by_node[n].get("bucket_count", 0) > 0
        and by_node[n].get("blocks")
        for n in spokes
    )


def _wait_ready_file(proc: subprocess.Popen[Any], ready: Path, log: Path, deadline: float) -> None:
    while not ready.exists():
        if proc.poll() is not None:
            raise TargetFailed(f"a spoke exited ({proc.returncode}): {_tail(log)}")
        if time.monotonic() > deadline:
            raise TargetFailed(f"a spoke did not get ready: {_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path, chars: int = 400) -> str:
    try:
        return " ".join(path.read_text(errors="replace")[-chars:].split())
    except OSError:
        return "(no log)"


class ClusterTarget:
    """hubspoke cluster: hub + two spokes + one etcd member, perfdhcp behind dhcrelay."""

    name = "cluster"
    summary = (
        "hubspoke hub + 2 cluster-mode spokes + etcd 3.4 (one member); perfdhcp on an edge "
        "segment behind dhcrelay sending every request to both spokes; each spoke answers its "
        "buckets; every ACK after an etcd commit"
    )
    relayed = True

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        self.pool_size = pool_size
        self._procs: list[tuple[Host, subprocess.Popen[Any]]] = []
        self._address = ""
        self.spoke_pids: dict[str, int] = {}
        self.status: dict[str, Any] = {}

    @property
    def target_address(self) -> str:
        return self._address

    def start(self, env: BenchEnv) -> None:
        if not spoke_available():
            raise TargetUnavailable("spoke.main is not there yet (the spoke is being built)")
        db = env.add_host("db")
        workdir = env.workdir / "cluster"
        workdir.mkdir(parents=True, exist_ok=True)
        db_ip = str(db.address().ip)
        endpoint = f"{db_ip}:{ETCD_CLIENT_PORT}"
        self._spawn(db, etcd_command("bench", db_ip, workdir / "etcd-data"), workdir / "etcd.log")
        wait_etcd(db, f"http://{endpoint}", READY_TIMEOUT_S)
        deadline = time.monotonic() + READY_TIMEOUT_S
        addresses: list[str] = []
        # Spokes before the hub: its first plan sees both and shares evenly.
        for node in SPOKES:
            host = env.add_host(node)
            addresses.append(str(host.address().ip))
            config = workdir / f"{node}.yaml"
            config.write_text(
                yaml.safe_dump(
                    cluster_spoke_config(
                        node=node,
                        etcd_endpoint=endpoint,
                        interface=host.ifname(env.segment),
                        journal=workdir / f"{node}.journal",
                    )
                )
            )
            ready, log = workdir / f"{node}.ready", workdir / f"{node}.log"
            proc = self._spawn(host, spoke_command(config, ready), log)
            self.spoke_pids[node] = proc.pid
            _wait_ready_file(proc, ready, log, deadline)
        hub_listen = f"{db_ip}:{HUB_PORT}"
        hub_yaml = workdir / "hub.yaml"
        hub_yaml.write_text(
            yaml.safe_dump(
                hub_config(
                    etcd_endpoint=endpoint,
                    listen=hub_listen,
                    plan=env.plan,
                    pool_size=self.pool_size,
                )
            )
        )
        self._spawn(db, hub_command(hub_yaml), workdir / "hub.log")
        self._wait_balanced(db, hub_listen, workdir / "hub.log")
        self._address = start_relay(env, addresses)
        wait_serving(env.client, env.plan.client, self._address, time.monotonic() + 30.0)

    def _spawn(self, host: Host, argv: list[str], log_path: Path) -> subprocess.Popen[Any]:
        with log_path.open("w") as log:
            proc = host.popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        self._procs.append((host, proc))
        return proc

    def _wait_balanced(self, db: Host, hub: str, hub_log: Path) -> None:
        deadline = time.monotonic() + BALANCED_TIMEOUT_S
        last = ""
        while True:
            problem = self.check()
            if problem is not None:
                raise TargetFailed(f"{problem}; hub log: {_tail(hub_log)}")
            done = db.run(hub_cli_command(hub, "status"), check=False, timeout=30)
            if done.returncode == 0:
                try:
                    self.status = json.loads(done.stdout)
                except ValueError:
                    self.status = {}
                if balanced(self.status):
                    return
                last = done.stdout[-300:]
            else:
                last = done.stderr[-300:]
            if time.monotonic() > deadline:
                raise TargetFailed(f"spokes never had buckets and blocks: {' '.join(last.split())}")
            time.sleep(0.5)

    def pids(self) -> list[int]:
        return [proc.pid for _, proc in self._procs]

    def check(self) -> str | None:
        for host, proc in self._procs:
            if proc.poll() is not None:
                return f"a process in {host.netns} exited ({proc.returncode})"
        return None

    def stop(self) -> None:
        for host, proc in reversed(self._procs):
            host.stop(proc)
