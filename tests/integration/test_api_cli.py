"""`python -m hub.cli.main` as a subprocess against a real API server over the fake view: tables,
--json, exit codes, tokens, scope files, and failover across several --hub addresses."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.cli.main import Target, call_any, resolve_each
from hub.health import HealthServer
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from tests.lab.apifake import EPOCH, Api, running_api

TOKEN = "cli-secret"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def hubspoke(*args: str, token: str | None = TOKEN, stdin: str | None = None) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBSPOKE_")}
    if token is not None:
        env["HUBSPOKE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli.main",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), timeout=60
    )
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api(tokens=[TOKEN]) as a:
        yield a


async def test_status_table(api: Api) -> None:
    r = await hubspoke("--hub", api.address, "status")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == f"hub:     hub-a at 127.0.0.1:7777 (epoch {EPOCH})"
    assert "1 in reserve, 1 handing over" in lines[2]
    header = next(line for line in lines if line.startswith("NODE"))
    assert header.split() == [
        "NODE", "STATE", "LIVE", "DRAINING", "BUCKETS", "BLOCKS", "lan", "BOUND/FREE", "CPU",
        "REPORT", "AGE",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :]}
    assert rows["spoke-1"] == ["spoke-1", "NORMAL", "yes", "no", "128", "1", "3/61", "-", "0.5s"]
    assert rows["spoke-2"][2] == "no" and rows["spoke-2"][-1] == "-"
    # aligned: every column starts at the same offset on every row
    starts = [header.index(h) for h in ("STATE", "LIVE", "BUCKETS")]
    for line in lines[lines.index(header) + 1 :]:
        assert [line[i - 2 : i] for i in starts] == ["  "] * 3


async def test_status_json(api: Api) -> None:
    r = await hubspoke("--hub", api.address, "--json", "status")
    assert r.code == 0, r.err
    state = json.loads(r.out)
    assert state["epoch"] == EPOCH and state["hub_node"] == "hub-a"
    assert [s["node"] for s in state["spokes"]] == ["spoke-1", "spoke-2"]
    assert state["spokes"][1]["report_age_s"] == -1
    assert state["spokes"][0]["utilization"][0]["bound"] == 3


async def test_failover_to_the_second_hub(api: Api) -> None:
    hubs = f"127.0.0.1:{closed_port()},{api.address}"
    r = await hubspoke("--hub", hubs, "--json", "spokes")
    assert r.code == 0, r.err
    assert [s["node"] for s in json.loads(r.out)] == ["spoke-1", "spoke-2"]


async def test_a_standby_holding_the_port_passes_the_call_on(api: Api) -> None:
    standby = HealthServer("127.0.0.1:0")  # what a hub process serves until it is elected
    port = await standby.start()
    try:
        r = await hubspoke("--hub", f"127.0.0.1:{port},{api.address}", "--json", "spokes")
        assert r.code == 0, r.err
        assert [s["node"] for s in json.loads(r.out)] == ["spoke-1", "spoke-2"]
        alone = await hubspoke("--hub", f"127.0.0.1:{port}", "status")
        assert alone.code == 1 and alone.err.startswith("hubspoke: UNIMPLEMENTED"), alone.err
    finally:
        await standby.stop()


async def test_no_hub_answers() -> None:
    r = await hubspoke("--hub", f"127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}", "status")
    assert r.code == 1
    assert r.err.startswith("hubspoke: UNAVAILABLE: ")


@pytest.mark.parametrize(("token", "reason"), [(None, "missing token"), ("nope", "bad token")])
async def test_unauthenticated(api: Api, token: str | None, reason: str) -> None:
    r = await hubspoke("--hub", api.address, "status", token=token)
    assert (r.code, r.err.strip()) == (1, f"hubspoke: UNAUTHENTICATED: {reason}")


async def test_token_flag(api: Api) -> None:
    r = await hubspoke("--hub", api.address, "--token", TOKEN, "status", token=None)
    assert r.code == 0, r.err


async def test_scope_commands(api: Api, tmp_path: Path) -> None:
    f = tmp_path / "branch.yaml"
    f.write_text("name: branch\nsubnet: 10.1.0.0/22\npools: ['10.1.0.10-10.1.1.255']\n")
    r = await hubspoke("--hub", api.address, "scopes", "create", str(f))
    assert r.code == 0, r.err
    assert json.loads(r.out)["subnet"] == "10.1.0.0/22"
    assert api.view.scopes["branch"]["pools"] == ["10.1.0.10-10.1.1.255"]

    r = await hubspoke("--hub", api.address, "scopes")
    assert [line.split()[0] for line in r.out.splitlines()] == ["NAME", "branch", "lan"]

    r = await hubspoke(
        "--hub", api.address, "scopes", "update", "branch", "-",
        stdin='{"name": "branch", "subnet": "10.1.0.0/22", "pools": [], "lease_time": 60}',
    )  # fmt: skip
    assert r.code == 0, r.err
    assert api.view.scopes["branch"]["lease_time"] == 60

    r = await hubspoke("--hub", api.address, "--json", "scopes", "show", "branch")
    assert json.loads(r.out)["lease_time"] == 60

    r = await hubspoke("--hub", api.address, "scopes", "delete", "branch")
    assert (r.code, r.out.strip()) == (0, "scope branch deleted")
    r = await hubspoke("--hub", api.address, "scopes", "show", "branch")
    assert (r.code, r.err.strip()) == (1, "hubspoke: NOT_FOUND: scope 'branch' does not exist")


async def test_leases(api: Api) -> None:
    r = await hubspoke("--hub", api.address, "leases", "--scope", "lan")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["SCOPE", "IP", "STATE"]
    assert [line.split()[1] for line in lines[1:]] == [f"10.0.0.{n}" for n in range(101, 106)]

    r = await hubspoke("--hub", api.address, "--json", "leases", "--client-id", "01:02:00:00:00:04")
    (lease,) = json.loads(r.out)
    assert lease["ip"] == "10.0.0.104" and lease["hw_address"] == "02:00:00:00:00:04"

    r = await hubspoke("--hub", api.address, "leases", "--ip", "10.0.0.999")
    assert r.code == 1 and r.err.startswith("hubspoke: INVALID_ARGUMENT: ip: not an IPv4")


async def test_leases_pages_through_everything(api: Api) -> None:
    r = await hubspoke("--hub", api.address, "--json", "leases", "--page-size", "2")
    assert [x["ip"] for x in json.loads(r.out)] == [f"10.0.0.{n}" for n in range(101, 106)]


async def test_drain_and_undrain(api: Api) -> None:
    r = await hubspoke("--hub", api.address, "drain", "spoke-1")
    assert (r.code, r.out.strip()) == (0, "spoke-1: draining")
    assert api.view.drained == {"spoke-1"}
    r = await hubspoke("--hub", api.address, "--json", "undrain", "spoke-1")
    assert json.loads(r.out) == {"node": "spoke-1", "draining": False}
    r = await hubspoke("--hub", api.address, "undrain", "spoke-1")
    assert r.code == 1
    assert r.err.strip() == "hubspoke: FAILED_PRECONDITION: node 'spoke-1' is not draining"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("bogus",),
        ("drain",),
        ("leases", "--ip", "10.0.0.1", "--mac", "02:00:00:00:00:01"),
        ("--cert", "/nonexistent.pem", "status"),
        ("--hub", ",", "status"),
        ("scopes", "create", "/nonexistent/scope.yaml"),
    ],
)
async def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    r = await hubspoke("--hub", f"127.0.0.1:{closed_port()}", *args)
    assert r.code == 2, (r.out, r.err)
    assert "hubspoke" in r.err


async def test_a_name_for_several_hub_processes_reaches_the_elected_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A headless Service's name resolves to every hub pod; the standby (health only) comes
    first here, and the CLI goes on to the next address of the same name."""
    async with running_api(tokens=[TOKEN]) as api:
        port = int(api.address.rpartition(":")[2])
        standby = HealthServer(f"127.0.0.2:{port}")  # same port, another loopback address
        await standby.start()
        real = socket.getaddrinfo

        def fake(host: str, *args: Any, **kwargs: Any) -> Any:
            if host == "hubs.hubspoke.test":
                return [
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                    for ip in ("127.0.0.2", "127.0.0.1")
                ]
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake)
        try:
            target = Target((f"hubs.hubspoke.test:{port}",), TOKEN, None, 5.0)
            assert await resolve_each(target.hubs[0]) == [
                (f"127.0.0.2:{port}", "hubs.hubspoke.test"),
                (f"127.0.0.1:{port}", "hubs.hubspoke.test"),
            ]
            state = await call_any(
                target,
                lambda s: s.cluster.GetClusterState(mpb.GetClusterStateRequest(), timeout=5),
            )
            assert state.hub_node == "hub-a"
        finally:
            await standby.stop()


