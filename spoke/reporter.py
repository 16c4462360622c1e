"""Owns the spoke's utilization report stream to the hub (`ReportService.Report`).

The hub is found through the election: the leader's value is `{"node":..,"grpc":"host:port"}`.
One stream at a time carries one `UtilizationReport` per `interval`; acks are read as they come.
The leader is looked up again every `resolve_every` seconds and whenever the stream ends: a new
leader means a new stream to it. Failures reconnect after a small, capped backoff. Nothing here
touches the DHCP path: the runtime only increments `Counters`, and reports read the table.

Each report is sent under a span `hub.report.send` (kind CLIENT) whose context travels in the
report's `trace_context`; the hub's `hub.report` span is its child, so one trace shows a report
leaving the spoke and arriving at the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import propagate, trace

from hub.campaign import HubAddress, hub_address
from hubspoke.api.hubspoke.v1 import report_pb2, report_pb2_grpc
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.election import Election
from hubspoke.etcd.errors import EtcdError
from hubspoke.keys import Keys
from hubspoke.rpc.client import ClientTls, call_metadata, open_channel
from spoke.leases.table import BindingTable

log = logging.getLogger("hubspoke.reporter")

TRACER_NAME = "hubspoke.reporter"
SEND_SPAN = "hub.report.send"


class Counters:
    """Offers and acks per scope since start; the runtime increments, the reporter reads."""

    def __init__(self) -> None:
        self.offers: dict[str, int] = {}
        self.acks: dict[str, int] = {}

    def offer(self, scope: str) -> None:
        self.offers[scope] = self.offers.get(scope, 0) + 1

    def ack(self, scope: str) -> None:
        self.acks[scope] = self.acks.get(scope, 0) + 1


class CpuMeter:
    """Share of one core this process used between two calls (its measured load)."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def share(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        spent, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        return round(spent / elapsed, 3) if elapsed > 0 else 0.0


class RateMeter:
    """Per-second rates of `Counters` between two reports."""

    def __init__(self) -> None:
        self._at: float | None = None
        self._offers: dict[str, int] = {}
        self._acks: dict[str, int] = {}

    def rates(self, counters: Counters, now: float) -> dict[str, tuple[float, float]]:
        """scope -> (offers/s, acks/s) since the previous call (zero on the first)."""
        dt = (now - self._at) if self._at is not None else 0.0
        out: dict[str, tuple[float, float]] = {}
        for scope in counters.offers.keys() | counters.acks.keys():
            o = counters.offers.get(scope, 0) - self._offers.get(scope, 0)
            a = counters.acks.get(scope, 0) - self._acks.get(scope, 0)
            out[scope] = (o / dt, a / dt) if dt > 0 else (0.0, 0.0)
        self._at, self._offers, self._acks = now, dict(counters.offers), dict(counters.acks)
        return out


def build_report(
    node: str,
    state: str,
    table: BindingTable,
    rates: dict[str, tuple[float, float]],
    seq: int,
    now: float,
    capacity: Callable[[str], int] | None = None,
    state_reason: str = "",
) -> report_pb2.UtilizationReport:
    """One report: per scope, bound addresses, free addresses in our blocks (and the size of
    those blocks, `capacity`), offer/ack rates."""
    scopes = []
    for scope in sorted(set(table.scopes()) | rates.keys()):
        offers, acks = rates.get(scope, (0.0, 0.0))
        scopes.append(
            report_pb2.ScopeUtilization(
                scope=scope,
                bound=table.bound_by(scope, node),
                free=table.free_count(scope, now),
                offers_per_s=offers,
                acks_per_s=acks,
                capacity=capacity(scope) if capacity is not None else 0,
            )
        )
    return report_pb2.UtilizationReport(
        node=node, state=state, state_reason=state_reason, sent_at=now, scopes=scopes, seq=seq
    )


async def _cause(call: Any, error: Exception) -> Exception:
    """What broke a stream, from the error that ended it: a write refused because the RPC had
    already ended says only that; the RPC's status says why (UNAVAILABLE: the hub went away)."""
    if isinstance(error, asyncio.InvalidStateError) and call.done():
        code: Any = await call.code()
        return ConnectionError(f"report stream ended: {code.name}: {await call.details()}")
    return error


