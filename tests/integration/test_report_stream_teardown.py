"""A broken report stream leaves nothing behind: no pending task, no async generator to finalize,
no asyncio error in the spoke's output.

In process: the reporter streams to a real gRPC server that is then stopped (the hub died),
that ends the stream by moving to another hub, or is cancelled mid-stream; afterwards no task
of the stream is left and a garbage collection makes asyncio report nothing. With processes: a
real spoke (`spoke.main`, cluster mode on loopback) streams to a real hub process (`hub.main`)
that is killed with SIGKILL, restarted, and stopped with SIGTERM; neither process's output holds
error-level asyncio output (`tests.lab.asyncio_audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc  # type: ignore[import-untyped]
import pytest
import yaml

from hub.campaign import HubAddress
from hubspoke.api.hubspoke.v1 import report_pb2, report_pb2_grpc
from hubspoke.etcd import EtcdClient
from hubspoke.keys import Keys
from spoke.leases.table import BindingTable
from spoke.reporter import Counters, Reporter
from tests.lab.asyncio_audit import log_errors
from tests.lab.etcd import EtcdServer, free_port, free_udp_port, wait_until

TOKEN = "teardown-token-0123456789"


@dataclass
class AckingHub(report_pb2_grpc.ReportServiceServicer):
    reports: list[report_pb2.UtilizationReport] = field(default_factory=list)

    async def Report(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for report in request_iterator:
            self.reports.append(report)
            yield report_pb2.ReportAck(epoch=1, hub_node="hub", seq=report.seq)


@contextlib.asynccontextmanager
async def hub_server(hub: AckingHub) -> AsyncIterator[tuple[grpc.aio.Server, str]]:
    server = grpc.aio.server()
    report_pb2_grpc.add_ReportServiceServicer_to_server(hub, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


class ResolvesTo(Reporter):
    """A reporter whose hub lookup answers `self.answer` (the election is not under test)."""

    answer: HubAddress | None = None

    async def resolve(self) -> HubAddress | None:
        return self.answer


@contextlib.contextmanager
def asyncio_reports() -> Iterator[list[dict[str, Any]]]:
    """Everything the running loop's exception handler is given, while inside.

    Garbage that earlier tests of the session left (their tasks are reported when collected)
    is collected first, so what is seen inside belongs to the code under test."""
    loop = asyncio.get_running_loop()
    gc.collect()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def settled() -> list[asyncio.Task[Any]]:
    """Tasks still pending besides this one, after garbage collection had its say."""
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0.05)
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


def reporter(etcd: EtcdClient, token: str | None = TOKEN) -> ResolvesTo:
    return ResolvesTo(
        etcd,
        Keys("/teardown"),
        "spoke-a",
        BindingTable(),
        Counters(),
        interval=0.05,
        token=token,
        resolve_every=0.2,
    )


async def test_a_stream_whose_hub_dies_leaves_no_task_behind(etcd: EtcdClient) -> None:
    hub = AckingHub()
    rep = reporter(etcd)
    with asyncio_reports() as seen:
        async with hub_server(hub) as (server, address):
            stream = asyncio.create_task(rep._stream(HubAddress("hub", address, 1)))

            async def acked() -> bool:
                return rep.acked >= 3

            await wait_until(acked)
            await server.stop(None)  # the hub is gone: the call ends by an error
            with pytest.raises((grpc.aio.AioRpcError, ConnectionError)):
                await stream
        assert await settled() == []
    assert seen == []


async def test_a_stream_that_moves_to_another_hub_leaves_no_task_behind(
    etcd: EtcdClient,
) -> None:
    first, second = AckingHub(), AckingHub()
    rep = reporter(etcd, token=None)
    with asyncio_reports() as seen:
        async with hub_server(first) as (_, a1), hub_server(second) as (_, a2):
            rep.answer = HubAddress("hub-1", a1, 1)
            run = asyncio.create_task(rep.run())

            async def on_first() -> bool:
                return len(first.reports) >= 2

            await wait_until(on_first)
            rep.answer = HubAddress("hub-2", a2, 2)  # the writer ends the stream: a new hub

            async def on_second() -> bool:
                return len(second.reports) >= 2

            await wait_until(on_second)
            run.cancel()  # the spoke stops mid-stream
            with contextlib.suppress(asyncio.CancelledError):
                await run
        assert await settled() == []
    assert seen == []


# -- processes -------------------------------------------------------------------------------------
@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    def start(self) -> None:
        self.log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(5)
        if self.log is not None:
            self.log.close()
            self.log = None
        return code

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("event") == name:
                        out.append(ev)
        return out

    def wait_event(self, name: str, count: int = 1, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while len(self.events(name)) < count:
            assert self.popen is not None and self.popen.poll() is None, self.tail()
            assert time.monotonic() < deadline, f"{self.name}: no {count}x {name}: {self.tail()}"
            time.sleep(0.05)

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


def hub_process(etcd_server: EtcdServer, root: str, port: int, tmp_path: Path) -> Process:
    cfg = {
        "node": "hub-1",
        "etcd": {"endpoints": [etcd_server.endpoint], "root": root},
        "grpc": {"listen": f"127.0.0.1:{port}", "tokens": [TOKEN]},
        "planner": {"interval": 0.5},
        "session_ttl": 2,
        "metrics": None,
        "log": {"level": "info", "format": "json"},
        "scopes": [
            {
                "name": "lan",
                "subnet": "127.0.0.0/8",
                "pools": ["127.0.5.0-127.0.5.255"],
                "interfaces": ["lo"],
                "lease_time": 300,
            }
        ],
    }
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = [sys.executable, "-m", "hub.main", "--config", str(path)]
    return Process("hub", argv, tmp_path / "hub.log")


def spoke_process(etcd_server: EtcdServer, root: str, tmp_path: Path) -> Process:
    cfg = {
        "node": "spoke-a",
        "mode": "cluster",
        "etcd": {"endpoints": [etcd_server.endpoint], "root": root},
        "dhcp": {"interfaces": ["lo"], "port": free_udp_port(), "client_port": free_udp_port()},
        "failover": {"journal": str(tmp_path / "spoke-a.journal")},
        "cluster": {
            "report_interval": 0.2,
            "session_ttl": 3,
            "token": TOKEN,
            "grpc_listen": f"127.0.0.1:{free_port()}",
        },
        "metrics": None,
        "log": {"level": "info", "format": "json"},
    }
    path = tmp_path / "spoke.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = [sys.executable, "-m", "spoke.main", "--config", str(path)]
    return Process("spoke-a", argv, tmp_path / "spoke.log")


@pytest.mark.timeout(120)
def test_spoke_output_stays_clean_when_the_hub_process_is_killed_and_stopped(
    etcd_server: EtcdServer, key_prefix: bytes, tmp_path: Path
) -> None:
    root = key_prefix.decode().rstrip("/")
    hub = hub_process(etcd_server, root, free_port(), tmp_path)
    spoke = spoke_process(etcd_server, root, tmp_path)
    hub.start()
    try:
        hub.wait_event("hub.elected")
        spoke.start()
        try:
            spoke.wait_event("report.hub")
            time.sleep(1.0)  # reports flow
            assert hub.stop(signal.SIGKILL) == -signal.SIGKILL
            spoke.wait_event("report.stream_ended")
            time.sleep(3.0)  # the dead hub's session lapses: streams to it fail meanwhile
            hub.start()
            hub.wait_event("hub.elected", count=2)
            spoke.wait_event("report.hub", count=2)
            time.sleep(1.0)
            ended = len(spoke.events("report.stream_ended"))
            assert hub.stop(signal.SIGTERM) == 0  # a graceful stop ends the stream from its side
            spoke.wait_event("report.stream_ended", count=ended + 1)
            time.sleep(2.0)
        finally:
            spoke_code = spoke.stop(signal.SIGTERM)
    finally:
        hub.stop(signal.SIGKILL)
    assert spoke_code == 0, spoke.tail()
    assert log_errors(spoke.log_path) == []
    assert log_errors(hub.log_path) == []
