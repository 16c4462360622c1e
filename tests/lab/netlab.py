"""Network-namespace lab: owns every namespace, veth, bridge and process a test run creates.

A `Lab` builds isolated L2 segments out of network namespaces whose names are unique to the
run (`<prefix>-<6 hex>-<role>`) and tears all of them down on exit, even after an exception.
Each segment is a Linux bridge inside its own "switch" namespace; each host is a namespace with
one veth per segment it joins. Both ends of every veth are created directly inside lab
namespaces, so nothing is ever created in the root namespace. Processes started through
`Host.popen` are tracked and killed by PID (SIGTERM, then SIGKILL) at teardown.

Used by the system tests, the demo and the benchmark. Needs root and a working `ip netns`;
`check_environment` raises `LabError` with a clear message otherwise (tests never skip).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

IP = "ip"
_ROLE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
_TERM_GRACE_S = 3.0
_CMD_TIMEOUT_S = 30.0


class LabError(RuntimeError):
    """The lab cannot be built here (not root, no `ip netns`) or a lab command failed."""


def _ip(*args: str) -> None:
    """Run one `ip` command; raise LabError with its stderr when it fails."""
    proc = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")


def list_namespaces() -> set[str]:
    """Names of every network namespace `ip netns` knows, in any lab or none."""
    proc = subprocess.run(
        [IP, "netns", "list"], capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise LabError(f"`ip netns list` failed: {proc.stderr.strip()}")
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


def check_environment() -> None:
    """Raise LabError unless we are root and can create and delete a network namespace."""
    if os.geteuid() != 0:
        raise LabError("the network lab needs root (network namespaces); run as root")
    probe = f"hs-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"`ip netns` is not usable here: {exc}") from exc
    _ip("netns", "del", probe)


@dataclass(frozen=True)
class Segment:
    """One L2 segment: bridge `br0` inside the switch namespace `switch_ns`."""

    name: str
    switch_ns: str
    subnet: ipaddress.IPv4Network | None = None
    bridge: str = "br0"


@dataclass
class Host:
    """A namespace attached to one or more segments; runs commands and tracked processes."""

    name: str
    netns: str
    lab: Lab
    addresses: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)
    ifnames: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs `argv` inside this host's namespace."""
        return [IP, "netns", "exec", self.netns, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = _CMD_TIMEOUT_S,
        capture_output: bool = True,
        text: bool = True,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run` inside the namespace (bounded by `timeout`, checked by default)."""
        return subprocess.run(
            self.argv(argv),
            check=check,
            timeout=timeout,
            capture_output=capture_output,
            text=text,
            **kwargs,
        )

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start `argv` in the namespace; the lab kills it by PID at teardown."""
        # `ip netns exec` execs the command in place, so the PID is the command's own.
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self.argv(argv),
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = _TERM_GRACE_S) -> int:
        """SIGTERM `proc`, SIGKILL it after `grace` seconds; return its exit code."""
        return _terminate(proc, grace)

    def ping(self, address: str, count: int = 1, timeout_s: int = 2) -> bool:
        """True when `address` answers `count` ICMP echoes (busybox ping; no iputils needed)."""
        proc = self.run(
            ["busybox", "ping", "-c", str(count), "-W", str(timeout_s), address],
            check=False,
            timeout=count * timeout_s + 5,
        )
        return proc.returncode == 0

    def ifname(self, segment: Segment) -> str:
        """This host's interface name on `segment`."""
        try:
            return self.ifnames[segment.name]
        except KeyError:
            raise LabError(f"host {self.name} is not on segment {segment.name}") from None

    def address(self, segment: Segment | None = None) -> ipaddress.IPv4Interface:
        """This host's address (with prefix) on `segment`, or on its first addressed segment."""
        if segment is not None:
            try:
                return self.addresses[segment.name]
            except KeyError:
                raise LabError(f"host {self.name} has no address on {segment.name}") from None
        if not self.addresses:
            raise LabError(f"host {self.name} has no address")
        return next(iter(self.addresses.values()))

    @property
    def ip(self) -> str:
        """This host's first address, without prefix length, as text."""
        return str(self.address().ip)

    def attach(self, segment: Segment, ip: str | None = None) -> str:
        """Connect this host to `segment`; return the new interface name."""
        return self.lab.attach(self, segment, ip)


def _terminate(proc: subprocess.Popen[Any], grace: float) -> int:
    """Stop one process we started, by PID: SIGTERM, then SIGKILL after `grace`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=grace)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    return proc.returncode


class Lab:
    """A set of namespaces unique to this run; a context manager that always tears down."""

    def __init__(self, prefix: str = "hs") -> None:
        if not _ROLE_RE.match(prefix) or len(prefix) > 8:
            raise ValueError(f"bad lab prefix {prefix!r}: short, lowercase, digits, dashes")
        check_environment()
        self.prefix = prefix
        self.run_id = secrets.token_hex(3)
        self._namespaces: list[str] = []
        self._segments: dict[str, Segment] = {}
        self._hosts: dict[str, Host] = {}
        self._next_port = 0
        self._next_address: dict[str, int] = {}

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace this lab created and has not deleted yet."""
        return tuple(self._namespaces)

    def _netns_name(self, role: str) -> str:
        if not _ROLE_RE.match(role):
            raise ValueError(f"bad role {role!r}: lowercase letters, digits and dashes")
        return f"{self.prefix}-{self.run_id}-{role}"

    def _add_netns(self, role: str) -> str:
        name = self._netns_name(role)
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def segment(self, name: str, subnet: str | None = None) -> Segment:
        """A new L2 segment (bridge in namespace `<prefix>-<id>-sw-<name>`).

        With `subnet`, hosts attached without an explicit `ip` get the next free address
        in it (from .1 upwards).
        """
        if name in self._segments:
            raise ValueError(f"segment {name!r} already exists")
        netns = self._add_netns(f"sw-{name}")
        seg = Segment(
            name=name,
            switch_ns=netns,
            subnet=ipaddress.IPv4Network(subnet) if subnet is not None else None,
        )
        _ip("-n", netns, "link", "add", seg.bridge, "type", "bridge", "forward_delay", "0")
        _ip("-n", netns, "link", "set", seg.bridge, "type", "bridge", "mcast_snooping", "0")
        _ip("-n", netns, "link", "set", seg.bridge, "up")
        self._segments[name] = seg
        self._next_address[name] = 1
        return seg

    def host(
        self,
        name: str,
        segment: Segment | Sequence[Segment] | None = None,
        ip: str | Sequence[str | None] | None = None,
    ) -> Host:
        """A new host namespace `<prefix>-<id>-<name>` attached to `segment` (or several).

        `ip` is an address with prefix ("10.40.0.2/24"), or one per segment when several.
        """
        if name in self._hosts:
            raise ValueError(f"host {name!r} already exists")
        netns = self._add_netns(name)
        host = Host(name=name, netns=netns, lab=self)
        self._hosts[name] = host
        segments: list[Segment]
        if segment is None:
            segments = []
        elif isinstance(segment, Segment):
            segments = [segment]
        else:
            segments = list(segment)
        ips: list[str | None]
        if ip is None or isinstance(ip, str):
            ips = [ip] + [None] * max(0, len(segments) - 1)
        else:
            ips = list(ip)
        if len(ips) != len(segments) and segments:
            raise ValueError("give one ip per segment")
        for seg, addr in zip(segments, ips, strict=False):
            self.attach(host, seg, addr)
        return host

    def attach(self, host: Host, segment: Segment, ip: str | None = None) -> str:
        """Create a veth between `segment`'s bridge and `host`; return the host-side name."""
        if segment.name in host.ifnames:
            raise ValueError(f"host {host.name} is already on segment {segment.name}")
        ifname = f"eth{len(host.ifnames)}"
        port = f"p{self._next_port}"
        self._next_port += 1
        sw = segment.switch_ns
        # Both ends are born inside lab namespaces: the root namespace never sees them.
        peer = ("peer", "name", ifname, "netns", host.netns)
        _ip("-n", sw, "link", "add", port, "type", "veth", *peer)
        _ip("-n", sw, "link", "set", port, "master", segment.bridge)
        _ip("-n", sw, "link", "set", port, "up")
        host.ifnames[segment.name] = ifname
        if ip is None and segment.subnet is not None:
            ip = self._allocate(segment)
        if ip is not None:
            iface = ipaddress.IPv4Interface(ip)
            _ip("-n", host.netns, "addr", "add", str(iface), "dev", ifname)
            host.addresses[segment.name] = iface
        _ip("-n", host.netns, "link", "set", ifname, "up")
        return ifname

    def _allocate(self, segment: Segment) -> str:
        assert segment.subnet is not None
        taken = {
            h.addresses[segment.name].ip
            for h in self._hosts.values()
            if segment.name in h.addresses
        }
        while True:
            n = self._next_address[segment.name]
            self._next_address[segment.name] = n + 1
            if n >= segment.subnet.num_addresses - 1:
                raise LabError(f"segment {segment.name} has no free address")
            addr = segment.subnet.network_address + n
            if addr not in taken:
                return f"{addr}/{segment.subnet.prefixlen}"

    def hosts(self) -> Iterator[Host]:
        """The hosts created so far, in creation order."""
        return iter(self._hosts.values())

    def close(self) -> None:
        """Kill every process started here, then delete every namespace created here."""
        errors: list[str] = []
        for host in self._hosts.values():
            for proc in reversed(host.procs):
                try:
                    _terminate(proc, _TERM_GRACE_S)
                except (OSError, subprocess.SubprocessError) as exc:
                    errors.append(f"pid {proc.pid}: {exc}")
            host.procs.clear()
        # Anything still inside our namespaces was started by us (children of our processes).
        for netns in self._namespaces:
            self._kill_leftovers(netns)
        for netns in reversed(self._namespaces):
            try:
                _ip("netns", "del", netns)
            except LabError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        self._hosts.clear()
        self._segments.clear()
        if errors:
            raise LabError("lab teardown incomplete: " + "; ".join(errors))

    @staticmethod
    def _kill_leftovers(netns: str) -> None:
        proc = subprocess.run(
            [IP, "netns", "pids", netns],
            capture_output=True,
            text=True,
            timeout=_CMD_TIMEOUT_S,
            check=False,
        )
        pids = [int(p) for p in proc.stdout.split() if p.isdigit()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = []
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    alive.append(pid)
            if not alive:
                return
            deadline = time.monotonic() + _TERM_GRACE_S
            while time.monotonic() < deadline and any(_exists(p) for p in alive):
                time.sleep(0.05)
            pids = [p for p in alive if _exists(p)]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
