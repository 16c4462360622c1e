"""The compose stack (deploy/compose.yaml) on a real Docker engine.

A dockerd of our own runs in a network namespace of its own (tests/lab/dockerlab.py). The
images are built offline from a debootstrap'd bookworm base through the Dockerfiles' base-image
argument; then deploy/compose.yaml comes up as written (3 etcd members, the hub, two spokes), with
one override: the "jaeger" service runs our OTLP receiver (tests/lab/otlp.py), since no
registry can give us Jaeger here. Clients are real udhcpc (busybox) containers on the stack's
network. Nothing here waits on a fixed sleep: every wait polls for a state, with a deadline.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hubspoke.assign import BucketMap
from hubspoke.rfc3074 import client_bucket
from tests.lab.dockerlab import REPO, DockerEngine, build_context

COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
POOL = (IPv4Address("172.30.0.100"), IPv4Address("172.30.0.199"))
# The first test also pays for the images: a cold machine debootstraps the base (about 40 s),
# downloads wheels and .debs and builds; compose commands take seconds each.
pytestmark = pytest.mark.timeout(900)
SPOKES = ("spoke-a", "spoke-b")
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except AssertionError as e:
            got, last = None, e
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


@dataclass
class Stack:
    engine: DockerEngine
    project: str
    files: list[Path]
    env: dict[str, str]
    base: str

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def compose(self, *args: str, check: bool = True) -> str:
        proc = self.engine.compose(self.project, self.files, *args, env=self.env, check=check)
        return proc.stdout + proc.stderr

    def cli(self, *args: str, hub: str | None = None) -> Any:
        where = ["--hub", hub] if hub else []
        out = self.engine.compose(
            self.project,
            self.files,
            "run",
            "--rm",
            "-T",
            "cli",
            *where,
            "--json",
            *args,
            env=self.env,
        ).stdout
        return json.loads(out)

    def udhcpc(self, mac: str) -> IPv4Address:
        """One udhcpc run in a fresh container with `mac`; the leased address."""
        proc = self.engine.docker(
            "run", "--rm", "--network", f"{self.project}_dhcp", "--mac-address", mac,
            "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
            self.base, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
            "-t", "8", "-T", "2", "-s", "/bin/true",
            check=False, timeout=120,
        )  # fmt: skip
        return lease_in(proc.stdout + proc.stderr, f"udhcpc {mac}")

    def bucket_map(self) -> BucketMap:
        raw = self.engine.docker(
            "exec", self.container("etcd-1"), "etcdctl", "get", "--print-value-only",
            "/hubspoke/v1/assign/buckets",
        ).stdout  # fmt: skip
        return BucketMap.decode(raw.strip().encode())

    def spans(self) -> list[dict[str, Any]]:
        logs = self.engine.docker("logs", self.container("jaeger")).stdout
        return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def lease_in(output: str, who: str) -> IPv4Address:
    m = re.search(r"lease of (\d+\.\d+\.\d+\.\d+) obtained", output)
    assert m, f"{who} got no lease:\n{output[-2000:]}"
    ip = IPv4Address(m.group(1))
    assert POOL[0] <= ip <= POOL[1], f"{who}: {ip} is outside the scope's pool"
    return ip


def random_mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def spokes_by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["node"]: s for s in status.get("spokes", [])}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose")
    with DockerEngine() as engine:
        base = engine.ensure_base_image()
        context = build_context(work / "context")
        tag = engine.token
        image = engine.build(context, "deploy/Dockerfile", f"hubspoke-test/hubspoke:{tag}", base)
        etcd = engine.build(context, "deploy/etcd.Dockerfile", f"hubspoke-test/etcd:{tag}", base)
        receiver = REPO / "tests" / "lab" / "otlp.py"
        # a bind mount of a missing file would make Docker create a directory in the tree
        assert receiver.is_file(), receiver
        override = work / "compose.test.yaml"
        override.write_text(
            json.dumps(
                {
                    "services": {
                        "jaeger": {
                            "image": image,
                            "entrypoint": ["python3", "/otlp_receiver.py", "-"],
                            "command": ["--listen", "0.0.0.0:4317"],
                            "volumes": [f"{receiver}:/otlp_receiver.py:ro"],
                            "healthcheck": {"disable": True},
                        }
                    }
                }
            )
        )
        s = Stack(
            engine=engine,
            project=f"hs{tag}",
            files=[COMPOSE_FILE, override],
            env={
                "HUBSPOKE_IMAGE": image,
                "ETCD_IMAGE": etcd,
                "JAEGER_IMAGE": image,
                "CLIENT_IMAGE": base,
                "HUBSPOKE_TOKEN": f"token-{tag}-{secrets.token_hex(8)}",
            },
            base=base,
        )
        try:
            s.compose("up", "-d", "--no-build")
            yield s
        finally:
            print(s.compose("logs", "--no-color", "--tail", "60", check=False)[-20000:])
            s.compose("down", "-v", "--timeout", "10", check=False)


def test_image_is_small_non_root_and_has_no_toolchain(stack: Stack) -> None:
    image = stack.env["HUBSPOKE_IMAGE"]
    cfg = stack.engine.inspect(image)["Config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["hubspoke-container"]
    assert "hubspoke-container" in cfg["Healthcheck"]["Test"]
    probe = stack.engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
        "for t in gcc cc g++ make pip pip3; do command -v $t; done; "
        "find /root/.cache /var/lib/apt/lists -mindepth 1 2>/dev/null; id -u",
    ).stdout.split()  # fmt: skip
    assert probe == ["10001"], f"found in the image: {probe}"
    size = int(stack.engine.inspect(image)["Size"])
    base_size = int(stack.engine.inspect(stack.base)["Size"])
    print(f"image {size / 1e6:.0f} MB, of which the base {base_size / 1e6:.0f} MB")


def test_services_become_healthy_through_grpc_health(stack: Stack) -> None:
    def all_healthy() -> bool:
        states = {
            s: stack.engine.inspect(stack.container(s))["State"].get("Health", {}).get("Status")
            for s in ("hub", *SPOKES)
        }
        assert all(v == "healthy" for v in states.values()), states
        return True

    wait_for("hub and spokes healthy", all_healthy, timeout=150)


def test_spoke_runs_unprivileged_with_exactly_its_two_capabilities(stack: Stack) -> None:
    for service, want in (("spoke-a", 1 << 10 | 1 << 13), ("hub", 0)):
        status = stack.engine.docker("exec", stack.container(service), "cat", "/proc/1/status")
        fields = dict(line.split(":", 1) for line in status.stdout.splitlines() if ":" in line)
        assert fields["Uid"].split()[0] == "10001", service
        assert int(fields["CapEff"].strip(), 16) == want, (service, fields["CapEff"])


def test_status_shows_the_hub_and_two_spokes_in_normal(stack: Stack) -> None:
    def ready(hub: tuple[str, ...]) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            status: dict[str, Any] = stack.cli("status")
            spokes = spokes_by_name(status)
            assert set(spokes) == set(SPOKES), status
            assert all(s["state"] == "NORMAL" for s in spokes.values()), status
            assert status["hub_node"] in hub, status
            assert sum(s.get("bucket_count", 0) for s in spokes.values()) == 256, status
            return status

        return probe

    # The hub process leads: spoke-b may win the election first (when the hub's first session
    # came before the etcd members had a quorum), but a spoke holds the role only while no hub
    # process campaigns, and hands it back at once when one queues.
    status = wait_for("two NORMAL spokes sharing the buckets", ready(("hub",)))
    assert all(s.get("bucket_count", 0) > 0 for s in spokes_by_name(status).values())


def test_hub_and_spokes_serve_metrics_in_their_containers(stack: Stack) -> None:
    scrape = (
        "import urllib.request, sys; "
        "print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/metrics').read().decode())"
    )
    for service, port, name in (
        ("hub", 9168, "hubspoke_hub_leader"),
        ("spoke-a", 9167, "hubspoke_dhcp_packets_total"),
        ("spoke-b", 9167, "hubspoke_state"),
    ):
        text = stack.engine.docker(
            "exec", stack.container(service), "python3", "-c", scrape, str(port)
        ).stdout
        assert name in text, f"{service}: no {name} in /metrics"


def test_client_container_gets_a_lease(stack: Stack) -> None:
    wait_for("buckets assigned", lambda: len(stack.bucket_map().counts()) == 2, timeout=120)
    out = stack.compose("run", "--rm", "-T", "client", check=False)
    ip = lease_in(out, "compose client")
    leases = stack.cli("leases", "--ip", str(ip))
    assert [lease["state"] for lease in leases] == ["bound"]
    assert leases[0]["node"] in SPOKES


def test_stopping_a_spoke_leaves_new_clients_served_by_the_other(stack: Stack) -> None:
    buckets = wait_for(
        "buckets on both spokes",
        lambda: (lambda m: m if len(m.counts()) == 2 else None)(stack.bucket_map()),
        timeout=120,
    )
    # New clients whose buckets spoke-a owns until it stops (udhcpc sends 01+MAC as client id).
    macs: list[str] = []
    while len(macs) < 3:
        mac = random_mac()
        cid = b"\x01" + mac_bytes(mac)
        if buckets.owner(client_bucket(cid, mac_bytes(mac))) == "spoke-a":
            macs.append(mac)
    stack.compose("stop", "--timeout", "10", "spoke-a")

    def spoke_b_owns_all() -> bool:
        assert stack.bucket_map().counts() == {"spoke-b": 256}
        return True

    wait_for("spoke-b owning every bucket", spoke_b_owns_all, timeout=60)
    for mac in macs:
        ip = stack.udhcpc(mac)
        leases = stack.cli("leases", "--mac", mac)
        assert [(lease["ip"], lease["node"]) for lease in leases] == [(str(ip), "spoke-b")]
    status = stack.cli("status")
    assert spokes_by_name(status)["spoke-b"]["state"] == "NORMAL"
    assert "spoke-a" not in spokes_by_name(status) or (
        spokes_by_name(status)["spoke-a"].get("bucket_count", 0) == 0
    )


def test_spans_from_the_hub_and_both_spokes_reach_the_receiver(stack: Stack) -> None:
    def nodes() -> set[str] | None:
        seen = {
            (span["resource"].get("service.name"), span["resource"].get("hubspoke.node"))
            for span in stack.spans()
        }
        want = {
            ("hubspoke-hub", "hub"),
            ("hubspoke-spoke", "spoke-a"),
            ("hubspoke-spoke", "spoke-b"),
        }
        assert want <= seen, seen
        return {node for _, node in seen}

    wait_for("spans from hub, spoke-a and spoke-b", nodes, timeout=60)


def test_stopping_the_hub_moves_the_role_to_the_eligible_spoke(stack: Stack) -> None:
    """spoke-b is hub-eligible: with the hub container stopped it takes the role and answers
    the CLI, asked as an operator would, through the compose file's HUBSPOKE_HUB ("hub" first:
    in this namespace, which has no route out, Docker's DNS takes 20 s to give up on a stopped
    container's name, and the CLI passes a name over after 3 s)."""
    stack.compose("stop", "--timeout", "10", "hub")

    def spoke_b_leads() -> dict[str, Any] | None:
        status: dict[str, Any] = stack.cli("status")
        assert status["hub_node"] == "spoke-b", status
        return status

    status = wait_for("spoke-b holding the hub role", spoke_b_leads, timeout=90)
    assert spokes_by_name(status)["spoke-b"]["state"] == "NORMAL"
    ip = stack.udhcpc(random_mac())  # DHCP goes on under the new hub
    leases = stack.cli("leases", "--ip", str(ip))
    assert [lease["node"] for lease in leases] == ["spoke-b"]
