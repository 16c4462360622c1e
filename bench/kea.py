"""ISC Kea 2.2 targets: a single `kea-dhcp4` and a hot-standby HA pair.

Owns Kea configuration (pure builders), the control-socket client, and the Kea processes of
one bench run. Each instance gets its own config, memfile lease file (persist on), control
socket, KEA_PIDFILE_DIR and KEA_LOCKFILE_DIR in the run's work directory. The HA pair uses
`libdhcp_ha.so` with `libdhcp_lease_cmds.so`, lease updates on (as shipped), and
multi-threading with a dedicated HTTP listener per peer, so no kea-ctrl-agent is needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.target import AddressPlan, BenchEnv, TargetFailed, TargetUnavailable
from tests.lab.netlab import Host

KEA_DHCP4 = "kea-dhcp4"
HA_PORT = 8001
READY_TIMEOUT_S = 30.0
THREADS = 2
PACKET_QUEUE = 256
HOOK_PACKAGES = ("kea-dhcp4-server", "kea-common")

JsonDict = dict[str, Any]


def find_hook(library: str, listing: str | None = None) -> str:
    """Path of a Kea hook library, from `dpkg -L` of the Kea packages (or `listing`)."""
    if listing is None:
        proc = subprocess.run(
            ["dpkg", "-L", *HOOK_PACKAGES], capture_output=True, text=True, timeout=30, check=False
        )
        listing = proc.stdout
    for line in listing.splitlines():
        if line.strip().endswith("/" + library):
            return line.strip()
    raise TargetUnavailable(f"Kea hook {library} not found in {', '.join(HOOK_PACKAGES)}")


@dataclass(frozen=True)
class HaPeer:
    name: str
    address: str
    role: str  # "primary" or "standby"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HA_PORT}/"


def ha_hook_parameters(this_server: str, peers: list[HaPeer]) -> JsonDict:
    """The HA hook's parameters: hot-standby, lease updates on, dedicated HTTP listener."""
    return {
        "high-availability": [
            {
                "this-server-name": this_server,
                "mode": "hot-standby",
                "heartbeat-delay": 1000,
                "max-response-delay": 3000,
                "max-ack-delay": 5000,
                "max-unacked-clients": 0,
                "send-lease-updates": True,
                "sync-leases": True,
                "multi-threading": {
                    "enable-multi-threading": True,
                    "http-dedicated-listener": True,
                    "http-listener-threads": THREADS,
                    "http-client-threads": THREADS,
                },
                "peers": [
                    {"name": p.name, "url": p.url, "role": p.role, "auto-failover": True}
                    for p in peers
                ],
            }
        ]
    }


def kea_config(
    *,
    workdir: Path,
    interface: str,
    plan: AddressPlan,
    hooks: list[JsonDict] | None = None,
) -> JsonDict:
    """A complete kea-dhcp4 configuration for one instance living in `workdir`."""
    dhcp4: JsonDict = {
        "interfaces-config": {"interfaces": [interface]},
        "control-socket": {"socket-type": "unix", "socket-name": str(workdir / "kea.sock")},
        "lease-database": {
            "type": "memfile",
            "persist": True,
            "name": str(workdir / "leases.csv"),
        },
        "valid-lifetime": 3600,
        "multi-threading": {
            "enable-multi-threading": True,
            "thread-pool-size": THREADS,
            "packet-queue-size": PACKET_QUEUE,
        },
        "subnet4": [
            {
                "id": 1,
                "subnet": plan.subnet,
                "pools": [{"pool": f"{plan.pool_first} - {plan.pool_last}"}],
            }
        ],
        # WARN: Kea logs every allocation at INFO, which would measure its logger.
        "loggers": [
            {
                "name": "kea-dhcp4",
                "output_options": [{"output": str(workdir / "kea.log")}],
                "severity": "WARN",
            }
        ],
    }
    if hooks:
        dhcp4["hooks-libraries"] = hooks
    return {"Dhcp4": dhcp4}


def kea_command(
    socket_path: Path, command: str, arguments: JsonDict | None = None, timeout: float = 5.0
) -> JsonDict:
    """Send one command over a Kea control socket; return the decoded answer.

    A Unix socket is a filesystem object, so this works from the root namespace.
    """
    request: JsonDict = {"command": command}
    if arguments is not None:
        request["arguments"] = arguments
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps(request).encode())
        buffer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            try:
                answer = json.loads(buffer)
            except ValueError:
                continue
            break
    answer = json.loads(buffer)
    if isinstance(answer, list):  # some commands answer a one-element list
        answer = answer[0]
    if not isinstance(answer, dict):
        raise TargetFailed(f"unexpected answer to {command}: {answer!r}")
    return answer


def ha_local_state(status: JsonDict) -> str | None:
    """This server's HA state from a `status-get` answer (None when HA is not reported)."""
    try:
        return str(status["arguments"]["high-availability"][0]["ha-servers"]["local"]["state"])
    except (KeyError, IndexError, TypeError):
        return None