class Reporter:
    """Streams reports to whichever process holds the hub election. Run `run()` in a task."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        node: str,
        table: BindingTable,
        counters: Counters,
        *,
        interval: float = 1.0,
        token: str | None = None,
        state: Callable[[], str] = lambda: "NORMAL",
        state_reason: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = time.time,
        resolve_every: float = 3.0,
        max_backoff: float = 5.0,
        capacity: Callable[[str], int] | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        tls: ClientTls | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self._election = Election(client, keys.election())
        self.tls = tls
        self.tls_server_name = tls_server_name
        self.node = node
        self.table = table
        self.counters = counters
        self.interval = interval
        self.token = token
        self.state = state
        self.state_reason = state_reason
        self.clock = clock
        self.resolve_every = resolve_every
        self.max_backoff = max_backoff
        self.capacity = capacity
        self.hub: HubAddress | None = None
        self.sent = 0
        self.acked = 0
        self.last_ack: report_pb2.ReportAck | None = None
        self._meter = RateMeter()
        self._cpu = CpuMeter()
        self._tracer: trace.Tracer = (
            tracer_provider.get_tracer(TRACER_NAME)
            if tracer_provider is not None
            else trace.NoOpTracer()
        )

    async def resolve(self) -> HubAddress | None:
        leader = await self._election.leader()
        return hub_address(leader) if leader is not None else None

    async def run(self) -> None:
        """Report forever: find the hub, stream to it, start again when it ends or moves."""
        backoff = 0.1
        while True:
            try:
                hub = await self.resolve()
            except EtcdError as e:
                log.info("report.resolve_failed", extra={"error": repr(e)})
                hub = None
            if hub is None:
                await asyncio.sleep(min(self.resolve_every, self.max_backoff))
                continue
            if hub != self.hub:
                log.info(
                    "report.hub", extra={"hub": hub.node, "grpc": hub.grpc, "epoch": hub.epoch}
                )
                self.hub = hub
            started = time.monotonic()
            try:
                await self._stream(hub)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.info("report.stream_ended", extra={"hub": hub.node, "error": repr(e)})
            if time.monotonic() - started > 2 * self.interval:
                backoff = 0.1  # the stream worked for a while: reconnect promptly
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _stream(self, hub: HubAddress) -> None:
        """One stream to `hub`; returns when the hub ends it or another process leads, raises
        what broke it otherwise.

        The call is made without client interceptors (its metadata passed here): see
        `hubspoke.rpc.client` for the task grpc.aio would otherwise leave pending when the hub dies.
        The reader and the writer are owned by a task group; whichever ends first stops the
        other, and the call is cancelled and the channel closed before this returns.
        """
        channel = open_channel(
            hub.grpc, tls=self.tls, server_name=self.tls_server_name, intercept=False
        )
        try:
            stub: Any = report_pb2_grpc.ReportServiceStub(channel)
            call: Any = stub.Report(metadata=call_metadata(self.token))
            try:
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self._read_acks(call), name="report-acks")
                    writer = tg.create_task(self._write_reports(call, hub), name="report-writer")
                    reader.add_done_callback(lambda _: writer.cancel())
                    writer.add_done_callback(lambda _: reader.cancel())
            except ExceptionGroup as eg:
                raise await _cause(call, eg.exceptions[0]) from None
            finally:
                call.cancel()
        finally:
            await channel.close()

    async def _read_acks(self, call: Any) -> None:
        while True:
            ack: Any = await call.read()
            if not isinstance(ack, report_pb2.ReportAck):
                return  # the hub closed the stream
            self.acked += 1
            self.last_ack = ack

    async def _send(self, call: Any, report: report_pb2.UtilizationReport, hub: HubAddress) -> None:
        """Write one report under its `hub.report.send` span, whose context the report carries."""
        span = self._tracer.start_span(SEND_SPAN, kind=trace.SpanKind.CLIENT)
        try:
            if span.is_recording():
                span.set_attribute("hubspoke.node", self.node)
                span.set_attribute("hubspoke.seq", report.seq)
                span.set_attribute("hubspoke.hub", hub.node)
                span.set_attribute("hubspoke.epoch", hub.epoch)
            propagate.inject(report.trace_context, context=trace.set_span_in_context(span))
            await call.write(report)
            self.sent += 1
        except Exception as e:
            if span.is_recording():
                span.record_exception(e)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(e).__name__))
            raise
        finally:
            span.end()

    async def _write_reports(self, call: Any, hub: HubAddress) -> None:
        seq = 0
        next_resolve = time.monotonic() + self.resolve_every
        while True:
            seq += 1
            now = self.clock()
            rates = self._meter.rates(self.counters, now)
            report = build_report(
                self.node,
                self.state(),
                self.table,
                rates,
                seq,
                now,
                self.capacity,
                state_reason=self.state_reason(),
            )
            report.cpu = self._cpu.share()
            await self._send(call, report, hub)
            await asyncio.sleep(self.interval)
            if time.monotonic() >= next_resolve:
                next_resolve = time.monotonic() + self.resolve_every
                with contextlib.suppress(EtcdError):
                    current = await self.resolve()
                    if current != hub:
                        log.info("report.hub_changed", extra={"was": hub.node})
                        return
