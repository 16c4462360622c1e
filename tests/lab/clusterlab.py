"""A cluster under test: etcd, a hub and spokes, each a real process in its own lab namespace.

Layout on segment `lan` (10.77.0.0/24): etcd and the hub process on `db` (10.77.0.3, etcd on
:2379, the hub's gRPC API on :7500), spokes `s1`, `s2`, ... on 10.77.0.11, .12, ...; clients
anywhere else on the segment. Processes are started through the lab (killed by PID at
teardown) and can be signalled by the tests (kill -9, SIGSTOP). Each process's log is checked
for asyncio errors at the test's teardown (`tests.lab.asyncio_audit`).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from tests.lab import asyncio_audit
from tests.lab.etcd import EtcdCluster, EtcdMember, EtcdServer
from tests.lab.netlab import Host, Lab, Segment

ROOT = "/hubspoke/v1"
DB_IP = "10.77.0.3"
HUB_PORT = 7500
TOKEN = "lab-token-0123456789"
SUBNET = "10.77.0.0/24"
POOL = "10.77.0.30-10.77.0.250"


def lan_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "name": "lan",
        "subnet": SUBNET,
        "pools": [POOL],
        "lease_time": 300,
        "min_lease_time": 10,
        "max_lease_time": 3600,
        "options": {
            "routers": ["10.77.0.1"],
            "dns_servers": ["10.77.0.53"],
            "domain_name": "lab.example",
        },
    }
    scope.update(overrides)
    return scope


@dataclass
class Proc:
    """One process of the cluster, its config, log and ready file."""

    name: str
    host: Host
    argv: list[str]
    log_path: Path
    ready_path: Path | None = None
    popen: subprocess.Popen[Any] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0

    def start(self, wait_ready: float | None = 30.0) -> None:
        if self.ready_path is not None:
            self.ready_path.unlink(missing_ok=True)
        self.log_file = self.log_path.open("ab")
        self.starts += 1
        asyncio_audit.watch(self.name, self.log_path)
        self.popen = self.host.popen(self.argv, stdout=self.log_file, stderr=subprocess.STDOUT)
        if wait_ready is not None and self.ready_path is not None:
            deadline = time.monotonic() + wait_ready
            while not self.ready_path.exists():
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready in {wait_ready} s: {self.tail()}")
                time.sleep(0.05)

    def send(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def kill(self, sig: signal.Signals = signal.SIGKILL, wait: float = 15.0) -> int:
        assert self.popen is not None
        self.popen.send_signal(sig)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)  # a frozen process acts on it once continued
        code = self.popen.wait(wait)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return code

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if name is None or str(ev.get("event", "")).startswith(name):
                    out.append(ev)
        return out


@dataclass
class ClusterLab:
    lab: Lab
    segment: Segment
    workdir: Path
    db: Host
    etcd: EtcdServer
    scopes: list[dict[str, Any]] = field(default_factory=lambda: [lan_scope()])
    hubs: dict[str, Proc] = field(default_factory=dict)
    spokes: dict[str, Proc] = field(default_factory=dict)
    planner: dict[str, Any] = field(default_factory=lambda: {"interval": 0.5})
    etcd_cluster: EtcdCluster | None = None  # set by `create_with_etcd_cluster`; `etcd` is member 1

    @classmethod
    def create(
        cls, lab: Lab, segment: Segment, workdir: Path, *, etcd_args: Sequence[str] = ()
    ) -> ClusterLab:
        """etcd of one member on `db`; `etcd_args` are passed to it (e.g. a backend quota)."""
        db = lab.host("db", segment, f"{DB_IP}/24")
        (workdir / "etcd").mkdir(parents=True, exist_ok=True)
        etcd = EtcdServer(
            workdir=workdir / "etcd", netns=db.netns, host=DB_IP, extra_args=etcd_args
        )
        etcd.start()
        return cls(lab=lab, segment=segment, workdir=workdir, db=db, etcd=etcd)

    @classmethod
    def create_with_etcd_cluster(
        cls,
        lab: Lab,
        segment: Segment,
        workdir: Path,
        member_ips: tuple[str, ...],
        *,
        etcd_args: Sequence[str] = (),
        timings: tuple[int, int] | None = (50, 500),
    ) -> ClusterLab:
        """As `create`, but etcd is a cluster of one member per address, each on a host of its
        own (`e1`, `e2`, ...); `db` (DB_IP) hosts no etcd then. Hub and spokes get every endpoint.
        `timings` (heartbeat ms, election ms), None: etcd's defaults, as `deploy/` ships them.
        """
        db = lab.host("db", segment, f"{DB_IP}/24")
        names = {f"e{i + 1}": ip for i, ip in enumerate(member_ips)}
        members = []
        for name, ip in names.items():
            host = lab.host(name, segment, f"{ip}/24")
            (workdir / name).mkdir(parents=True, exist_ok=True)
            members.append(
                EtcdMember(
                    name=name,
                    members=names,
                    workdir=workdir / name,
                    netns=host.netns,
                    host=ip,
                    extra_args=etcd_args,
                    timings=timings,
                )
            )
        cluster = EtcdCluster(members)
        cluster.start()
        return cls(
            lab=lab,
            segment=segment,
            workdir=workdir,
            db=db,
            etcd=members[0],
            etcd_cluster=cluster,
        )

    @property
    def etcd_servers(self) -> list[EtcdServer]:
        """Every etcd process: the cluster's members, or the one server."""
        return list(self.etcd_cluster.members) if self.etcd_cluster else [self.etcd]

    @property
    def etcd_endpoints(self) -> list[str]:
        """Every etcd endpoint the hub and spokes are given."""
        return self.etcd_cluster.endpoints if self.etcd_cluster else [self.etcd.endpoint]

    # -- processes ---------------------------------------------------------------------------
    def add_hub(self, name: str = "hub-1", host: Host | None = None) -> Proc:
        host = host or self.db
        ip = str(host.address(self.segment).ip)
        cfg = {
            "node": name,
            "etcd": {"endpoints": self.etcd_endpoints, "root": ROOT},
            "grpc": {
                "listen": f"{ip}:{HUB_PORT}",
                "advertise": f"{ip}:{HUB_PORT}",
                "tokens": [TOKEN],
            },
            "planner": self.planner,
            "session_ttl": 3,
            "metrics": None,
            "log": {"level": "info", "format": "json"},
            "scopes": self.scopes,
        }
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = Proc(
            name,
            host,
            [sys.executable, "-m", "hub.main", "--config", str(path)],
            self.workdir / f"{name}.log",
        )
        self.hubs[name] = proc
        return proc

    def add_spoke(self, name: str, ip: str, *, hub_eligible: bool = False) -> Proc:
        host = self.lab.host(name, self.segment, f"{ip}/24")
        cfg: dict[str, Any] = {
            "node": name,
            "mode": "cluster",
            "etcd": {"endpoints": self.etcd_endpoints, "root": ROOT},
            "dhcp": {"interfaces": ["eth0"], "reuse_delay": 2, "offer_lifetime": 10},
            "failover": {"journal": str(self.workdir / f"{name}.journal")},
            "cluster": {"report_interval": 0.5, "session_ttl": 3, "token": TOKEN},
            "hub": {"eligible": hub_eligible, "listen": f"{ip}:{HUB_PORT}"},
            "metrics": {"listen": "127.0.0.1:9167"},
            "log": {"level": "info", "format": "json"},
        }
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        ready = self.workdir / f"{name}.ready"
        proc = Proc(
            name,
            host,
            [
                sys.executable,
                "-m",
                "spoke.main",
                "--config",
                str(path),
                "--ready-file",
                str(ready),
            ],
            self.workdir / f"{name}.log",
            ready,
        )
        self.spokes[name] = proc
        return proc

    # -- the operator's view -----------------------------------------------------------------
    def cli(self, *args: str, hubs: tuple[str, ...] = (f"{DB_IP}:{HUB_PORT}",)) -> Any:
        """`hubspoke --json ARGS` from the db namespace; the parsed JSON output."""
        done = self.db.run(
            [
                sys.executable,
                "-m",
                "hub.cli.main",
                "--hub",
                ",".join(hubs),
                "--token",
                TOKEN,
                "--json",
                *args,
            ],
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"hubspoke {' '.join(args)}: {done.returncode} {done.stderr}")
        return json.loads(done.stdout)

    def metrics(self, node: str) -> dict[str, float]:
        """A spoke's Prometheus samples (`name{labels}` -> value), scraped inside its namespace
        from `metrics.listen` (127.0.0.1:9167)."""
        script = (
            "import urllib.request as u\n"
            "print(u.urlopen('http://127.0.0.1:9167/metrics', timeout=5).read().decode())"
        )
        done = self.spokes[node].host.run([sys.executable, "-c", script], check=False, timeout=15)
        if done.returncode != 0:
            raise RuntimeError(f"metrics of {node}: {done.stderr}")
        samples: dict[str, float] = {}
        for line in str(done.stdout).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_for(self, what: str, predicate: Any, within: float = 30.0) -> Any:
        deadline = time.monotonic() + within
        last: Any = None
        while True:
            try:
                last = predicate()
            except (RuntimeError, ValueError, KeyError) as e:
                last = e
            if last and not isinstance(last, Exception):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached in {within} s; last: {last}")
            time.sleep(0.2)

    # -- etcd ----------------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> dict[str, Any]:
        out = self.etcd.etcdctl("get", "--prefix", f"{ROOT}/{prefix}", "-w", "json")
        result: dict[str, Any] = {}
        for kv in json.loads(out).get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            value = base64.b64decode(kv["value"])
            try:
                result[key] = json.loads(value)
            except ValueError:
                result[key] = value.decode(errors="replace")
        return result

    def bindings(self, scope: str = "lan") -> dict[str, dict[str, Any]]:
        return {v["ip"]: v for v in self.get_prefix(f"leases/{scope}/").values()}

    def close(self) -> None:
        for proc in [*self.spokes.values(), *self.hubs.values()]:
            if proc.alive:
                proc.kill(signal.SIGTERM)
        if self.etcd_cluster is not None:
            self.etcd_cluster.close()
        else:
            self.etcd.close()
