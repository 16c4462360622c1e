"""Builds the hub's gRPC server: the hubspoke.v1 services over a ClusterView, gRPC health,
reflection, token auth, trace context, and plaintext, TLS or mTLS.

The only module that binds the API's listening socket. `build_server` returns the server
unstarted with every service's health set to SERVING; the caller starts and stops it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from hub.api.auth import TokenAuthInterceptor
from hub.api.model import ClusterView
from hub.api.service import (
    SERVICE_NAMES,
    ClusterServicer,
    LeaseServicer,
    ReportServicer,
    ScopeServicer,
    SpokeServicer,
)
from hubspoke.api.hubspoke.v1 import management_pb2_grpc as mgrpc
from hubspoke.api.hubspoke.v1 import report_pb2_grpc as rgrpc
from hubspoke.rpc.trace import TraceServerInterceptor

HEALTH_SERVICE = "grpc.health.v1.Health"
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Server certificate and key (PEM files); with `client_ca_file`, clients must present a
    certificate signed by that CA (mTLS), and a client without one fails the TLS handshake."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca_file.read_bytes() if self.client_ca_file is not None else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


async def build_server(
    view: ClusterView,
    *,
    listen: str = "127.0.0.1:0",
    tokens: Collection[str] = (),
    tls: ServerTls | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A server answering on `listen` ("host:port", port 0 picks one) and the bound port.

    `tokens`: accepted bearer tokens (empty: no token needed). Raises OSError when the
    address cannot be bound.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [TraceServerInterceptor()]
    if tokens:
        interceptors.insert(0, TokenAuthInterceptor(tokens))
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = provider.get_tracer("hub.service")
    rgrpc.add_ReportServiceServicer_to_server(ReportServicer(view, tracer), server)
    mgrpc.add_ClusterServiceServicer_to_server(ClusterServicer(view), server)
    mgrpc.add_ScopeServiceServicer_to_server(ScopeServicer(view), server)
    mgrpc.add_LeaseServiceServicer_to_server(LeaseServicer(view), server)
    mgrpc.add_SpokeServiceServicer_to_server(SpokeServicer(view), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )

    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, tls.credentials())
    if port == 0:
        raise OSError(f"cannot bind the gRPC API to {listen}")
    return server, port
