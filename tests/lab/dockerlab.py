"""A real Docker engine for the container tests, and the images they run.

`DockerEngine` starts Debian's `dockerd` inside a network namespace of its own (unique to the
run) with its own socket and exec root, `--iptables=false --bridge=none`: every bridge, veth and
container network it creates lives in that namespace, so nothing of the host's network changes.
`nsenter --net` is used rather than `ip netns exec`, which would remount /sys and hide the
cgroup hierarchies dockerd needs. The engine is stopped by PID and its namespace deleted.

Images are built offline (`docker build --network none`), since no image registry is reachable:

- a base image imported from a debootstrap'd Debian bookworm root file system (python3, venv,
  busybox for udhcpc); the root file system tarball and the engine's data root are cached under
  `CACHE` (env HUBSPOKE_CONTAINER_CACHE), so the base is built once per machine;
- the project image from deploy/Dockerfile with BASE_IMAGE set to that base, from a build
  context holding the sources and a wheelhouse (pip download of requirements.lock);
- the etcd image from deploy/etcd.Dockerfile and Debian's etcd-server/etcd-client .debs.

Downloads go only to the package registries the host's pip and apt already use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("HUBSPOKE_CONTAINER_CACHE", "/var/cache/hubspoke-test"))
DOCKER = "/usr/bin/docker"  # Debian's client, the same release as its dockerd
COMPOSE = "/usr/bin/docker-compose"
BASE_IMAGE = "hubspoke-test/bookworm-base:1"
BASE_PACKAGES = ("python3", "python3-venv", "busybox", "ca-certificates")
SETUPTOOLS = "setuptools==84.2.1"  # builds our wheel inside the offline image build
_CMD_TIMEOUT_S = 600.0


class DockerLabError(RuntimeError):
    """The engine or an image could not be made here; the message says which step failed."""


def _run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = _CMD_TIMEOUT_S,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
        timeout=timeout,
        check=False,
        input=input_text,
    )
    if check and proc.returncode != 0:
        raise DockerLabError(
            f"`{' '.join(argv)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    return proc


def debian_mirror() -> str:
    """The Debian archive the host's apt uses for bookworm (debootstrap takes the same one)."""
    sources = Path("/etc/apt/sources.list.d")
    for f in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in f.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                key, _, value = line.partition(":")
                if value and not line.startswith(("#", " ")):
                    fields[key.strip()] = value.strip()
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    for line in legacy.read_text().splitlines() if legacy.is_file() else []:
        words = [w for w in line.split("#")[0].split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
            return words[1]
    raise DockerLabError("no bookworm archive in the host's apt sources for debootstrap")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rootfs_tarball() -> Path:
    """A debootstrap'd bookworm root file system as a tar file, made once and cached."""
    tar = CACHE / "bookworm-base-1.tar"
    with _locked(CACHE / "rootfs.lock"):
        if tar.is_file():
            return tar
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        try:
            root = work / "root"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    "bookworm",
                    str(root),
                    debian_mirror(),
                ],
                timeout=1200,
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                         "usr/share/man", "usr/share/info", "usr/share/locale"):  # fmt: skip
                for p in (root / junk).glob("*"):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    elif p.name != "lock":
                        p.unlink()
            _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(work / "t.tar"), "."])
            (work / "t.tar").rename(tar)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return tar


def wheelhouse() -> Path:
    """Every wheel of requirements.lock (and setuptools), downloaded once per lock file."""
    lock = (REPO / "requirements.lock").read_bytes()
    digest = hashlib.sha256(lock + SETUPTOOLS.encode()).hexdigest()[:12]
    out = CACHE / f"wheels-{digest}"
    with _locked(CACHE / "wheels.lock"):
        if (out / ".complete").is_file():
            return out
        tmp = CACHE / f"wheels-{digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
             "--platform", "manylinux_2_28_x86_64", "-d", str(tmp),
             "-r", str(REPO / "requirements.lock"), SETUPTOOLS],
            timeout=600,
        )  # fmt: skip
        (tmp / ".complete").touch()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def etcd_debs() -> Path:
    """Debian's etcd-server and etcd-client packages, downloaded once."""
    out = CACHE / "etcd-debs"
    with _locked(CACHE / "debs.lock"):
        if (out / ".complete").is_file():
            return out
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        os.chmod(out, 0o777)  # apt-get download drops to the _apt user where it can
        _run(["apt-get", "download", "etcd-server", "etcd-client"], cwd=out, timeout=600)
        if len(list(out.glob("*.deb"))) != 2:
            raise DockerLabError(f"apt-get download left {sorted(os.listdir(out))}")
        (out / ".complete").touch()
    return out


