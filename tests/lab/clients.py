"""Real DHCP clients and a relay driven inside lab namespaces: udhcpc, dhclient, dhcpcd, dhcrelay.

Owns each program's command line, the hook script that records every event a client reports
(one environment dump per event, in the test's own directory), and the parsing of those dumps
into `ClientEvent`s. Nothing here touches the root namespace: the hook scripts configure the
leased address only on the client's own interface (udhcpc and dhclient leave that to their
script; dhcpcd does it itself, inside its namespace), dhclient keeps its lease and pid files in
the test directory, and dhcpcd runs under a private mount namespace (`ip netns exec` gives one)
with a tmpfs over /run and the test directory bound over /var/lib/dhcpcd.

    client = Udhcpc(host, tmp_path / "udhcpc")
    client.start()
    bound = client.wait_for(BOUND_REASONS)       # ClientEvent: ip, routers, dns, ...
    renewed = client.wait_for({"RENEW"}, after=bound.seq)
    client.release()
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.lab.netlab import Host
from tests.lab.spokelab import SpokeLab

BOUND_REASONS = frozenset({"BOUND", "REBOOT"})
FAILED_REASONS = frozenset({"FAIL", "LEASEFAIL", "NAK"})
_POLL_S = 0.1

# One script serves all three clients: dhclient and dhcpcd pass the event in $reason,
# udhcpc as $1. Each event is dumped to <seq>-<event>.env, written then renamed (atomic).
_HOOK = """#!/bin/sh
ev="${{reason:-$1}}"
f="{out}/$(date +%s%N)-$ev"
env > "$f.tmp" && mv "$f.tmp" "$f.env"
{configure}exit 0
"""

# What udhcpc's and dhclient's own scripts would do, limited to the client's interface:
# the address, and a default route via the first router (unicast renewals from a relayed
# client travel through it).
_CONFIGURE_ADDRESS = """gw=""
case "$ev" in
  bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"; gw="${router%% *}" ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    gw="${new_routers%% *}" ;;
  deconfig|RELEASE|STOP|EXPIRE|FAIL) ip addr flush dev "$interface" ;;
esac
[ -n "$gw" ] && ip route replace default via "$gw" dev "$interface"
"""


class ClientError(AssertionError):
    """A client did not report what the test waited for (with its log for the report)."""


@dataclass(frozen=True)
class ClientEvent:
    """One event a client reported to its hook script, normalised across clients."""

    seq: int
    reason: str
    ip: str | None
    routers: tuple[str, ...]
    dns: tuple[str, ...]
    domain: str | None
    lease_time: int | None
    server_id: str | None
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def parse(cls, seq: int, reason: str, env: Mapping[str, str]) -> ClientEvent:
        """Read udhcpc's names (ip, router, dns, ...) or dhclient's and dhcpcd's (new_*)."""
        if not reason.islower():  # dhclient and dhcpcd: upper-case reasons, new_* names
            ip = env.get("new_ip_address")
            routers = env.get("new_routers", "")
            dns = env.get("new_domain_name_servers", "")
            domain = env.get("new_domain_name")
            lease = env.get("new_dhcp_lease_time")
            sid = env.get("new_dhcp_server_identifier")
        else:
            ip = env.get("ip")
            routers = env.get("router", "")
            dns = env.get("dns", "")
            domain = env.get("domain")
            lease = env.get("lease")
            sid = env.get("serverid")
        return cls(
            seq=seq,
            reason=reason.upper(),
            ip=ip or None,
            routers=tuple(routers.split()),
            dns=tuple(dns.split()),
            domain=domain or None,
            lease_time=int(lease) if lease else None,
            server_id=sid or None,
            env=dict(env),
        )


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


