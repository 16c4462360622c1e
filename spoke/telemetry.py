"""The spoke's OpenTelemetry tracing: provider setup, per-transaction spans, flush at shutdown.

Owns the span names and attribute keys of a DHCP transaction: one span `dhcp.<type>` per
transaction with `dhcp.type`, `dhcp.xid`, `dhcp.client`, `dhcp.scope`, `dhcp.outcome`,
`dhcp.reason`, and a child `etcd.commit` around the commit. Spans that are not sampled cost a
sampler call and nothing else: attributes are built only when `span.is_recording()`.

The provider is returned, never installed globally: the composition root passes it (or the
`DhcpTracer` built on it) to whoever needs it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from spoke.dhcp.message import MessageType

if TYPE_CHECKING:
    from spoke.config import TracingConfig

TRACER_NAME = "hubspoke.spoke"
ATTR_TYPE = "dhcp.type"
ATTR_XID = "dhcp.xid"
ATTR_CLIENT = "dhcp.client"
ATTR_SCOPE = "dhcp.scope"
ATTR_OUTCOME = "dhcp.outcome"
ATTR_REASON = "dhcp.reason"
ATTR_STATE = "hubspoke.state"
ATTR_NODE = "hubspoke.node"
COMMIT_SPAN = "etcd.commit"


def setup_tracing(
    cfg: TracingConfig, node: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider exporting over OTLP/gRPC to `cfg.otlp_endpoint`, or None when none is set.

    `exporter` replaces the OTLP exporter (tests). The batch queue is sized from the config:
    the SDK default (2048) drops spans in bursts.
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


class Transaction:
    """One DHCP transaction's span; end it once with its outcome (or use it as a context)."""

    __slots__ = ("_ended", "_tracer", "span")

    def __init__(self, span: trace.Span, tracer: trace.Tracer) -> None:
        self.span = span
        self._tracer = tracer
        self._ended = False

    @property
    def is_recording(self) -> bool:
        return self.span.is_recording()

    def set_scope(self, scope: str) -> None:
        if self.span.is_recording():
            self.span.set_attribute(ATTR_SCOPE, scope)

    @contextmanager
    def commit(self) -> Iterator[trace.Span]:
        """A child span `etcd.commit` around the commit; an exception marks it as an error."""
        if not self.span.is_recording():
            yield trace.INVALID_SPAN
            return
        ctx = trace.set_span_in_context(self.span)
        with self._tracer.start_as_current_span(
            COMMIT_SPAN, context=ctx, kind=SpanKind.CLIENT, end_on_exit=True
        ) as span:
            yield span

    def end(self, outcome: str, reason: str | None = None) -> None:
        """Record the outcome (`ack`, `nak`, `offer`, `drop`, ...) and end the span; once."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        if span.is_recording():
            span.set_attribute(ATTR_OUTCOME, str(outcome))
            if reason is not None:
                span.set_attribute(ATTR_REASON, str(reason))
        span.end()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.end("unknown")
            return
        if self.span.is_recording():
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.end("error", type(exc).__name__)


class DhcpTracer:
    """Starts transaction spans; with no provider every span is a no-op."""

    __slots__ = ("_tracer",)

    def __init__(self, provider: TracerProvider | None) -> None:
        self._tracer: trace.Tracer = (
            provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()
        )

    def transaction(
        self,
        msg_type: MessageType | str | None,
        xid: int,
        client_key: bytes,
        state: str | None = None,
    ) -> Transaction:
        """Start the span for one received message (`msg_type` None: no or bad option 53)."""
        if isinstance(msg_type, MessageType):
            kind = msg_type.name
        else:
            kind = (msg_type or "unknown").upper()
        span = self._tracer.start_span(f"dhcp.{kind.lower()}", kind=SpanKind.SERVER)
        if span.is_recording():
            span.set_attribute(ATTR_TYPE, kind)
            span.set_attribute(ATTR_XID, f"0x{xid:08x}")
            span.set_attribute(ATTR_CLIENT, client_key.hex())
            if state is not None:
                span.set_attribute(ATTR_STATE, state)
        return Transaction(span, self._tracer)
