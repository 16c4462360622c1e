"""Client channels to the hub's gRPC API (used by the CLI and by spokes' report stream).

`open_channel` returns a grpc.aio channel that carries the bearer token and the W3C trace
context on every call, over plaintext, TLS, or mTLS, with short reconnect backoff.

Streams the caller writes to (`call.write`) go through a channel opened with
`intercept=False`, with `call_metadata(token)` passed to the call: grpc.aio (1.85) runs such a
call, when made through client interceptors, with a request-proxy async generator consumed by a
task of its own, and when the RPC ends by an error (the peer died) rather than by `cancel()`,
nothing ever ends that task. It stays pending on the proxy's queue until the call is garbage
collected, and then asyncio logs "Task was destroyed but it is pending!" for the task and
"aclose(): asynchronous generator is already running" for the generator it was iterating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry import propagate

from hubspoke.rpc.trace import metadata_interceptors, trace_client_interceptors, with_trace_context

CLIENT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
)


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS to the hub: `ca_file` verifies the server (None: the system roots); `cert_file`
    and `key_file` present a client certificate (mTLS)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )


def with_token(details: Any, token: str) -> Any:
    """`details` (grpc.aio.ClientCallDetails) carrying `authorization: Bearer <token>`."""
    kept = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*kept, ("authorization", f"Bearer {token}")),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


def call_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """What the interceptors of `open_channel` add to a call, for a call on a channel opened
    with `intercept=False`: the current trace context and, with a token, the bearer token."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out = [(k, v) for k, v in carrier.items() if k != "authorization"]
    if token:
        out.append(("authorization", f"Bearer {token}"))
    return tuple(out)


def open_channel(
    address: str,
    *,
    token: str | None = None,
    tls: ClientTls | None = None,
    server_name: str | None = None,
    intercept: bool = True,
) -> grpc.aio.Channel:
    """A channel to `address` ("host:port"); not connected until the first call. `server_name`:
    the name TLS verifies when `address` is one of the addresses that name resolved to.
    `intercept=False`: no client interceptors (`token` is then unused); each call passes
    `metadata=call_metadata(token)` itself (see the module docstring for why streams need it).
    """
    interceptors: list[Any] | None
    if not intercept:
        interceptors = None
    elif token:
        interceptors = metadata_interceptors(lambda d: with_trace_context(with_token(d, token)))
    else:
        interceptors = trace_client_interceptors()
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS, interceptors=interceptors)
    options: list[tuple[str, int | str]] = list(CLIENT_OPTIONS)
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(
        address, tls.credentials(), options=options, interceptors=interceptors
    )