class DhcpClient:
    """A client process in `host`'s namespace on `interface`, recording events in `workdir`."""

    program = "client"
    configures_address = True  # the hook script sets the address (udhcpc, dhclient)

    def __init__(self, host: Host, workdir: Path, interface: str = "eth0") -> None:
        self.host = host
        self.workdir = workdir
        self.interface = interface
        self.events_dir = workdir / "events"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self.script = workdir / "hook.sh"
        configure = _CONFIGURE_ADDRESS if self.configures_address else ""
        self.script.write_text(_HOOK.format(out=self.events_dir, configure=configure))
        self.script.chmod(0o755)
        self.log_path = workdir / f"{self.program}.log"
        self.proc: subprocess.Popen[Any] | None = None
        self._log: IO[bytes] | None = None
        self.runs = 0

    # -- process -------------------------------------------------------------------------
    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the client; the first run drops the lab's static address on the interface."""
        if self.runs == 0:
            self.prepare_interface()
        self.runs += 1
        self._log = self.log_path.open("ab")
        self._log.write(f"--- run {self.runs}: {shlex.join(self.argv())}\n".encode())
        self._log.flush()
        self.proc = self.host.popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT)

    def prepare_interface(self) -> None:
        """Before the first run: the interface starts with no address (the lab gave it one)."""
        self.host.run(["ip", "addr", "flush", "dev", self.interface])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None, "client not started"
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None, "client not started"
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ClientError(f"{self.program} did not exit in {timeout} s\n{self.log()}") from None
        self._close_log()
        return code

    def stop(self) -> None:
        """Stop the client without releasing (SIGKILL: no goodbye packet)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def release(self, timeout: float = 20.0) -> None:
        """Send DHCPRELEASE for the current lease and stop the client."""
        raise NotImplementedError

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    # -- events --------------------------------------------------------------------------
    def events(self) -> list[ClientEvent]:
        out = []
        for path in sorted(self.events_dir.glob("*.env")):
            seq, _, reason = path.stem.partition("-")
            out.append(ClientEvent.parse(int(seq), reason, _read_env(path)))
        return out

    def wait_for(
        self, reasons: Collection[str], *, after: int = 0, timeout: float = 30.0
    ) -> ClientEvent:
        """The first event with one of `reasons` (upper case) later than seq `after`."""
        wanted = {r.upper() for r in reasons}
        deadline = time.monotonic() + timeout
        while True:
            seen = [e for e in self.events() if e.seq > after]
            for e in seen:
                if e.reason in wanted:
                    return e
            failed = [e.reason for e in seen if e.reason in FAILED_REASONS]
            exited = self.proc is not None and self.proc.poll() is not None
            if time.monotonic() > deadline or failed or exited:
                raise ClientError(
                    f"{self.program}: no {sorted(wanted)} event within {timeout} s "
                    f"(saw {[e.reason for e in seen]}, exited={exited})\n{self.log()}"
                )
            time.sleep(_POLL_S)


class Udhcpc(DhcpClient):
    """busybox udhcpc in the foreground; `-R` sends DHCPRELEASE when it gets SIGTERM."""

    program = "udhcpc"

    def argv(self) -> list[str]:
        return [
            "busybox", "udhcpc", "-f", "-R", "-i", self.interface,
            "-t", "10", "-T", "2", "-A", "2", "-s", str(self.script),
        ]  # fmt: skip

    def renew_now(self) -> None:
        """SIGUSR1: renew at once (udhcpc unicasts a RENEWING request to its server)."""
        self.signal(signal.SIGUSR1)

    def release(self, timeout: float = 20.0) -> None:
        self.signal(signal.SIGTERM)
        self.wait_exit(timeout)


class Dhclient(DhcpClient):
    """ISC dhclient in the foreground with its own config, lease file and pid file."""

    program = "dhclient"

    def __init__(self, host: Host, workdir: Path, interface: str = "eth0") -> None:
        super().__init__(host, workdir, interface)
        self.config = workdir / "dhclient.conf"
        self.config.write_text(
            "request subnet-mask, routers, domain-name-servers, domain-name,\n"
            "        dhcp-lease-time, dhcp-server-identifier;\n"
        )
        self.lease_file = workdir / "dhclient.leases"
        self.pid_file = workdir / "dhclient.pid"

    def _common(self) -> list[str]:
        return [
            "dhclient", "-4", "-v", "-cf", str(self.config), "-sf", str(self.script),
            "-lf", str(self.lease_file), "-pf", str(self.pid_file),
        ]  # fmt: skip

    def argv(self) -> list[str]:
        return [*self._common(), "-d", self.interface]

    def release(self, timeout: float = 20.0) -> None:
        """`dhclient -r` with the same files: it stops the running one and sends RELEASE."""
        done = self.host.run(
            [*self._common(), "-r", self.interface], check=False, timeout=timeout + 10
        )
        if done.returncode != 0:
            raise ClientError(f"dhclient -r failed: {done.stdout}{done.stderr}")
        self.wait_exit(timeout)


class Dhcpcd(DhcpClient):
    """dhcpcd in the foreground (`-B`), IPv4 only, no ARP, with private state directories.

    /run (where dhcpcd keeps its pid file and control sockets) is a tmpfs private to the
    client's mount namespace; /var/lib/dhcpcd (DUID, lease files) is bound to the test's
    directory so a second run is the same client. dhcpcd sets the address itself.
    """

    program = "dhcpcd"
    configures_address = False

    def __init__(
        self,
        host: Host,
        workdir: Path,
        interface: str = "eth0",
        *,
        inform: str | None = None,
    ) -> None:
        super().__init__(host, workdir, interface)
        self.state_dir = workdir / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.config = workdir / "dhcpcd.conf"
        self.config.write_text("")
        self.inform = inform

    def argv(self) -> list[str]:
        dhcpcd = [
            "dhcpcd", "-B", "-d", "-4", "-A", "-f", str(self.config), "-c", str(self.script),
        ]  # fmt: skip
        if self.inform is not None:
            dhcpcd.append(f"--inform={self.inform}")
        dhcpcd.append(self.interface)
        inner = (
            "mount -t tmpfs hs-dhcpcd /run && mkdir -p /run/dhcpcd && "
            f"mount --bind {shlex.quote(str(self.state_dir))} /var/lib/dhcpcd && "
            f"exec {shlex.join(dhcpcd)}"
        )
        return ["sh", "-c", inner]

    def prepare_interface(self) -> None:
        """An informing client has its address configured already (dhcpcd needs it there)."""
        super().prepare_interface()
        if self.inform is not None:
            self.host.run(["ip", "addr", "add", self.inform, "dev", self.interface])

    def stop(self) -> None:
        """SIGTERM: dhcpcd stops its helper processes and deconfigures without a release."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            self.wait_exit()
        super().stop()

    def renew_now(self) -> None:
        """SIGUSR1: dhcpcd renews its lease at once."""
        self.signal(signal.SIGUSR1)

    def release(self, timeout: float = 20.0) -> None:
        """SIGALRM: dhcpcd releases its lease, deconfigures the interface and exits."""
        self.signal(signal.SIGALRM)
        self.wait_exit(timeout)