class KeaInstance:
    """One kea-dhcp4 process in one namespace with its own files."""

    def __init__(self, host: Host, workdir: Path) -> None:
        self.host = host
        self.workdir = workdir
        self.proc: subprocess.Popen[Any] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "kea.sock"

    def start(self, config: JsonDict) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "kea-dhcp4.json"
        config_path.write_text(json.dumps(config, indent=2))
        check = self.host.run([KEA_DHCP4, "-t", str(config_path)], check=False)
        if check.returncode != 0:
            raise TargetFailed(f"kea-dhcp4 -t refused the config: {check.stdout}{check.stderr}")
        env = dict(
            os.environ,
            KEA_PIDFILE_DIR=str(self.workdir),
            KEA_LOCKFILE_DIR=str(self.workdir),
        )
        with (self.workdir / "stdout.log").open("w") as out:
            self.proc = self.host.popen(
                [KEA_DHCP4, "-c", str(config_path)], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def command(self, command: str) -> JsonDict:
        return kea_command(self.socket_path, command)

    def wait_ready(self, deadline: float) -> None:
        """Until the control socket answers `status-get`."""
        while True:
            self.check_alive()
            try:
                if self.command("status-get").get("result") == 0:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TargetFailed(f"kea in {self.host.netns} did not answer on its socket")
            time.sleep(0.2)

    def problem(self) -> str | None:
        if self.proc is None or self.proc.poll() is not None:
            return f"kea-dhcp4 in {self.host.netns} is not running"
        return None

    def check_alive(self) -> None:
        if self.problem() is not None:
            log = (self.workdir / "stdout.log").read_text()[-2000:]
            raise TargetFailed(f"kea-dhcp4 in {self.host.netns} exited: {log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.host.stop(self.proc)


class KeaServer:
    """ISC Kea 2.2, one server, memfile with persistence, multi-threaded."""

    name = "kea"
    summary = f"kea-dhcp4 2.2, memfile persist (no fsync), {THREADS} threads"
    relayed = False

    def __init__(self) -> None:
        self._instance: KeaInstance | None = None
        self._address = ""

    @property
    def target_address(self) -> str:
        return self._address

    def start(self, env: BenchEnv) -> None:
        host = env.add_host("kea")
        self._address = str(host.address().ip)
        self._instance = KeaInstance(host, env.workdir / "kea")
        self._instance.start(
            kea_config(
                workdir=self._instance.workdir, interface=host.ifname(env.segment), plan=env.plan
            )
        )
        self._instance.wait_ready(time.monotonic() + READY_TIMEOUT_S)

    def pids(self) -> list[int]:
        proc = self._instance.proc if self._instance else None
        return [proc.pid] if proc is not None else []

    def check(self) -> str | None:
        return self._instance.problem() if self._instance else "not started"

    def stop(self) -> None:
        if self._instance is not None:
            self._instance.stop()


class KeaHaPair:
    """Two Kea 2.2 servers in hot-standby; perfdhcp relays to the primary."""

    name = "kea-ha"
    summary = (
        f"kea-dhcp4 2.2 HA hot-standby, lease updates on, memfile persist, {THREADS} threads each"
    )
    relayed = False

    def __init__(self) -> None:
        self._instances: list[KeaInstance] = []
        self._address = ""
        self.ha_states: tuple[str, ...] = ()

    @property
    def target_address(self) -> str:
        return self._address

    def start(self, env: BenchEnv) -> None:
        hooks_dir = {
            "lease_cmds": find_hook("libdhcp_lease_cmds.so"),
            "ha": find_hook("libdhcp_ha.so"),
        }
        hosts = [env.add_host("kea-primary"), env.add_host("kea-standby")]
        peers = [
            HaPeer("server1", str(hosts[0].address().ip), "primary"),
            HaPeer("server2", str(hosts[1].address().ip), "standby"),
        ]
        self._address = peers[0].address
        for host, peer in zip(hosts, peers, strict=True):
            instance = KeaInstance(host, env.workdir / peer.name)
            hooks: list[JsonDict] = [
                {"library": hooks_dir["lease_cmds"]},
                {"library": hooks_dir["ha"], "parameters": ha_hook_parameters(peer.name, peers)},
            ]
            instance.start(
                kea_config(
                    workdir=instance.workdir,
                    interface=host.ifname(env.segment),
                    plan=env.plan,
                    hooks=hooks,
                )
            )
            self._instances.append(instance)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for instance in self._instances:
            instance.wait_ready(deadline)
        self._wait_hot_standby(deadline)

    def _wait_hot_standby(self, deadline: float) -> None:
        """Until both peers report hot-standby (`status-get`) and the primary's heartbeat agrees."""
        states: list[str | None] = []
        while time.monotonic() < deadline:
            for instance in self._instances:
                instance.check_alive()
            states = [ha_local_state(i.command("status-get")) for i in self._instances]
            if all(state == "hot-standby" for state in states):
                beat = self._instances[0].command("ha-heartbeat")
                if beat.get("arguments", {}).get("state") == "hot-standby":
                    self.ha_states = tuple(str(s) for s in states)
                    return
            time.sleep(0.25)
        raise TargetFailed(f"the Kea HA pair did not reach hot-standby: states {states}")

    def pids(self) -> list[int]:
        return [i.proc.pid for i in self._instances if i.proc is not None]

    def check(self) -> str | None:
        """None while both peers run and stay in hot-standby."""
        for instance in self._instances:
            problem = instance.problem()
            if problem is not None:
                return problem
        try:
            states = [ha_local_state(i.command("status-get")) for i in self._instances]
        except OSError as exc:
            return f"control socket: {exc}"
        if any(state != "hot-standby" for state in states):
            return f"HA left hot-standby: {states}"
        return None

    def stop(self) -> None:
        for instance in self._instances:
            instance.stop()
