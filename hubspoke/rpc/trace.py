"""W3C trace context across gRPC: a client interceptor that injects it into call metadata and
a server interceptor that makes it the current context while the handler runs.

Uses the OpenTelemetry API's global propagator (TraceContext + Baggage by default); with no
SDK configured both sides are no-ops. For a stream the context is the one current when the
call opened; per-message context travels in the message (UtilizationReport.trace_context).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry import context as otel_context
from opentelemetry import propagate

Metadata = tuple[tuple[str, str | bytes], ...]


def with_trace_context(details: Any) -> Any:
    """`details` (grpc.aio.ClientCallDetails) with the current trace context in its metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return details
    kept = [(k, v) for k, v in (details.metadata or ()) if k not in carrier]
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*kept, *carrier.items()),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


DetailsEdit = Callable[[Any], Any]  # grpc.aio.ClientCallDetails -> ClientCallDetails


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, edit: DetailsEdit) -> None:
        self._edit = edit

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._edit(details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, edit: DetailsEdit) -> None:
        self._edit = edit

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._edit(details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, edit: DetailsEdit) -> None:
        self._edit = edit

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._edit(details), requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, edit: DetailsEdit) -> None:
        self._edit = edit

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._edit(details), requests)


def metadata_interceptors(edit: DetailsEdit) -> list[Any]:
    """Client interceptors applying `edit` to the call details of every kind of call.

    grpc.aio files an interceptor under the first interceptor kind it is an instance of, so
    one object per kind is needed.
    """
    return [_UnaryUnary(edit), _UnaryStream(edit), _StreamUnary(edit), _StreamStream(edit)]


def trace_client_interceptors() -> list[Any]:
    """Client interceptors that inject the current trace context into every call."""
    return metadata_interceptors(with_trace_context)


def metadata_dict(metadata: Any) -> dict[str, str]:
    """Text entries of invocation metadata as a dict (binary `-bin` entries are skipped)."""
    out: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            out[key] = value
    return out


def _unary(behaviour: Callable[..., Any], ctx: otel_context.Context) -> Callable[..., Any]:
    async def run(request: Any, context: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            result = behaviour(request, context)
            return await result if isinstance(result, Awaitable) else result
        finally:
            otel_context.detach(token)

    return run


def _streaming(behaviour: Callable[..., Any], ctx: otel_context.Context) -> Callable[..., Any]:
    async def run(request: Any, context: Any) -> AsyncIterator[Any]:
        token = otel_context.attach(ctx)
        try:
            result = behaviour(request, context)
            if isinstance(result, Awaitable):  # a handler that writes through the context
                await result
            else:
                # closed here, in the handler's task, when grpc closes this one early (the
                # peer went away), not later by asyncio's finalizer in a task of its own
                async with contextlib.aclosing(result):
                    async for item in result:
                        yield item
        finally:
            otel_context.detach(token)

    return run


class TraceServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Makes the caller's trace context current while each handler runs."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        carrier = metadata_dict(handler_call_details.invocation_metadata)
        if handler is None or "traceparent" not in carrier:
            return handler
        ctx = propagate.extract(carrier)
        return wrap_handler(
            handler, lambda b, kind: (_streaming if kind.endswith("stream") else _unary)(b, ctx)
        )


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Callable[..., Any], str], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour replaced by `wrap(behaviour, kind)`.

    `kind` is "unary_unary", "unary_stream", "stream_unary" or "stream_stream".
    """
    h: Any = handler
    kw = {
        "request_deserializer": h.request_deserializer,
        "response_serializer": h.response_serializer,
    }
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(h.unary_unary, "unary_unary"), **kw)
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(h.unary_stream, "unary_stream"), **kw)
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(h.stream_unary, "stream_unary"), **kw)
    return grpc.stream_stream_rpc_method_handler(wrap(h.stream_stream, "stream_stream"), **kw)