@dataclass
class Relay:
    """ISC dhcrelay in the foreground: clients on `downstream`, the server via `upstream`."""

    host: Host
    workdir: Path
    downstream: str
    upstream: str
    server: str
    agent_info: bool = False
    proc: subprocess.Popen[Any] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "dhcrelay.log"

    def argv(self) -> list[str]:
        argv = ["dhcrelay", "-d", "-4", "-pf", str(self.workdir / "dhcrelay.pid")]
        if self.agent_info:
            argv.append("-a")
        return [*argv, "-id", self.downstream, "-iu", self.upstream, self.server]

    def start(self, timeout: float = 15.0) -> None:
        """Start dhcrelay and wait until it reports its sockets open."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = self.host.popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "Sending on   Socket/fallback" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ClientError(f"dhcrelay did not start\n{self.log()}")
            time.sleep(_POLL_S)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def wait_binding(
    spoke: SpokeLab,
    ip: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    scope: str = "lan",
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll etcd (through `spoke`) until the binding for `ip` in `scope` satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        binding = spoke.bindings(scope).get(ip)
        if binding is not None and predicate(binding):
            return binding
        if time.monotonic() > deadline:
            raise AssertionError(
                f"binding {scope}/{ip} never matched in {timeout} s; last: {binding}\n"
                f"{spoke.log_tail()}"
            )
        time.sleep(0.2)


def mac_of(host: Host, interface: str = "eth0") -> str:
    """The interface's hardware address as bare lower-case hex (the bindings' `hw` form)."""
    out = host.run(["cat", f"/sys/class/net/{interface}/address"]).stdout
    return str(out).strip().replace(":", "").lower()
