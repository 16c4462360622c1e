"""A hand-written ClusterView for the API tests, and a real grpc.aio server around it."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry.sdk.trace import TracerProvider

from hub.api.model import (
    AlreadyExists,
    BlockOwnership,
    ClusterState,
    FailedPrecondition,
    InvalidArgument,
    LeaseInfo,
    NotFound,
    ReportAck,
    ScopeUtilization,
    SpokeState,
    UtilizationReport,
)
from hub.api.server import ServerTls, build_server
from hubspoke.api.hubspoke.v1 import management_pb2_grpc as mgrpc
from hubspoke.api.hubspoke.v1 import report_pb2_grpc as rgrpc
from hubspoke.model import BindingState
from hubspoke.rpc.client import open_channel

EPOCH = 41
HUB = "hub-a"


def lease(n: int, scope: str = "lan", *, node: str = "spoke-1") -> LeaseInfo:
    return LeaseInfo(
        scope=scope,
        ip=IPv4Address(f"10.0.0.{100 + n}"),
        state=BindingState.BOUND,
        client_id=bytes([1, 2, 0, 0, 0, n]),
        hw_address=bytes([2, 0, 0, 0, 0, n]),
        start=1_700_000_000.0,
        expires=1_700_003_600.0,
        node=node,
        hostname=f"host{n}" if n % 2 else None,
    )


def scope_doc(name: str, subnet: str = "10.0.0.0/24") -> dict[str, Any]:
    return {"name": name, "subnet": subnet, "pools": ["10.0.0.100-10.0.0.199"]}


@dataclass
class FakeView:
    """Holds scopes, leases and drains in memory; records reports and closed streams."""

    scopes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"lan": scope_doc("lan")})
    leases: list[LeaseInfo] = field(default_factory=lambda: [lease(n) for n in range(1, 6)])
    drained: set[str] = field(default_factory=set)
    nodes: tuple[str, ...] = ("spoke-1", "spoke-2")
    reports: list[tuple[UtilizationReport, str]] = field(default_factory=list)
    closed: list[tuple[str, str | None]] = field(default_factory=list)

    def cluster_state(self) -> ClusterState:
        latest = {r.node: r for r, _ in self.reports}
        spokes = tuple(
            SpokeState(
                node=n,
                state=latest[n].state if n in latest else "NORMAL",
                state_reason="",
                live=n != "spoke-2",
                draining=n in self.drained,
                bucket_count=128,
                blocks=(f"lan/10.0.0.{100 + 64 * i}-10.0.0.{163 + 64 * i}",),
                utilization=(ScopeUtilization("lan", bound=3 + i, free=61 - i, offers_per_s=1.5),),
                report_age_s=0.5 if i == 0 else None,
                grpc_address=f"127.0.0.1:{7000 + i}",
            )
            for i, n in enumerate(self.nodes)
        )
        blocks = (
            BlockOwnership("lan", "10.0.0.100-10.0.0.163", "spoke-1"),
            BlockOwnership("lan", "10.0.0.164-10.0.0.199", "spoke-2", handover_to=""),
            BlockOwnership("lan", "10.0.0.200-10.0.0.210", None),
        )
        return ClusterState(HUB, EPOCH, "127.0.0.1:7777", spokes, blocks, 256, 0)

    async def get_leases(
        self,
        *,
        ip: IPv4Address | None = None,
        mac: bytes | None = None,
        client_id: bytes | None = None,
    ) -> list[LeaseInfo]:
        assert [ip, mac, client_id].count(None) == 2, "exactly one criterion"
        return [
            x for x in self.leases if x.ip == ip or x.hw_address == mac or x.client_id == client_id
        ]

    async def list_leases(
        self, scope: str | None, page_size: int, page_token: str
    ) -> tuple[list[LeaseInfo], str]:
        assert 1 <= page_size <= 1000
        try:
            start = int(page_token or "0")
        except ValueError:
            raise InvalidArgument("page_token: not a token this hub issued") from None
        rows = [x for x in self.leases if scope is None or x.scope == scope]
        page = rows[start : start + page_size]
        end = start + page_size
        return page, str(end) if end < len(rows) else ""

    async def list_scopes(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(d) for _, d in sorted(self.scopes.items())]

    async def get_scope(self, name: str) -> dict[str, Any]:
        if name not in self.scopes:
            raise NotFound(f"scope {name!r} does not exist")
        return copy.deepcopy(self.scopes[name])

    async def create_scope(self, doc: dict[str, Any]) -> dict[str, Any]:
        if "subnet" not in doc:
            raise InvalidArgument("subnet: required")
        if doc["name"] in self.scopes:
            raise AlreadyExists(f"scope {doc['name']!r} exists")
        self.scopes[doc["name"]] = copy.deepcopy(doc)
        return doc

    async def update_scope(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        if name not in self.scopes:
            raise NotFound(f"scope {name!r} does not exist")
        self.scopes[name] = copy.deepcopy(doc)
        return doc

    async def delete_scope(self, name: str) -> None:
        if self.scopes.pop(name, None) is None:
            raise NotFound(f"scope {name!r} does not exist")

    async def drain(self, node: str) -> None:
        if node not in self.nodes:
            raise NotFound(f"node {node!r} is not a member")
        self.drained.add(node)

    async def undrain(self, node: str) -> None:
        if node not in self.nodes:
            raise NotFound(f"node {node!r} is not a member")
        if node not in self.drained:
            raise FailedPrecondition(f"node {node!r} is not draining")
        self.drained.discard(node)

    def on_report(self, report: UtilizationReport, peer: str) -> ReportAck:
        self.reports.append((report, peer))
        return ReportAck(epoch=EPOCH, hub_node=HUB, seq=report.seq)

    def on_report_stream_closed(self, node: str, error: str | None) -> None:
        self.closed.append((node, error))


@dataclass
class Api:
    view: FakeView
    server: Any
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_api(
    *,
    tokens: Collection[str] = (),
    tls: ServerTls | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[Api]:
    view = FakeView()
    server, port = await build_server(
        view, listen="127.0.0.1:0", tokens=tokens, tls=tls, tracer_provider=tracer_provider
    )
    await server.start()
    try:
        yield Api(view, server, port)
    finally:
        await server.stop(grace=None)


def status_of(e: BaseException) -> tuple[Any, str]:
    assert isinstance(e, grpc.aio.AioRpcError), e
    return e.code(), e.details()


@dataclass
class Stubs:
    """Async stubs of every hubspoke.v1 service over one channel."""

    channel: Any
    cluster: Any = None
    scopes: Any = None
    leases: Any = None
    spokes: Any = None
    report: Any = None

    def __post_init__(self) -> None:
        self.cluster = mgrpc.ClusterServiceStub(self.channel)
        self.scopes = mgrpc.ScopeServiceStub(self.channel)
        self.leases = mgrpc.LeaseServiceStub(self.channel)
        self.spokes = mgrpc.SpokeServiceStub(self.channel)
        self.report = rgrpc.ReportServiceStub(self.channel)


@contextlib.asynccontextmanager
async def stubs(address: str, **kwargs: Any) -> AsyncIterator[Stubs]:
    channel = open_channel(address, **kwargs)
    try:
        yield Stubs(channel)
    finally:
        await channel.close()
