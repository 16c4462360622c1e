"""Running for the hub role and holding it: election, the role, its gRPC server, hand-over.

The same code runs in the `hub` process and inside a hub-eligible spoke. It campaigns with the
process's session lease (etcd's election recipe: the lowest create revision wins); when elected
it starts the hub role and the management API on the advertised address, and it steps down when
its session is lost, when another hub holds the epoch, or when the process stops. A graceful
stop resigns first, so the next campaigner takes over at once instead of after the lease TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped]
from opentelemetry import trace

from hub.api.server import ServerTls, build_server
from hub.api.view import HubView
from hub.config import HubRoleConfig
from hub.metrics import HubMetrics
from hub.role import Deposed, HubRole
from hubspoke.aiotasks import cancel_and_wait
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.election import Election, Leader, Leadership
from hubspoke.etcd.errors import EtcdError
from hubspoke.etcd.session import Session
from hubspoke.keys import Keys

log = logging.getLogger("hubspoke.hub")


class RunningServer(Protocol):
    async def stop(self) -> None: ...


ServerFactory = Callable[[HubView], Awaitable[RunningServer]]


class _GrpcServer:
    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    async def stop(self) -> None:
        await self.server.stop(grace=1.0)


def grpc_server_factory(
    cfg: HubRoleConfig, tracer_provider: trace.TracerProvider | None = None
) -> ServerFactory:
    """Starts the management and report API on `cfg.grpc` for one term as hub; the report
    service's spans go to `tracer_provider` (None: the global provider, a no-op by default)."""
    g = cfg.grpc
    tls = None
    if g.cert_file is not None and g.key_file is not None:
        tls = ServerTls(g.cert_file, g.key_file, g.client_ca_file)

    async def serve(view: HubView) -> RunningServer:
        server, port = await build_server(
            view, listen=g.listen, tokens=g.tokens, tls=tls, tracer_provider=tracer_provider
        )
        await server.start()
        log.info("hub.api_listening", extra={"listen": g.listen, "port": port})
        return _GrpcServer(server)

    return serve


HANDBACK_POLL = 1.0  # seconds between looks for a hub process, while a spoke holds the role


