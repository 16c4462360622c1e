"""The report stream: every report acked in order, the view hears a closed or broken stream,
bad streams end INVALID_ARGUMENT, and trace context crosses from the spoke's span to the hub's."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hub.api import convert as conv
from hub.api.model import ScopeUtilization, UtilizationReport
from hubspoke.api.hubspoke.v1 import report_pb2 as rpb
from tests.lab.apifake import EPOCH, HUB, Api, FakeView, running_api, stubs


def report(seq: int, node: str = "spoke-1") -> rpb.UtilizationReport:
    return conv.report_to_pb(
        UtilizationReport(
            node=node,
            state="NORMAL",
            state_reason="",
            sent_at=1_700_000_000.0 + seq,
            scopes=(ScopeUtilization("lan", bound=seq, free=64 - seq, acks_per_s=2.0),),
            seq=seq,
        )
    )


async def wait_closed(view: FakeView, count: int = 1) -> None:
    for _ in range(200):
        if len(view.closed) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the view heard {view.closed}, expected {count} closed streams")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as a:
        yield a


async def test_each_report_is_acked_and_kept(api: Api) -> None:
    async with stubs(api.address) as s:
        call = s.report.Report()
        for seq in range(1, 6):
            await call.write(report(seq))
            ack = await call.read()
            assert (ack.epoch, ack.hub_node, ack.seq) == (EPOCH, HUB, seq)
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
    got = [r for r, _ in api.view.reports]
    assert [r.seq for r in got] == [1, 2, 3, 4, 5]
    assert got[2].scopes == (ScopeUtilization("lan", bound=3, free=61, acks_per_s=2.0),)
    assert got[0].sent_at == 1_700_000_001.0
    assert all(peer.startswith("ipv4:127.0.0.1:") for _, peer in api.view.reports)
    await wait_closed(api.view)
    assert api.view.closed == [("spoke-1", None)]


async def test_a_generator_stream_gets_every_ack(api: Api) -> None:
    async def reports() -> AsyncIterator[rpb.UtilizationReport]:
        for seq in range(1, 21):
            yield report(seq)

    async with stubs(api.address) as s:
        acks = [a.seq async for a in s.report.Report(reports())]
    assert acks == list(range(1, 21))


async def test_a_cancelled_stream_is_noticed(api: Api) -> None:
    async with stubs(api.address) as s:
        call = s.report.Report()
        await call.write(report(1))
        await call.read()
        call.cancel()
        await wait_closed(api.view)
    assert api.view.closed == [("spoke-1", "cancelled by the peer")]


async def test_a_stream_that_sent_nothing_is_not_reported(api: Api) -> None:
    async with stubs(api.address) as s:
        call = s.report.Report()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
    assert api.view.closed == []


@pytest.mark.parametrize(
    ("reports", "message"),
    [
        ([report(1, node="")], "node: required"),
        ([report(1), report(2, node="spoke-2")], "node: 'spoke-2' on a stream opened by"),
    ],
)
async def test_bad_stream_ends_invalid_argument(
    api: Api, reports: list[rpb.UtilizationReport], message: str
) -> None:
    async with stubs(api.address) as s:
        call = s.report.Report()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            for r in reports:
                await call.write(r)
                await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(message)
    if len(reports) > 1:
        await wait_closed(api.view)
        assert api.view.closed[0][0] == "spoke-1"
        assert (api.view.closed[0][1] or "").startswith(message)


def hub_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "hub.report"]


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_report_span_is_a_child_of_the_spokes_span(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Per-report context: the spoke injects its span into UtilizationReport.trace_context."""
    provider, exporter = traced
    tracer = provider.get_tracer("spoke.reporter")
    async with running_api(tracer_provider=provider) as api, stubs(api.address) as s:
        call = s.report.Report()
        spoke_spans = []
        for seq in (1, 2):
            with tracer.start_as_current_span("spoke.report") as span:
                message = report(seq)
                propagate.inject(message.trace_context)
                await call.write(message)
                await call.read()
                spoke_spans.append(span.get_span_context())
        await call.done_writing()
    got = hub_spans(exporter)
    assert len(got) == 2
    for hub_span, spoke_ctx in zip(got, spoke_spans, strict=True):
        assert hub_span.parent is not None
        assert hub_span.parent.span_id == spoke_ctx.span_id
        assert hub_span.context.trace_id == spoke_ctx.trace_id
        assert hub_span.kind == trace.SpanKind.SERVER
        assert hub_span.attributes is not None and hub_span.attributes["hubspoke.node"] == "spoke-1"


async def test_stream_metadata_carries_the_context(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Without per-report context, the span current when the stream opened is the parent:
    the client interceptor put `traceparent` into the call's metadata."""
    provider, exporter = traced
    tracer = provider.get_tracer("spoke.reporter")
    async with running_api(tracer_provider=provider) as api, stubs(api.address) as s:
        with tracer.start_as_current_span("spoke.report_stream") as stream_span:
            call = s.report.Report()
        await call.write(report(1))
        await call.read()
        await call.done_writing()
    (hub_span,) = hub_spans(exporter)
    assert hub_span.parent is not None
    assert hub_span.parent.span_id == stream_span.get_span_context().span_id
    assert hub_span.context.trace_id == stream_span.get_span_context().trace_id


async def test_without_context_the_report_span_is_a_root(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    async with running_api(tracer_provider=provider) as api, stubs(api.address) as s:
        call = s.report.Report()
        await call.write(report(1))
        await call.read()
        await call.done_writing()
    (hub_span,) = hub_spans(exporter)
    assert hub_span.parent is None


ROOT = Path(__file__).resolve().parents[2]
SPOKE_SCRIPT = """
import asyncio, sys
from hubspoke.rpc.client import open_channel
from hubspoke.api.hubspoke.v1 import report_pb2 as rpb, report_pb2_grpc as rgrpc

async def main():
    channel = open_channel(sys.argv[1])
    call = rgrpc.ReportServiceStub(channel).Report()
    await call.write(rpb.UtilizationReport(node="spoke-9", state="NORMAL", seq=1))
    await call.read()
    print("acked", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_killed_spoke_breaks_its_stream(api: Api) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SPOKE_SCRIPT, api.address,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line == b"acked\n"
        assert api.view.closed == []
    finally:
        proc.kill()
        await proc.wait()
    await wait_closed(api.view)
    assert api.view.closed == [("spoke-9", "cancelled by the peer")]
