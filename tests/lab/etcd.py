"""Owns starting and stopping a real etcd (`/usr/bin/etcd`) for tests, the demo and benches.

    server = EtcdServer()            # or EtcdServer(tls=True, auth=True)
    server.start()                   # free loopback ports, temp data dir, waits for health
    config = server.client_config()  # an EtcdConfig for hubspoke.etcd.EtcdClient
    server.restart()                 # same data dir and ports (a graceful stop, then start)
    server.kill(); server.start()    # a crash and a recovery
    server.freeze(); server.thaw()   # SIGSTOP / SIGCONT: a hung etcd (connections stay open)
    server.close()                   # stop and delete the temp dir (also: `with EtcdServer() as s`)

`endpoint` is "<host>:<port>", host 127.0.0.1 by default (inside network namespace `netns` when
one is given: then only processes that can reach `host` there reach it); `etcdctl(...)` runs
etcdctl against this server with the right TLS and auth flags. Only processes this object
started are ever signalled, by PID. `extra_args` go to etcd as given (e.g.
`--quota-backend-bytes=...`); `timings` is `(heartbeat ms, election ms)`, or None for etcd's own
defaults (100, 1000), which are what the deployments in `deploy/` run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError
from hubspoke.etcd.transport import EtcdConfig

ETCD_BINARY = "/usr/bin/etcd"
ETCDCTL_BINARY = "/usr/bin/etcdctl"
ROOT_USER = "root"
ROOT_PASSWORD = "hubspoke-test-pw"


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or, with SOCK_DGRAM, UDP) port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS etcd: one CA signing a server and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=hubspoke-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    for name, cn, usage in (
        ("server", "127.0.0.1", "serverAuth,clientAuth"),
        ("client", "hubspoke-client", "clientAuth"),
    ):
        ext = directory / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _openssl(
            "req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.pem",
            cwd=directory,
        )  # fmt: skip
    return TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


class EtcdServer:
    """One single-member etcd on 127.0.0.1 with a temp data dir, owned by this object.

    `tls=True` serves HTTPS with client-certificate authentication (see `tls_files`);
    `auth=True` creates the root user (`ROOT_USER`/`ROOT_PASSWORD`) and enables etcd auth.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        auth: bool = False,
        workdir: Path | None = None,
        start_timeout: float = 30.0,
        netns: str | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        timings: tuple[int, int] | None = (50, 300),
    ) -> None:
        self.netns = netns
        self.host = host
        self.extra_args = tuple(extra_args)
        self.timings = timings
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="hubspoke-etcd-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.auth = auth
        self.start_timeout = start_timeout
        self.tls_files = make_tls_files(self.workdir / "tls") if tls else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._auth_enabled = False

    # -- addresses -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_files else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def client_config(self, **overrides: object) -> EtcdConfig:
        """An EtcdConfig reaching this server (TLS client cert and root auth when enabled)."""
        fields: dict[str, object] = {"endpoints": (self.endpoint,)}
        if self.tls_files:
            fields |= {
                "ca_file": self.tls_files.ca,
                "cert_file": self.tls_files.client_cert,
                "key_file": self.tls_files.client_key,
            }
        if self.auth:
            fields |= {"user": ROOT_USER, "password": ROOT_PASSWORD}
        fields |= overrides
        return EtcdConfig(**fields)  # type: ignore[arg-type]

    # -- lifecycle -------------------------------------------------------------------------

    def _in_netns(self) -> list[str]:
        """The prefix that runs a command in `netns` (its own loopback), or nothing."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _command(self) -> list[str]:
        peer_url = f"http://{self.host}:{self.peer_port}"
        cmd = [
            *self._in_netns(),
            ETCD_BINARY,
            "--name", "hubspoke-test",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"hubspoke-test={peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"hubspoke-test-{self.client_port}",
            *self._tuning(),
        ]  # fmt: skip
        if self.tls_files:
            cmd += [
                "--cert-file", str(self.tls_files.server_cert),
                "--key-file", str(self.tls_files.server_key),
                "--trusted-ca-file", str(self.tls_files.ca),
                "--client-cert-auth",
            ]  # fmt: skip
        return cmd

    def _tuning(self) -> list[str]:
        """Raft timings (when not etcd's defaults) and the extra arguments."""
        timing = []
        if self.timings is not None:
            heartbeat, election = self.timings
            timing = ["--heartbeat-interval", str(heartbeat), "--election-timeout", str(election)]
        return [*timing, *self.extra_args]

    def start(self) -> None:
        """Start etcd (data dir kept across restarts) and wait until it answers health checks."""
        if self.pid is not None:
            raise RuntimeError("etcd is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self._command(), stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self._wait_healthy()
        if self.auth and not self._auth_enabled:
            self.etcdctl("user", "add", ROOT_USER, f"--new-user-password={ROOT_PASSWORD}")
            self.etcdctl("auth", "enable")
            self._auth_enabled = True

    def wait_healthy(self) -> None:
        """Until this etcd answers a health check (RuntimeError after `start_timeout`)."""
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                raise RuntimeError(f"etcd exited during start; see {self.log_path}")
            try:
                self.etcdctl("endpoint", "health", "--command-timeout=1s", timeout=5.0)
                return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd not healthy; see {self.log_path}") from err
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: SIGTERM, then SIGKILL after `timeout` seconds."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """A crash: SIGKILL."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def freeze(self) -> None:
        """SIGSTOP: etcd hangs with its connections open (every call waits for its deadline)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Graceful stop, then start with the same data dir and ports."""
        self.stop()
        self.start()

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, sig)
            os.kill(process.pid, signal.SIGCONT)  # a frozen etcd acts on it only once continued
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10.0)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop etcd and delete the temporary directory (if this object created it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- etcdctl ---------------------------------------------------------------------------

    def etcdctl(self, *args: str, timeout: float = 30.0, stdin: bytes | None = None) -> str:
        """Run etcdctl (API v3) against this server; returns stdout, raises on failure.
        `stdin`: fed to etcdctl (`put KEY` reads its value from there)."""
        cmd = [*self._in_netns(), ETCDCTL_BINARY, f"--endpoints={self.client_url}"]
        if self.tls_files:
            cmd += [
                f"--cacert={self.tls_files.ca}",
                f"--cert={self.tls_files.client_cert}",
                f"--key={self.tls_files.client_key}",
            ]
        if self._auth_enabled:
            cmd.append(f"--user={ROOT_USER}:{ROOT_PASSWORD}")
        return _etcdctl([*cmd, *args], timeout, stdin)


def _etcdctl(argv: list[str], timeout: float, stdin: bytes | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["ETCDCTL_API"] = "3"
    done = subprocess.run(
        argv, capture_output=True, check=True, timeout=timeout, env=env, input=stdin
    )
    return done.stdout.decode()


# -- etcd out of space ---------------------------------------------------------------------------
FILL_PREFIX = "/hubspoke-test-fill/"
NOSPACE = "database space exceeded"


def fill_until_nospace(
    server: EtcdServer, *, chunk: int = 1 << 20, limit: int = 1000, prefix: str = FILL_PREFIX
) -> int:
    """Put `chunk`-byte values under `prefix` until etcd refuses for want of space (its
    NOSPACE alarm, which needs a `--quota-backend-bytes`); the number of values written.
    RuntimeError when `limit` values did not fill it."""
    value = os.urandom(chunk)
    for n in range(limit):
        try:
            server.etcdctl("put", f"{prefix}{n:06d}", stdin=value, timeout=30.0)
        except subprocess.CalledProcessError as err:
            if NOSPACE in err.stderr.decode(errors="replace"):
                return n
            raise
    raise RuntimeError(f"etcd not full after {limit} values of {chunk} bytes")


def alarms(server: EtcdServer) -> list[str]:
    """etcd's raised alarms (`alarm:NOSPACE`, ...), as `etcdctl alarm list` prints them."""
    return [line.strip() for line in server.etcdctl("alarm", "list").splitlines() if line.strip()]


def revision(server: EtcdServer) -> int:
    """The store's current revision (from the first endpoint that answers)."""
    out = json.loads(server.etcdctl("endpoint", "status", "-w", "json"))
    return int(out[0]["Status"]["header"]["revision"])


def clear_nospace(server: EtcdServer, prefix: str = FILL_PREFIX) -> None:
    """What an operator does: delete the filler, compact to the current revision, defragment
    (every member etcdctl dials), disarm the alarm."""
    server.etcdctl("del", "--prefix", prefix)
    server.etcdctl("compaction", "--physical", str(revision(server)), timeout=60.0)
    server.etcdctl("defrag", timeout=120.0)
    server.etcdctl("alarm", "disarm")


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 10.0, interval: float = 0.05
) -> None:
    """Poll an async predicate until true; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def wait_for_etcd(client: EtcdClient, *, within: float = 15.0) -> None:
    """Wait until a client's etcd answers `status` (after a restart the channel reconnects)."""

    async def answers() -> bool:
        try:
            await client.status(deadline=1.0)
        except EtcdError:
            return False
        return True

    await wait_until(answers, within=within, interval=0.1)


class EtcdMember(EtcdServer):
    """One member of a multi-member etcd cluster in its own network namespace (no TLS, no auth).

    Listens on `host` with fixed ports (2379 clients, 2380 peers: the namespace is its own);
    `etcdctl` dials every member, so it answers while a quorum lives. Built by `EtcdCluster`.
    """

    CLIENT_PORT = 2379
    PEER_PORT = 2380

    def __init__(
        self,
        *,
        name: str,
        members: dict[str, str],
        workdir: Path,
        netns: str,
        host: str,
        extra_args: Sequence[str] = (),
        timings: tuple[int, int] | None = (50, 500),
    ) -> None:
        super().__init__(
            workdir=workdir, netns=netns, host=host, extra_args=extra_args, timings=timings
        )
        self.name = name
        self.members = dict(members)  # name -> host of every member
        self.client_port = self.CLIENT_PORT
        self.peer_port = self.PEER_PORT
        self.forming = False  # while the cluster forms, `start` does not wait for health

    def _command(self) -> list[str]:
        initial = ",".join(f"{n}=http://{h}:{self.PEER_PORT}" for n, h in self.members.items())
        peer_url = f"http://{self.host}:{self.PEER_PORT}"
        return [
            *self._in_netns(),
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "hubspoke-test-cluster",
            *self._tuning(),
        ]  # fmt: skip

    def _wait_healthy(self) -> None:
        if not self.forming:
            super()._wait_healthy()

    def etcdctl(self, *args: str, timeout: float = 30.0, stdin: bytes | None = None) -> str:
        """etcdctl (API v3) dialing every member."""
        urls = ",".join(f"http://{h}:{self.CLIENT_PORT}" for h in self.members.values())
        return _etcdctl(
            [*self._in_netns(), ETCDCTL_BINARY, f"--endpoints={urls}", *args], timeout, stdin
        )


class EtcdCluster:
    """Several `EtcdMember`s started together; healthy once every member answers."""

    def __init__(self, members: list[EtcdMember]) -> None:
        if not members:
            raise ValueError("an etcd cluster needs members")
        self.members = members

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        for m in self.members:
            m.forming = True
            m.start()
        for m in self.members:
            m.forming = False
        self.members[0]._wait_healthy()

    def leader(self) -> str | None:
        """The name of the member that leads now (None when it cannot be told)."""
        try:
            out = json.loads(self.members[0].etcdctl("endpoint", "status", "-w", "json"))
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError):
            return None
        for entry in out:
            status = entry.get("Status", {})
            if status.get("leader") and status.get("leader") == status.get("header", {}).get(
                "member_id"
            ):
                host = entry.get("Endpoint", "").split("//")[-1].split(":")[0]
                return next((m.name for m in self.members if m.host == host), None)
        return None

    def close(self) -> None:
        for m in self.members:
            m.close()