def leader_value(node: str, address: str, kind: str = "hub") -> bytes:
    """The campaign value: node, gRPC address, and `kind`, `hub` for a hub process and
    `spoke` for the role inside a hub-eligible spoke."""
    return json.dumps({"node": node, "grpc": address, "kind": kind}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class HubAddress:
    """A campaigner's value read back: where it serves gRPC, its `kind` (None from a process
    older than the field), and `epoch`, its election key's create revision."""

    node: str
    grpc: str
    epoch: int
    kind: str | None = None


def hub_address(leader: Leader) -> HubAddress | None:
    """What `leader_value` wrote, from a leader's (or candidate's) value; None if it does not
    say."""
    try:
        d = json.loads(leader.value)
        node, grpc_address = d["node"], d["grpc"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(node, str) or not isinstance(grpc_address, str) or not grpc_address:
        return None
    kind = d.get("kind")
    return HubAddress(node, grpc_address, leader.epoch, kind if isinstance(kind, str) else None)


class HubCampaign:
    """Campaign, lead, step down; over and over until `stop` is set.

    `kind="spoke"` (the role inside a hub-eligible spoke) holds the role only while no hub
    process campaigns (DESIGN.md: spokes run it when no hub holds the election): when one
    queues, the spoke resigns at once and queues behind it.
    """

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        cfg: HubRoleConfig,
        session: Session,
        serve: ServerFactory,
        *,
        metrics: HubMetrics | None = None,
        kind: str = "hub",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: the wall clock the role plans on (a simulation's own)."""
        if kind not in ("hub", "spoke"):
            raise ValueError(f"kind must be hub or spoke, not {kind!r}")
        self.kind = kind
        self.clock = clock
        self.client = client
        self.keys = keys
        self.cfg = cfg
        self.session = session
        self.serve = serve
        self.metrics = metrics  # None: no hub metrics (the role inside a spoke)
        self.election = Election(client, keys.election())
        self.address = cfg.grpc.advertise or cfg.grpc.listen
        self.role: HubRole | None = None
        self.view: HubView | None = None
        self.leading = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign and lead until `stop` is set or the session is lost."""
        while not stop.is_set() and self.session.is_alive:
            leadership = await self._campaign(stop)
            if leadership is None:
                return
            await self._lead(leadership, stop)

    async def _campaign(self, stop: asyncio.Event) -> Leadership | None:
        value = leader_value(self.cfg.node, self.address, self.kind)
        campaign = asyncio.ensure_future(self.election.campaign(self.session.lease_id, value))
        stopped = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(self.session.wait_lost())
        log.info("hub.campaigning", extra={"node": self.cfg.node, "address": self.address})
        try:
            await asyncio.wait({campaign, stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gave_up = not campaign.done()
            await cancel_and_wait(campaign, stopped, lost)
        if gave_up:
            return None
        return campaign.result()

    async def _lead(self, leadership: Leadership, stop: asyncio.Event) -> None:
        role = HubRole(
            self.client,
            self.keys,
            self.cfg,
            leadership,
            address=self.address,
            clock=self.clock,
            metrics=self.metrics,
        )
        view = HubView(role)
        self.role, self.view = role, view
        log.info(
            "hub.elected",
            extra={"node": self.cfg.node, "epoch": leadership.epoch, "address": self.address},
        )
        if self.metrics is not None:
            self.metrics.elected(leadership.epoch)
        server: RunningServer | None = None
        handback: asyncio.Future[str] | None = None
        handed_to: str | None = None
        why = "stopped"
        try:
            await role.start()
            await view.lease_mirror.load()
            server = await self.serve(view)
            if self.metrics is not None:
                self.metrics.serving(view.cluster_state)
            self.leading.set()
            work = asyncio.ensure_future(self._work(role, view))
            stopped = asyncio.ensure_future(stop.wait())
            lost = asyncio.ensure_future(self.session.wait_lost())
            waits: set[asyncio.Future[Any]] = {work, stopped, lost}
            if self.kind == "spoke":
                handback = asyncio.ensure_future(self._hub_process_queued())
                waits.add(handback)
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(*(waits - {work}))
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            if handback is not None and handback in done and handback.exception() is None:
                handed_to = handback.result()
                why = f"handed back to hub process {handed_to}"
            elif work in done and work.exception() is not None:
                exc = work.exception()
                why = f"deposed: {exc}" if isinstance(exc, Deposed) else f"failed: {exc!r}"
                if not isinstance(exc, Deposed):
                    log.error("hub.role_failed", exc_info=exc)
            elif lost in done:
                why = "session lost"
        except* Deposed as eg:
            why = f"deposed: {eg.exceptions[0]}"
        finally:
            self.leading.clear()
            if (stop.is_set() or handed_to is not None) and self.session.is_alive:
                # resign first: the next in the queue takes over at once
                with contextlib.suppress(EtcdError):
                    await self.election.resign(leadership)
            if self.metrics is not None:
                self.metrics.stepped_down()
            if server is not None:
                await server.stop()
            self.role = self.view = None
            log.info("hub.stepped_down", extra={"node": self.cfg.node, "why": why})

    async def _hub_process_queued(self) -> str:
        """Until a hub process campaigns; returns its node name."""
        while True:
            try:
                candidates = await self.election.candidates()
            except EtcdError as e:
                log.debug("hub.candidates_unreadable", extra={"error": repr(e)})
                candidates = []
            for c in candidates:
                hub = hub_address(c)
                if c.lease != self.session.lease_id and hub is not None and hub.kind == "hub":
                    log.info("hub.handing_back", extra={"node": self.cfg.node, "to": hub.node})
                    return hub.node
            await asyncio.sleep(HANDBACK_POLL)

    @staticmethod
    async def _work(role: HubRole, view: HubView) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(role.run())
            tg.create_task(view.lease_mirror.follow())
