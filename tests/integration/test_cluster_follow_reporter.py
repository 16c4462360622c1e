"""The spoke's reporter against a real etcd election and real gRPC servers on port 0.

Two fake hubs serve `ReportService`; the test's campaigns decide which one leads. The reporter
finds the leader, streams reports with the bearer token, reads acks, and follows a new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from hub.api.server import ServerTls
from hub.campaign import HubAddress, hub_address
from hubspoke.api.hubspoke.v1 import report_pb2, report_pb2_grpc
from hubspoke.etcd import EtcdClient, Session
from hubspoke.etcd.election import Election, Leader
from hubspoke.keys import Keys
from hubspoke.model import Block
from hubspoke.rpc.client import ClientTls
from spoke.leases.table import BindingTable
from spoke.reporter import Counters, RateMeter, Reporter
from tests.lab.apifake import running_api
from tests.lab.etcd import make_tls_files, wait_until


@dataclass
class FakeHub(report_pb2_grpc.ReportServiceServicer):
    name: str
    reports: list[report_pb2.UtilizationReport] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)

    async def Report(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        md = dict(context.invocation_metadata() or ())
        self.tokens.append(md.get("authorization"))
        async for report in request_iterator:
            self.reports.append(report)
            yield report_pb2.ReportAck(epoch=7, hub_node=self.name, seq=report.seq)


@contextlib.asynccontextmanager
async def serving(hub: FakeHub) -> AsyncIterator[str]:
    server = grpc.aio.server()
    report_pb2_grpc.add_ReportServiceServicer_to_server(hub, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def test_hub_address_from_leader_value() -> None:
    def leader(value: bytes) -> Leader:
        return Leader(key=b"k", value=value, epoch=42, lease=1)

    good = leader(json.dumps({"node": "hub-1", "grpc": "10.0.0.2:7500"}).encode())
    assert hub_address(good) == HubAddress("hub-1", "10.0.0.2:7500", 42)
    for bad in (b"", b"not json", b'{"node":"x"}', b'{"node":1,"grpc":"a:1"}', b"[]"):
        assert hub_address(leader(bad)) is None


def test_rate_meter() -> None:
    c, meter = Counters(), RateMeter()
    c.offer("lan")
    assert meter.rates(c, 100.0) == {"lan": (0.0, 0.0)}
    for _ in range(4):
        c.offer("lan")
    c.ack("lan")
    c.ack("dmz")
    assert meter.rates(c, 102.0) == {"lan": (2.0, 0.5), "dmz": (0.0, 0.5)}


async def test_reports_reach_the_leader_and_follow_a_new_one(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    keys = Keys(key_prefix.decode().rstrip("/"))
    election = Election(etcd, keys.election())
    table = BindingTable()
    block = Block("lan", IPv4Address("10.9.0.0"), IPv4Address("10.9.0.63"))
    table.set_blocks("lan", {block: 5})
    counters = Counters()
    hub_a, hub_b = FakeHub("hub-a"), FakeHub("hub-b")
    reporter = Reporter(
        etcd,
        keys,
        "spoke-1",
        table,
        counters,
        interval=0.1,
        token="t0k",
        resolve_every=0.3,
        capacity=lambda scope: 64,
    )
    async with serving(hub_a) as addr_a, serving(hub_b) as addr_b:
        session_a = await Session.open(etcd, ttl=5)
        session_b = await Session.open(etcd, ttl=5)
        task = asyncio.create_task(reporter.run())
        try:
            await asyncio.sleep(0.3)  # no leader yet: the reporter waits, nothing breaks
            assert reporter.sent == 0
            lead_a = await election.campaign(
                session_a.lease_id, json.dumps({"node": "hub-a", "grpc": addr_a}).encode()
            )

            async def a_has_reports() -> bool:
                counters.offer("lan")
                return len(hub_a.reports) >= 3 and reporter.acked >= 3

            await wait_until(a_has_reports)
            first = hub_a.reports[0]
            assert first.node == "spoke-1" and first.state == "NORMAL" and first.seq == 1
            assert [r.seq for r in hub_a.reports[:3]] == [1, 2, 3]
            lan = hub_a.reports[-1].scopes[0]
            assert (lan.scope, lan.bound, lan.free, lan.capacity) == ("lan", 0, 64, 64)
            assert hub_a.tokens[0] == "Bearer t0k"
            assert reporter.last_ack is not None and reporter.last_ack.hub_node == "hub-a"

            await election.resign(lead_a)
            await election.campaign(
                session_b.lease_id, json.dumps({"node": "hub-b", "grpc": addr_b}).encode()
            )

            async def b_has_reports() -> bool:
                return len(hub_b.reports) >= 2

            await wait_until(b_has_reports)
            assert reporter.hub is not None and reporter.hub.node == "hub-b"
            assert hub_b.tokens[0] == "Bearer t0k"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await session_a.close()
            await session_b.close()


async def test_reports_reach_a_hub_that_serves_mtls(
    etcd: EtcdClient, key_prefix: bytes, tmp_path: Path
) -> None:
    """cluster.hub_tls: the reporter dials the elected hub over TLS with a client certificate;
    without the certificate the same hub refuses the stream."""
    files = make_tls_files(tmp_path / "tls")
    keys = Keys(key_prefix.decode().rstrip("/"))
    table = BindingTable()
    table.set_blocks("lan", {Block("lan", IPv4Address("10.9.0.0"), IPv4Address("10.9.0.63")): 5})

    def reporter(tls: ClientTls | None) -> Reporter:
        return Reporter(
            etcd, keys, "spoke-1", table, Counters(), interval=0.1, token="tls-token",
            resolve_every=0.3, capacity=lambda scope: 64, tls=tls,
        )  # fmt: skip

    server_tls = ServerTls(files.server_cert, files.server_key, files.ca)
    async with running_api(tokens=["tls-token"], tls=server_tls) as api:
        session = await Session.open(etcd, ttl=5)
        await Election(etcd, keys.election()).campaign(
            session.lease_id, json.dumps({"node": "hub-a", "grpc": api.address}).encode()
        )
        plain = reporter(None)
        no_cert = reporter(ClientTls(ca_file=files.ca))
        good = reporter(ClientTls(files.ca, files.client_cert, files.client_key))
        tasks = [asyncio.create_task(r.run()) for r in (plain, no_cert, good)]
        try:

            async def acked() -> bool:
                return good.acked >= 3

            await wait_until(acked)
            assert {r.node for r, _ in api.view.reports} == {"spoke-1"}
            assert plain.acked == 0 and no_cert.acked == 0
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await session.close()
