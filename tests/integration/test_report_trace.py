"""One trace across gRPC: a real `Reporter` streams to a real hub API server (`build_server` on
port 0 over a fake view), found through a real etcd election. Each side has its own
TracerProvider (`hubspoke.observe.tracing.setup_tracing`), as two processes would; the spans
arrive over OTLP at an in-test receiver, and the hub's `hub.report` span is the child of the
spoke's `hub.report.send` span.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hubspoke.etcd import EtcdClient, Session
from hubspoke.etcd.election import Election
from hubspoke.keys import Keys
from hubspoke.observe.tracing import setup_tracing, shutdown_tracing
from hubspoke.procconfig import TracingSection
from spoke.leases.table import BindingTable
from spoke.reporter import SEND_SPAN, Counters, Reporter
from tests.lab.apifake import Api, running_api
from tests.lab.etcd import wait_until
from tests.lab.otlp import OtlpReceiver, ReceivedSpan

SPOKE, HUB = "spoke-1", "hub-1"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


async def hub_spans_wanted(api: Api, reporter: Reporter, count: int) -> None:
    async def enough() -> bool:
        return len(api.view.reports) >= count and reporter.acked >= count

    await wait_until(enough)


@contextlib.asynccontextmanager
async def reporting(
    etcd: EtcdClient,
    key_prefix: bytes,
    hub_provider: TracerProvider | None,
    spoke_provider: TracerProvider | None,
) -> AsyncIterator[tuple[Api, Reporter]]:
    """A hub API elected in etcd and a reporter streaming to it, each with its own provider."""
    keys = Keys(key_prefix.decode().rstrip("/"))
    async with running_api(tracer_provider=hub_provider) as api:
        session = await Session.open(etcd, ttl=5)
        try:
            value = json.dumps({"node": HUB, "grpc": api.address}).encode()
            await Election(etcd, keys.election()).campaign(session.lease_id, value)
            reporter = Reporter(
                etcd,
                keys,
                SPOKE,
                BindingTable(),
                Counters(),
                interval=0.05,
                tracer_provider=spoke_provider,
            )
            task = asyncio.create_task(reporter.run())
            try:
                yield api, reporter
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await session.close()


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


async def test_the_hubs_report_span_is_the_child_of_the_spokes_send_span(
    etcd: EtcdClient, key_prefix: bytes, receiver: OtlpReceiver
) -> None:
    def provider(service: str, node: str) -> TracerProvider:
        cfg = TracingSection(otlp_endpoint=receiver.endpoint, service_name=service)
        p = setup_tracing(cfg, node)
        assert p is not None
        return p

    hub_provider = provider("hubspoke-hub", HUB)
    spoke_provider = provider("hubspoke-spoke", SPOKE)
    async with reporting(etcd, key_prefix, hub_provider, spoke_provider) as (api, reporter):
        await hub_spans_wanted(api, reporter, 3)
    assert await shutdown_tracing(spoke_provider)
    assert await shutdown_tracing(hub_provider)
    spans = receiver.spans
    sends = {s.span_id: s for s in by_name(spans, SEND_SPAN)}
    arrivals = by_name(spans, "hub.report")
    assert len(arrivals) >= 3
    for hub_span in arrivals:
        send = sends.get(hub_span.parent_span_id)
        assert send is not None, f"hub.report span without its send span: {hub_span}"
        assert send.trace_id == hub_span.trace_id
        assert send.parent_span_id == b""  # each report opens its own trace
        assert send.kind == trace.SpanKind.CLIENT.value + 1  # OTLP kinds count from 1
        assert hub_span.kind == trace.SpanKind.SERVER.value + 1
        assert send.resource["service.name"] == "hubspoke-spoke"
        assert send.resource["hubspoke.node"] == SPOKE
        assert hub_span.resource["service.name"] == "hubspoke-hub"
        assert hub_span.resource["hubspoke.node"] == HUB
        assert send.attributes["hubspoke.seq"] == hub_span.attributes["hubspoke.seq"]
        assert send.attributes["hubspoke.hub"] == HUB
        assert hub_span.attributes["hubspoke.node"] == SPOKE
    assert len({s.trace_id for s in arrivals}) == len(arrivals)


def in_memory(sample_ratio: float, node: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(TracingSection(sample_ratio=sample_ratio), node, exporter)
    assert provider is not None
    return provider, exporter


async def test_a_report_the_spoke_did_not_sample_is_not_traced_at_the_hub(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    """The sampling decision travels with the context: the hub samples whatever its parent
    sampled, even with its own ratio at 1."""
    hub_provider, hub_spans = in_memory(1.0, HUB)
    spoke_provider, spoke_spans = in_memory(0.0, SPOKE)
    async with reporting(etcd, key_prefix, hub_provider, spoke_provider) as (api, reporter):
        await hub_spans_wanted(api, reporter, 3)
    await shutdown_tracing(spoke_provider)
    await shutdown_tracing(hub_provider)
    assert spoke_spans.get_finished_spans() == ()
    assert hub_spans.get_finished_spans() == ()


async def test_without_a_spoke_provider_each_hub_span_is_a_root(
    etcd: EtcdClient, key_prefix: bytes
) -> None:
    hub_provider, hub_spans = in_memory(1.0, HUB)
    async with reporting(etcd, key_prefix, hub_provider, None) as (api, reporter):
        await hub_spans_wanted(api, reporter, 2)
    await shutdown_tracing(hub_provider)
    got = [s for s in hub_spans.get_finished_spans() if s.name == "hub.report"]
    assert len(got) >= 2
    assert all(s.parent is None for s in got)
