"""The container entrypoint: dispatch by the first word, the spoke's capability check, health."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc  # type: ignore[import-untyped]
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hub.cli.main import parser as cli_parser
from hubspoke import container as entrypoint

STATUS = """Name:\tpython3
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000000000
CapBnd:\t{bnd}
"""


def test_missing_spoke_caps_reads_the_bounding_set() -> None:
    docker_default = "00000000a80425fb"  # Docker's default set holds both
    assert entrypoint.missing_spoke_caps(STATUS.format(bnd=docker_default)) == []
    only_bind = f"{1 << 10:016x}"
    assert entrypoint.missing_spoke_caps(STATUS.format(bnd=only_bind)) == ["NET_RAW"]
    assert entrypoint.missing_spoke_caps(STATUS.format(bnd="0" * 16)) == [
        "NET_BIND_SERVICE",
        "NET_RAW",
    ]


def test_commands_do_not_shadow_cli_verbs() -> None:
    verbs = set(cli_parser()._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]
    assert "status" in verbs
    assert not set(entrypoint.DISPATCH) & verbs


def _container(*args: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint replaces its process with the command (exec): run it as a child."""
    return subprocess.run(
        [sys.executable, "-m", "hubspoke.container", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_word_goes_to_the_cli() -> None:
    out = _container("no-such-verb")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_help_and_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint.main(["--help"]) == 0
    assert "hub ARGS" in capsys.readouterr().out
    assert entrypoint.main([]) == 2


def test_spoke_refuses_a_bad_config() -> None:
    # As root (or with no capability interpreter) the spoke runs in the same interpreter.
    out = _container("spoke", "--config", "/nonexistent/spoke.yaml")
    assert out.returncode == 2
    assert "cannot read" in out.stderr


async def _health_server(status: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", status)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.mark.parametrize(
    ("status", "code"),
    [(health_pb2.HealthCheckResponse.SERVING, 0), (health_pb2.HealthCheckResponse.NOT_SERVING, 1)],
)
async def test_health_against_a_real_server(
    status: int, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    server, port = await _health_server(status)
    try:
        rc = await asyncio.to_thread(entrypoint.main, ["health", "--target", f"127.0.0.1:{port}"])
    finally:
        await server.stop(None)
    assert rc == code
    assert ("SERVING" if code == 0 else "NOT_SERVING") in capsys.readouterr().out


async def test_health_of_a_closed_port(capsys: pytest.CaptureFixture[str]) -> None:
    server, port = await _health_server(health_pb2.HealthCheckResponse.SERVING)
    await server.stop(None)
    rc = await asyncio.to_thread(
        entrypoint.main, ["health", "--target", f"127.0.0.1:{port}", "--timeout", "1"]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err
