"""Thin grpc.aio servicers of the hubspoke.v1 API over a `ClusterView`.

Each method parses its request (hub/api/convert.py), calls the view, and translates the
answer; an `ApiError` from either step becomes the gRPC status of the same name with its
message. The report stream opens one span per report (`hub.report`), a child of the trace
context the report carries, else of the stream's (see hubspoke/rpc/trace.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc  # type: ignore[import-untyped]
from opentelemetry import propagate, trace

from hub.api import convert as conv
from hub.api.model import ApiError, ClusterView, InvalidArgument
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from hubspoke.api.hubspoke.v1 import management_pb2_grpc as mgrpc
from hubspoke.api.hubspoke.v1 import report_pb2 as rpb
from hubspoke.api.hubspoke.v1 import report_pb2_grpc as rgrpc

T = TypeVar("T")
Context: TypeAlias = Any  # grpc.aio.ServicerContext (grpc ships no type information)

_CODES: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
}

CLOSE_GRACE = 0.2  # seconds a finished report stream waits to learn whether it was cancelled
SERVICE_NAMES: tuple[str, ...] = (
    "hubspoke.v1.ReportService",
    "hubspoke.v1.ClusterService",
    "hubspoke.v1.ScopeService",
    "hubspoke.v1.LeaseService",
    "hubspoke.v1.SpokeService",
)


async def _abort(context: Context, error: ApiError) -> NoReturn:
    await context.abort(_CODES.get(error.code_name, grpc.StatusCode.UNKNOWN), error.message)
    raise AssertionError("unreachable: abort raises")


async def _guard(context: Context, work: Awaitable[T]) -> T:
    """Await `work`; an ApiError becomes the matching gRPC status."""
    try:
        return await work
    except ApiError as e:
        await _abort(context, e)


class ClusterServicer(mgrpc.ClusterServiceServicer):
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    async def GetClusterState(
        self, request: mpb.GetClusterStateRequest, context: Context
    ) -> mpb.ClusterState:
        try:
            return conv.cluster_to_pb(self._view.cluster_state())
        except ApiError as e:
            await _abort(context, e)


class ScopeServicer(mgrpc.ScopeServiceServicer):
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    async def ListScopes(
        self, request: mpb.ListScopesRequest, context: Context
    ) -> mpb.ListScopesResponse:
        docs = await _guard(context, self._view.list_scopes())
        return mpb.ListScopesResponse(scopes=[conv.scope_to_pb(d) for d in docs])

    async def GetScope(self, request: mpb.GetScopeRequest, context: Context) -> mpb.Scope:
        async def work() -> mpb.Scope:
            name = conv.require_name(request.name, "name")
            return conv.scope_to_pb(await self._view.get_scope(name))

        return await _guard(context, work())

    async def CreateScope(self, request: mpb.CreateScopeRequest, context: Context) -> mpb.Scope:
        async def work() -> mpb.Scope:
            doc = conv.parse_scope_doc(request.scope_json)
            return conv.scope_to_pb(await self._view.create_scope(doc))

        return await _guard(context, work())

    async def UpdateScope(self, request: mpb.UpdateScopeRequest, context: Context) -> mpb.Scope:
        async def work() -> mpb.Scope:
            name = conv.require_name(request.name, "name")
            doc = conv.parse_scope_doc(request.scope_json)
            if doc["name"] != name:
                raise InvalidArgument(
                    f"scope_json.name: {doc['name']!r} differs from name {name!r}"
                    " (a scope cannot be renamed; delete and create it)"
                )
            return conv.scope_to_pb(await self._view.update_scope(name, doc))

        return await _guard(context, work())

    async def DeleteScope(
        self, request: mpb.DeleteScopeRequest, context: Context
    ) -> mpb.DeleteScopeResponse:
        async def work() -> mpb.DeleteScopeResponse:
            await self._view.delete_scope(conv.require_name(request.name, "name"))
            return mpb.DeleteScopeResponse()

        return await _guard(context, work())


class LeaseServicer(mgrpc.LeaseServiceServicer):
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    async def GetLease(
        self, request: mpb.GetLeaseRequest, context: Context
    ) -> mpb.GetLeaseResponse:
        async def work() -> mpb.GetLeaseResponse:
            by = request.WhichOneof("by")
            if by == "ip":
                found = await self._view.get_leases(ip=conv.parse_ip(request.ip))
            elif by == "mac":
                found = await self._view.get_leases(mac=conv.parse_mac(request.mac))
            elif by == "client_id":
                cid = conv.parse_client_id(request.client_id)
                found = await self._view.get_leases(client_id=cid)
            else:
                raise InvalidArgument("by: one of ip, mac or client_id is required")
            return mpb.GetLeaseResponse(leases=[conv.lease_to_pb(x) for x in found])

        return await _guard(context, work())

    async def ListLeases(
        self, request: mpb.ListLeasesRequest, context: Context
    ) -> mpb.ListLeasesResponse:
        async def work() -> mpb.ListLeasesResponse:
            scope = conv.require_name(request.scope, "scope") if request.scope else None
            size = conv.page_size(request.page_size)
            found, token = await self._view.list_leases(scope, size, request.page_token)
            return mpb.ListLeasesResponse(
                leases=[conv.lease_to_pb(x) for x in found], next_page_token=token
            )

        return await _guard(context, work())


class SpokeServicer(mgrpc.SpokeServiceServicer):
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    async def Drain(self, request: mpb.DrainRequest, context: Context) -> mpb.DrainResponse:
        async def work() -> mpb.DrainResponse:
            await self._view.drain(conv.require_name(request.node, "node"))
            return mpb.DrainResponse()

        return await _guard(context, work())

    async def Undrain(self, request: mpb.UndrainRequest, context: Context) -> mpb.UndrainResponse:
        async def work() -> mpb.UndrainResponse:
            await self._view.undrain(conv.require_name(request.node, "node"))
            return mpb.UndrainResponse()

        return await _guard(context, work())


class ReportServicer(rgrpc.ReportServiceServicer):
    """One stream per spoke: every report is handed to the view and acked in order.

    A stream that names two nodes, or a report without a node, ends with INVALID_ARGUMENT.
    When a stream that named a node ends, the view hears it with the reason (None: clean).
    """

    def __init__(self, view: ClusterView, tracer: trace.Tracer) -> None:
        self._view = view
        self._tracer = tracer

    async def Report(
        self, request_iterator: AsyncIterator[rpb.UtilizationReport], context: Context
    ) -> AsyncIterator[rpb.ReportAck]:
        node: str | None = None
        error: str | None = None
        peer = context.peer()

        try:
            async for message in request_iterator:
                try:
                    report = conv.report_from_pb(message)
                    if node is not None and report.node != node:
                        raise InvalidArgument(
                            f"node: {report.node!r} on a stream opened by {node!r}"
                        )
                except ApiError as e:
                    error = e.message
                    await _abort(context, e)
                node = report.node
                parent = (
                    propagate.extract(dict(message.trace_context))
                    if message.trace_context
                    else None
                )
                with self._tracer.start_as_current_span(
                    "hub.report",
                    context=parent,
                    kind=trace.SpanKind.SERVER,
                    attributes={
                        "hubspoke.node": report.node,
                        "hubspoke.state": report.state,
                        "hubspoke.seq": report.seq,
                    },
                ):
                    try:
                        ack = self._view.on_report(report, peer)
                    except ApiError as e:
                        error = e.message
                        await _abort(context, e)
                yield conv.ack_to_pb(ack)
            # A peer that cancels (or whose connection drops) ends the request iterator just
            # like one that half-closed; the RPC's cancellation reaches this task a moment
            # later. Waiting briefly tells the two apart.
            await asyncio.sleep(CLOSE_GRACE)
        except asyncio.CancelledError:
            error = error or "cancelled by the peer"
            raise
        except Exception as e:
            error = error or f"{type(e).__name__}: {e}"
            raise
        finally:
            if node is not None:
                self._view.on_report_stream_closed(node, error)
