"""Owns an OpenTelemetry tracer provider's life for any process: setup from a
`TracingSection` (OTLP/gRPC export, ratio sampling, a sized batch queue) and flush at shutdown.

The provider is returned, never installed globally: each composition root passes it to whoever
starts spans (the hub's gRPC server, the spoke's DHCP tracer and reporter).
"""

from __future__ import annotations

import asyncio
import re

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from hubspoke.procconfig import TracingSection

ATTR_NODE = "hubspoke.node"


def setup_tracing(
    cfg: TracingSection, node: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider exporting over OTLP/gRPC to `cfg.otlp_endpoint`, or None when none is set.

    `exporter` replaces the OTLP exporter (tests). The batch queue is sized from the config:
    the SDK default (2048) drops spans in bursts. Sampling follows a sampled parent (a span
    whose context arrived over gRPC), else `cfg.sample_ratio`.
    """
    if exporter is None:
        if cfg.otlp_endpoint is None:
            return None
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=re.sub(r"^https?://", "", cfg.otlp_endpoint), insecure=cfg.insecure
        )
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
        resource=Resource.create({SERVICE_NAME: cfg.service_name, ATTR_NODE: node}),
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=cfg.max_queue_size,
            max_export_batch_size=cfg.max_export_batch_size,
        )
    )
    return provider


async def shutdown_tracing(provider: TracerProvider | None, flush_seconds: float = 5.0) -> bool:
    """Flush queued spans, then shut the provider down; True if the flush completed in time.

    Runs in a thread: a synchronous flush on the event loop would block it, and would time out
    against any exporter target served by the same loop.
    """
    if provider is None:
        return True
    flushed = await asyncio.to_thread(provider.force_flush, int(flush_seconds * 1000))
    await asyncio.to_thread(provider.shutdown)
    return flushed
