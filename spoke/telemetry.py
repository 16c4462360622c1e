"""The spoke's OpenTelemetry tracing: per-transaction spans (provider setup and flush live in
`hubspoke.observe.tracing`, shared with the hub, and are re-exported here).

Owns the span names and attribute keys of a DHCP transaction: one span `dhcp.<type>` per
transaction with `dhcp.type`, `dhcp.xid`, `dhcp.client`, `dhcp.scope`, `dhcp.outcome`,
`dhcp.reason`, and a child `etcd.commit` around the commit. Spans that are not sampled cost a
sampler call and nothing else: attributes are built only when `span.is_recording()`.
Attribute values are cut to `MAX_ATTRIBUTE` characters (`dhcp.client` carries what a client sent:
a 255-byte client identifier is 512 hex digits), so a span's size does not depend on the peer.

The provider is returned, never installed globally: the composition root passes it (or the
`DhcpTracer` built on it) to whoever needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from hubspoke.observe.tracing import ATTR_NODE as ATTR_NODE
from hubspoke.observe.tracing import setup_tracing as setup_tracing
from hubspoke.observe.tracing import shutdown_tracing as shutdown_tracing
from spoke.dhcp.message import MessageType

TRACER_NAME = "hubspoke.spoke"
ATTR_TYPE = "dhcp.type"
ATTR_XID = "dhcp.xid"
ATTR_CLIENT = "dhcp.client"
ATTR_SCOPE = "dhcp.scope"
ATTR_OUTCOME = "dhcp.outcome"
ATTR_REASON = "dhcp.reason"
ATTR_STATE = "hubspoke.state"
COMMIT_SPAN = "etcd.commit"
MAX_ATTRIBUTE = 128


def capped(value: str) -> str:
    """`value` cut to `MAX_ATTRIBUTE` characters, a cut one ending in `...`."""
    if len(value) <= MAX_ATTRIBUTE:
        return value
    return value[: MAX_ATTRIBUTE - 3] + "..."


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
            self.span.set_attribute(ATTR_SCOPE, capped(scope))

    @contextmanager
    def commit(self) -> Iterator[trace.Span]:
        """A child span `etcd.commit` around the commit; an exception marks it as an error."""
        span = self.start_commit()
        try:
            yield span if span is not None else trace.INVALID_SPAN
        except BaseException as e:
            self.end_commit(span, e)
            raise
        self.end_commit(span)

    def start_commit(self) -> trace.Span | None:
        """The `etcd.commit` child span, started now (None when this transaction isn't traced);
        end it with `end_commit` (the callback form of `commit`)."""
        if not self.span.is_recording():
            return None
        ctx = trace.set_span_in_context(self.span)
        return self._tracer.start_span(COMMIT_SPAN, context=ctx, kind=SpanKind.CLIENT)

    @staticmethod
    def end_commit(span: trace.Span | None, error: BaseException | None = None) -> None:
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def end(self, outcome: str, reason: str | None = None) -> None:
        """Record the outcome (`ack`, `nak`, `offer`, `drop`, ...) and end the span; once."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        if span.is_recording():
            span.set_attribute(ATTR_OUTCOME, capped(str(outcome)))
            if reason is not None:
                span.set_attribute(ATTR_REASON, capped(str(reason)))
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
            span.set_attribute(ATTR_CLIENT, capped(client_key[:MAX_ATTRIBUTE].hex()))
            if state is not None:
                span.set_attribute(ATTR_STATE, capped(state))
        return Transaction(span, self._tracer)
