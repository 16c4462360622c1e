"""A spoke under test: etcd and the spoke process inside a lab namespace on a DHCP segment.

Owns writing the spoke's YAML, starting it (a real process, the installed `spoke.main`),
waiting until it serves, killing it with real signals, and reading bindings back from etcd
with `etcdctl` inside the namespace. Used by the system tests, the demo and the benchmark.
The spoke's log is checked for asyncio errors at the test's teardown
(`tests.lab.asyncio_audit`).

    with Lab("hs") as lab:
        seg = lab.segment("lan")
        sl = SpokeLab.create(lab, seg, workdir)   # etcd + spoke on 10.77.0.2/24
        sl.start_spoke()
        ... clients on lab.host("c1", seg) ...
        sl.bindings()                              # {ip: binding dict} from etcd
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from tests.lab import asyncio_audit
from tests.lab.etcd import EtcdServer
from tests.lab.netlab import Host, Lab, Segment

ROOT = "/hubspoke/v1"
SERVER_IP = "10.77.0.2"
SUBNET = "10.77.0.0/24"
POOL = "10.77.0.30-10.77.0.250"
ROUTER = "10.77.0.1"
DNS = ["10.77.0.53", "10.77.0.54"]
DOMAIN = "lab.example"


def default_scopes() -> list[dict[str, Any]]:
    return [
        {
            "name": "lan",
            "subnet": SUBNET,
            "pools": [POOL],
            "lease_time": 120,
            "min_lease_time": 10,
            "max_lease_time": 600,
            "interfaces": ["eth0"],
            "options": {"routers": [ROUTER], "dns_servers": DNS, "domain_name": DOMAIN},
        }
    ]


@dataclass
class SpokeLab:
    lab: Lab
    segment: Segment
    server: Host
    etcd: EtcdServer
    workdir: Path
    node: str = "spoke-1"
    scopes: list[dict[str, Any]] = field(default_factory=default_scopes)
    dhcp_overrides: dict[str, Any] = field(default_factory=dict)
    metrics_port: int = 9167
    otlp_endpoint: str | None = None
    proc: subprocess.Popen[Any] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0

    @classmethod
    def create(
        cls,
        lab: Lab,
        segment: Segment,
        workdir: Path,
        *,
        server_ip: str = SERVER_IP,
        extra_segments: tuple[tuple[Segment, str], ...] = (),
        **kw: Any,
    ) -> SpokeLab:
        server = lab.host("srv", segment, f"{server_ip}/24")
        for seg, ip in extra_segments:
            server.attach(seg, ip)
        (workdir / "etcd").mkdir(parents=True, exist_ok=True)
        etcd = EtcdServer(workdir=workdir / "etcd", netns=server.netns)
        etcd.start()
        return cls(lab=lab, segment=segment, server=server, etcd=etcd, workdir=workdir, **kw)

    # -- the spoke process -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        interfaces = sorted({i for s in self.scopes for i in s.get("interfaces", [])} | {"eth0"})
        return {
            "node": self.node,
            "etcd": {"endpoints": [self.etcd.endpoint], "root": ROOT},
            "dhcp": {"interfaces": interfaces, "reuse_delay": 2, **self.dhcp_overrides},
            "failover": {"journal": str(self.workdir / f"{self.node}.journal")},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "tracing": {"otlp_endpoint": self.otlp_endpoint},
            "log": {"level": "info", "format": "json"},
            "scopes": self.scopes,
        }

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.node}.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.node}.log"

    def start_spoke(self, timeout: float = 30.0) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config()))
        ready = self.workdir / f"{self.node}.ready"
        ready.unlink(missing_ok=True)
        self.log_file = self.log_path.open("ab")
        self.starts += 1
        asyncio_audit.watch(self.node, self.log_path)
        self.proc = self.server.popen(
            [
                sys.executable,
                "-m",
                "spoke.main",
                "--config",
                str(self.config_path),
                "--ready-file",
                str(ready),
            ],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"spoke exited ({self.proc.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"spoke not ready in {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def kill_spoke(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal the spoke by PID and wait for it; returns its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(15)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def metrics(self) -> str:
        """The spoke's /metrics exposition, fetched from inside its namespace."""
        code = (
            "import urllib.request,sys;"
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{self.metrics_port}"
            "/metrics',timeout=5).read().decode())"
        )
        return str(self.server.run([sys.executable, "-c", code]).stdout)

    # -- etcd ------------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every key under `prefix` (relative to the root) with its decoded JSON value."""
        out = self.etcd.etcdctl("get", "--prefix", f"{ROOT}/{prefix}", "-w", "json")
        doc = json.loads(out)
        result: dict[str, dict[str, Any]] = {}
        for kv in doc.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            value = json.loads(base64.b64decode(kv["value"]))
            value["_mod_revision"] = kv.get("mod_revision")
            result[key] = value
        return result

    def bindings(self, scope: str = "lan") -> dict[str, dict[str, Any]]:
        """{ip: binding} for every binding in etcd under `scope`."""
        return {v["ip"]: v for v in self.get_prefix(f"leases/{scope}/").values()}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_spoke(signal.SIGTERM)
        self.etcd.close()