STUCK_RESOLVER = """
import socket, sys, time
real = socket.getaddrinfo
def stuck(host, *args, **kwargs):
    if host == "stuck.hubspoke.test":
        time.sleep(120)  # a resolver with no answer (Docker's DNS with no route out: 20 s)
    return real(host, *args, **kwargs)
socket.getaddrinfo = stuck
from hub.cli.main import main
raise SystemExit(main(sys.argv[1:]))
"""


async def test_a_name_that_does_not_resolve_in_time_is_passed_over(api: Api) -> None:
    """The first --hub name hangs in the resolver: the CLI gives it RESOLVE_TIMEOUT seconds,
    answers from the next hub, and exits without waiting for the abandoned lookup; with no
    other hub it says which name did not resolve."""
    script = ["-c", STUCK_RESOLVER]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBSPOKE_")}
    env["HUBSPOKE_TOKEN"] = TOKEN

    async def run(*args: str) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *script, *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)  # the lookup: 120 s
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    r = await run("--hub", "stuck.hubspoke.test:7500", "--hub", api.address, "--json", "status")
    assert r.code == 0, r.err
    assert json.loads(r.out)["hub_node"] == "hub-a"
    r = await run("--hub", "stuck.hubspoke.test:7500", "status")
    assert r.code == 1
    assert "stuck.hubspoke.test:7500: the name did not resolve within 3 s" in r.err
