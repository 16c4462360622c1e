"""Bearer-token authentication of the hub's gRPC API: the server interceptor and its rules.

With tokens configured, every call except gRPC health and reflection must carry metadata
`authorization: Bearer <token>` matching one of them, else it ends with UNAUTHENTICATED
("missing token" or "bad token") before the handler runs. Spokes authenticate their report
stream the same way. With no tokens configured every call passes (use mTLS or a trusted
network).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc  # type: ignore[import-untyped]

from hubspoke.rpc.trace import metadata_dict, wrap_handler

OPEN_SERVICES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
BEARER = "bearer "
FIRST_MESSAGE_WAIT = 1.0


def check_token(metadata: dict[str, str], tokens: Collection[bytes]) -> str | None:
    """None when `metadata` carries one of `tokens`, else why not ("missing token", "bad token")."""
    value = metadata.get("authorization")
    if value is None or not value.lower().startswith(BEARER):
        return "missing token"
    given = value[len(BEARER) :].strip().encode()
    # compare against every token, so the time taken does not tell which one nearly matched
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token)
    return None if ok else "bad token"


async def _await_first(request: Any, kind: str) -> None:
    """For a client-streaming call, wait (briefly) for its first message.

    A grpc.aio client still sending when the status arrives reports INTERNAL ("Failed
    execute_batch") instead of the status; refusing after the first message narrows that race.
    """
    if kind.startswith("stream"):
        with contextlib.suppress(StopAsyncIteration, TimeoutError, grpc.aio.AioRpcError):
            await asyncio.wait_for(anext(aiter(request)), FIRST_MESSAGE_WAIT)


def _refuse(reason: str, kind: str) -> Callable[..., Any]:
    if kind.endswith("stream"):

        async def refuse_stream(request: Any, context: Any) -> Any:
            await _await_first(request, kind)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            yield  # pragma: no cover - makes this an async generator

        return refuse_stream

    async def refuse(request: Any, context: Any) -> Any:
        await _await_first(request, kind)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    return refuse


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without a configured bearer token; health and reflection stay open."""

    def __init__(self, tokens: Collection[str]) -> None:
        if any(not t or t != t.strip() for t in tokens):
            raise ValueError("a token must be non-empty and have no surrounding spaces")
        self._tokens = tuple(t.encode() for t in tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        reason = check_token(metadata_dict(handler_call_details.invocation_metadata), self._tokens)
        if reason is None:
            return handler
        return wrap_handler(handler, lambda _behaviour, kind: _refuse(reason, kind))
