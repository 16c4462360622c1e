"""Owns a process's liveness port while it is not the hub: a small gRPC server with the standard
health service alone. Used by spokes and by hub processes waiting for the hub role.

The hub probes a member's `grpc_address` when the member's report stream breaks with an error:
a refused connection means the process is gone and the hub revokes its session at once
(DESIGN.md, Liveness). So the port must accept for as long as the process lives.

- A spoke that is not hub-eligible serves `HealthServer` on `cluster.grpc_listen` for its
  whole life and advertises it in its `Member.grpc_address`.
- A hub-eligible spoke advertises its hub address. The hub's gRPC server (which serves health
  too) runs only while this spoke holds the hub role, so `HealthServer` holds that port the
  rest of the time: `hand_port_to_hub` wraps the hub's server factory so that the hub server
  binds first (gRPC binds with SO_REUSEPORT, so both listen for a moment) and the health
  server stops after it, and the reverse when the role ends. The port never refuses.
- A hub process (hub/main.py) does the same on `grpc.listen`, so a standby hub answers
  liveness probes and container health checks. A standby answers only health: other calls get
  UNIMPLEMENTED, and the CLI moves on to the next address it was given.
"""

from __future__ import annotations

import logging

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hub.api.view import HubView
from hub.campaign import RunningServer, ServerFactory

log = logging.getLogger("hubspoke.health")

SERVICE = "hubspoke.spoke"  # also answered, for probes that name a service


class HealthServer:
    """The health service alone on `listen` ("host:port"; port 0 picks one). Restartable."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Bind and serve; returns the bound port. Raises OSError when it cannot bind."""
        if self._server is not None:
            assert self.port is not None
            return self.port
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        for name in ("", SERVICE):
            await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        # Once bound, keep the same port across restarts (port 0 only picks the first time).
        host = self.listen.rpartition(":")[0]
        listen = f"{host}:{self.port}" if self.port else self.listen
        bound = int(server.add_insecure_port(listen))
        if bound == 0:
            raise OSError(f"cannot bind the health port to {listen}")
        await server.start()
        self._server, self.port = server, bound
        log.info("health.listening", extra={"listen": listen, "port": bound})
        return bound

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace=None)


class _HubServerThenHealth:
    """The hub's running server; stopping it gives the port back to the health server."""

    def __init__(self, hub: RunningServer, health_server: HealthServer) -> None:
        self.hub = hub
        self.health = health_server

    async def stop(self) -> None:
        try:
            await self.health.start()
        except OSError:
            log.exception("health.restart_failed", extra={"listen": self.health.listen})
        await self.hub.stop()


def hand_port_to_hub(serve: ServerFactory, health_server: HealthServer) -> ServerFactory:
    """`serve`, taking the shared port over from `health_server` for one term as hub."""

    async def wrapped(view: HubView) -> RunningServer:
        hub = await serve(view)  # binds beside the health server (SO_REUSEPORT)
        await health_server.stop()
        return _HubServerThenHealth(hub, health_server)

    return wrapped