def build_context(dest: Path) -> Path:
    """A docker build context: the package sources, deploy/ and the offline wheels and debs."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", "requirements.lock", ".dockerignore"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("hubspoke", "hub", "spoke", "deploy"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore, dirs_exist_ok=True)
    for whl in wheelhouse().glob("*.whl"):
        shutil.copy2(whl, dest / "deploy" / "wheels" / whl.name)
    for deb in etcd_debs().glob("*.deb"):
        shutil.copy2(deb, dest / "deploy" / "debs" / deb.name)
    return dest


class DockerEngine:
    """dockerd in a network namespace of its own; see the module docstring."""

    def __init__(self, data_root: Path | None = None) -> None:
        self.token = secrets.token_hex(3)
        self.netns = f"hsdk-{self.token}"
        self.data_root = data_root or CACHE / "docker"
        # Unix socket paths are short: keep the run's directory under /tmp.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hsdk-{self.token}-", dir="/tmp"))
        self.socket = self.workdir / "docker.sock"
        self.env = {"DOCKER_HOST": f"unix://{self.socket}"}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    def start(self, timeout: float = 90.0) -> None:
        for tool in (DOCKER, COMPOSE, "dockerd", "nsenter"):
            if shutil.which(tool) is None:
                raise DockerLabError(f"{tool} is missing: `make deps` installs docker.io")
        self.data_root.mkdir(parents=True, exist_ok=True)
        # One engine per data root at a time (a second test run on this machine waits here).
        self._lock = open(self.data_root.parent / "dockerd.lock", "a")  # noqa: SIM115
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "nsenter", f"--net=/run/netns/{self.netns}", "dockerd",
                "--data-root", str(self.data_root),
                "--exec-root", str(self.workdir / "exec"),
                "--pidfile", str(self.workdir / "dockerd.pid"),
                "-H", f"unix://{self.socket}",
                "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                "--ip-masq=false", "--bridge=none",
                "--containerd-namespace", f"hsdk-{self.token}",
                "--containerd-plugins-namespace", f"hsdk-{self.token}-p",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DockerLabError(f"dockerd exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.docker("version", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise DockerLabError(f"dockerd did not answer in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.3)
        self._remove_leftovers()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(line for line in text.splitlines() if "module=grpc" not in line)[-4000:]

    def docker(
        self, *args: str, check: bool = True, timeout: float = _CMD_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return _run([DOCKER, *args], env=self.env, check=check, timeout=timeout)

    def compose(
        self,
        project: str,
        files: Sequence[Path],
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = _CMD_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        argv = [COMPOSE, "--ansi", "never", "-p", project]
        for f in files:
            argv += ["-f", str(f)]
        return _run([*argv, *args], env={**self.env, **(env or {})}, check=check, timeout=timeout)

    def inspect(self, name: str) -> dict[str, Any]:
        data = json.loads(self.docker("inspect", name).stdout)
        assert isinstance(data, list) and data
        first = data[0]
        assert isinstance(first, dict)
        return first

    def _remove_leftovers(self) -> None:
        """Containers, networks and volumes a killed earlier run left in the cached data root."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False)
        self.docker("network", "prune", "-f", check=False)
        self.docker("volume", "prune", "-f", check=False)
        self.docker("image", "prune", "-f", check=False)

    def ensure_base_image(self) -> str:
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
            tar = rootfs_tarball()
            self.docker(
                "import",
                "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", 'CMD ["/bin/bash"]',
                str(tar), BASE_IMAGE,
            )  # fmt: skip
        return BASE_IMAGE

    def build(self, context: Path, dockerfile: str, tag: str, base: str) -> str:
        self.docker(
            "build", "-q", "--network", "none", "-f", str(context / dockerfile),
            "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(context),
            timeout=1200,
        )  # fmt: skip
        return tag

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(DockerLabError, subprocess.TimeoutExpired):
                    ids = self.docker("ps", "-aq", timeout=30).stdout.split()
                    if ids:
                        self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
                    self.docker("network", "prune", "-f", check=False, timeout=60)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
            _run(["ip", "netns", "del", self.netns], check=False)
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
            shutil.rmtree(self.workdir / "exec", ignore_errors=True)

    def __enter__(self) -> DockerEngine:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
