"""The spoke's composition root: builds the parts once, runs them, stops them.

`Spoke.run` opens the first etcd session (waiting for etcd if it is not up yet), builds every
part (`Parts`: the binding store and replica, the commit queue, the failover supervisor, the
engine, the request path `spoke.exchange.Exchange`, the sockets), then runs them in one
TaskGroup until `stop` is set. The life of a request is read in `spoke/exchange.py`; nothing of
it happens here.

Two modes (`mode` in the config). Standalone: scopes from the YAML and every block claimed at
start. Cluster: scopes from etcd (`ScopeFollower`), blocks and buckets from the hub's records
(`AssignmentFollower`), utilization streamed to the hub (`Reporter`); the spoke serves only once
its session, scopes, assignments and binding replica are loaded.

With `hub.eligible: true` a cluster-mode spoke also campaigns for the hub role with its own
session (`HubCampaign`) and runs the role and its gRPC API in-process while elected. The role runs
in its own task of the runtime's TaskGroup and its failures are logged and retried there: the
DHCP path never waits for it. A graceful stop resigns the role first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
)

from hub.campaign import HubCampaign, ServerFactory, grpc_server_factory
from hub.config import HubRoleConfig
from hub.health import HealthServer, hand_port_to_hub
from hubspoke.assign import Member
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError
from hubspoke.etcd.mirror import PrefixMirror
from hubspoke.etcd.session import Session
from hubspoke.keys import Keys
from hubspoke.model import Scope
from hubspoke.observe.looplag import LoopLag
from hubspoke.observe.prometheus import MetricsServer
from spoke.assign.follow import AssignmentFollower
from spoke.config import Mode, SpokeConfig, health_listen, hub_role_config
from spoke.dhcp.engine import Engine, EngineConfig
from spoke.exchange import Exchange, Wire
from spoke.failover.machine import Drained, FailoverParams, Undrained
from spoke.failover.supervisor import FailoverSupervisor
from spoke.leases.batch import CommitQueue
from spoke.leases.store import LeaseStore
from spoke.leases.table import BindingTable
from spoke.metrics import Metrics, Tally
from spoke.reporter import Counters, Reporter
from spoke.scopefollow import ScopeFollower
from spoke.telemetry import DhcpTracer, setup_tracing, shutdown_tracing
from spoke.transport import InterfaceInfo, Transport, interface_info

log = logging.getLogger("hubspoke.spoke")

STOP_GRACE = 5.0
DRAIN_POLL = 0.5


@dataclass(slots=True)
class Parts:
    """Everything a running spoke is made of, built once by `Spoke._build`. The fields that
    may be None are absent by mode (standalone: no followers), never "not built yet"."""

    client: EtcdClient
    store: LeaseStore
    commits: CommitQueue
    failover: FailoverSupervisor
    engine: Engine
    exchange: Exchange
    transport: Transport
    scopes: tuple[Scope, ...]
    blocks: int
    scope_follower: ScopeFollower | None
    assignments: AssignmentFollower | None
    metrics_server: MetricsServer | None


class Spoke:
    """One spoke process. `run()` serves until `stop` is set, then shuts down gracefully."""

    def __init__(
        self,
        cfg: SpokeConfig,
        *,
        clock: Callable[[], float] = time.time,
        ready_file: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.ready_file = ready_file
        self.keys = Keys(cfg.etcd.root)
        self.table = BindingTable(reuse_delay=cfg.dhcp.reuse_delay, hold=cfg.failover.mclt)
        self.loop_lag = LoopLag()
        self.metrics = Metrics()
        self.metrics.set_loop_lag(self.loop_lag.recent)
        self.counters = Counters()
        self.parts: Parts | None = None
        self.hub_campaign: HubCampaign | None = None
        self.health: HealthServer | None = None
        self._hub_role: HubRoleConfig | None = None
        self._grpc_address: str | None = None

    # what tests and the hub role read; None until built
    @property
    def failover(self) -> FailoverSupervisor | None:
        return self.parts.failover if self.parts is not None else None

    @property
    def assignments(self) -> AssignmentFollower | None:
        return self.parts.assignments if self.parts is not None else None

    @property
    def inflight(self) -> int:
        """Commits not yet answered (etcd and journal)."""
        return self.parts.exchange.inflight if self.parts is not None else 0

    # -- lifecycle -------------------------------------------------------------------------
    async def _first_session(self, client: EtcdClient, stop: asyncio.Event) -> Session | None:
        """The spoke's first etcd session. A spoke started before its etcd cluster can answer
        (containers start in any order) waits for it with backoff (0.25 s doubling up to 5 s),
        one log line per attempt, instead of exiting; it serves nothing meanwhile. None: stopped
        while waiting."""

        async def pause(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

        def waiting(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else None
            log.warning("spoke.etcd_waiting", extra={"error": repr(error), "retry_in_s": delay})

        try:
            async for attempt in AsyncRetrying(
                sleep=pause,
                retry=retry_if_exception_type(EtcdError),
                wait=wait_exponential(multiplier=0.25, max=5.0),
                stop=lambda _: stop.is_set(),
                before_sleep=waiting,
                reraise=True,
            ):
                with attempt:
                    if stop.is_set():
                        return None
                    return await Session.open(client, ttl=self.cfg.cluster.session_ttl)
        except EtcdError:
            if not stop.is_set():
                raise
        return None

    async def _build(
        self,
        client: EtcdClient,
        session: Session,
        infos: tuple[InterfaceInfo, ...],
        tracer: DhcpTracer,
    ) -> Parts:
        """Load what serving needs (scopes, blocks, the binding replica) and wire the parts."""
        cfg = self.cfg
        server_ids = {i.name: cfg.dhcp.server_id or i.ip for i in infos}
        store = LeaseStore(
            client,
            self.keys,
            self.table,
            cfg.node,
            commit_timeout=cfg.failover.interrupted_after,
            freeze_loaded=True,
        )
        commits = CommitQueue(store)
        scope_follower: ScopeFollower | None = None
        assignments: AssignmentFollower | None = None
        if cfg.mode is Mode.STANDALONE:
            scopes: tuple[Scope, ...] = cfg.scopes
            blocks = await store.claim_all_blocks(scopes)
        else:
            assignments = AssignmentFollower(
                client,
                self.keys,
                cfg.node,
                self.table,
                offer_lifetime=cfg.dhcp.offer_lifetime,
                clock=self.clock,
            )
            scope_follower = ScopeFollower(client, self.keys, self._on_scopes)
            await scope_follower.load()
            scopes = scope_follower.scopes
            assignments.set_scopes(scopes)
            await assignments.load()
            blocks = sum(len(assignments.owned(s.name)) for s in scopes)
        await store.load()
        fcfg = cfg.failover
        failover = FailoverSupervisor(
            FailoverParams(fcfg.interrupted_after, fcfg.max_interrupted, fcfg.mclt),
            fcfg.journal_path(cfg.node),
            node=cfg.node,
            client=client,
            store=store,
            commits=commits,
            table=self.table,
            session=session,
            register=lambda s: self._register(client, s, infos, server_ids),
            metrics=self.metrics,
            clock=self.clock,
        )
        engine = Engine(
            EngineConfig(
                node=cfg.node,
                offer_lifetime=cfg.dhcp.offer_lifetime,
                decline_probation=cfg.dhcp.decline_probation,
                server_ids=frozenset(server_ids.values()),
            ),
            scopes,
            self.table,
            is_mine=assignments.is_mine if assignments is not None else None,
            conflicted=failover.conflicted,
        )
        transport = Transport(
            infos,
            cfg.dhcp.port,
            lambda *a: exchange.on_datagram(*a),
            server_ids=frozenset({cfg.dhcp.server_id} if cfg.dhcp.server_id else ()),
            max_queue_delay=cfg.dhcp.max_queue_delay,
            on_stale=lambda waited: exchange.on_stale(waited),
        )
        tally = Tally(self.metrics, self.counters)
        exchange = Exchange(
            engine,
            failover,
            server_ids=server_ids,
            tally=tally,
            outbox=Wire(transport, tally),
            tracer=tracer,
            clock=self.clock,
            max_inflight=cfg.dhcp.max_inflight_commits,
            max_queue_delay=cfg.dhcp.max_queue_delay,
        )
        self.metrics.set_sources(self._binding_counts, self._free_counts)
        metrics_server = (
            MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port) if cfg.metrics else None
        )
        return Parts(
            client=client,
            store=store,
            commits=commits,
            failover=failover,
            engine=engine,
            exchange=exchange,
            transport=transport,
            scopes=scopes,
            blocks=blocks,
            scope_follower=scope_follower,
            assignments=assignments,
            metrics_server=metrics_server,
        )

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        provider = setup_tracing(cfg.tracing, cfg.node)
        infos = tuple(interface_info(name) for name in cfg.dhcp.interfaces)
        if cfg.mode is Mode.CLUSTER and cfg.hub.eligible:
            self._hub_role = hub_role_config(cfg, infos[0].ip)
            self.health = HealthServer(self._hub_role.grpc.listen)
            self._grpc_address = self._hub_role.grpc.advertise
        elif cfg.mode is Mode.CLUSTER:
            listen, self._grpc_address = health_listen(cfg, infos[0].ip)
            self.health = HealthServer(listen)
        client = await EtcdClient.connect(cfg.etcd.client)
        session: Session | None = None
        lag = asyncio.create_task(self.loop_lag.run(), name="loop-lag")
        try:
            self.metrics.set_state("startup")
            session = await self._first_session(client, stop)
            if session is None:
                return
            if self.health is not None:
                port = await self.health.start()
                if self._grpc_address is not None and self._grpc_address.endswith(":0"):
                    self._grpc_address = f"{self._grpc_address[:-2]}:{port}"
            parts = self.parts = await self._build(client, session, infos, DhcpTracer(provider))
            await self._serve(parts, session, infos, provider, stop)
        finally:
            if self.health is not None:
                await self.health.stop()
            if self.parts is not None:
                session = self.parts.failover.session
            if session is not None:
                await session.close()
            await client.close()
            await shutdown_tracing(provider)
            lag.cancel()
            gc.unfreeze()  # what the binding load froze (see LeaseStore.load)
            log.info("spoke.stopped", extra={"node": cfg.node})

    async def _serve(
        self,
        parts: Parts,
        session: Session,
        infos: tuple[InterfaceInfo, ...],
        provider: Any,
        stop: asyncio.Event,
    ) -> None:
        """Run every part until `stop`; then finish the commits in flight and stop."""
        cfg = self.cfg
        failover = parts.failover
        if parts.metrics_server is not None:
            await parts.metrics_server.start()
        async with asyncio.TaskGroup() as tg:
            followers = [
                tg.create_task(parts.store.follow(), name="leases"),
                tg.create_task(parts.commits.run(), name="commits"),
                tg.create_task(failover.run(), name="failover"),
            ]
            if parts.scope_follower is not None and parts.assignments is not None:
                reporter = Reporter(
                    parts.client,
                    self.keys,
                    cfg.node,
                    self.table,
                    self.counters,
                    interval=cfg.cluster.report_interval,
                    token=cfg.cluster.token,
                    tls=cfg.cluster.hub_tls,
                    tls_server_name=cfg.cluster.hub_tls_server_name,
                    clock=self.clock,
                    capacity=self._capacity,
                    tracer_provider=provider,
                    state=lambda: failover.state.value,
                    state_reason=lambda: failover.reason,
                )
                followers += [
                    tg.create_task(parts.scope_follower.follow(), name="scopes"),
                    tg.create_task(parts.assignments.follow(), name="assignments"),
                    tg.create_task(reporter.run(), name="reporter"),
                    tg.create_task(self._follow_drain(parts.client, failover), name="drain"),
                ]
            if self._hub_role is not None:
                campaign = HubCampaign(
                    parts.client,
                    self.keys,
                    self._hub_role,
                    session,
                    self._hub_serve(self._hub_role, provider),
                    kind="spoke",
                )
                self.hub_campaign = campaign
                tg.create_task(self._run_hub_role(campaign, stop), name="hub-role")
            parts.transport.start()
            # Join the cluster only once this spoke can serve: the hub gives buckets to
            # members, so a restarting spoke takes clients back without a pause.
            server_ids = parts.exchange.server_ids
            await self._register(parts.client, session, infos, server_ids)
            failover.ready()
            log.info(
                "spoke.ready",
                extra={
                    "node": cfg.node,
                    "mode": cfg.mode.value,
                    "blocks": parts.blocks,
                    "scopes": len(parts.scopes),
                    "revision": parts.store.revision,
                    "loop_lag_max_s": round(self.loop_lag.worst, 3),
                },
            )
            if self.ready_file is not None:
                self.ready_file.write_text(json.dumps({"node": cfg.node}))
            await stop.wait()
            log.info("spoke.stopping", extra={"inflight": self.inflight})
            parts.transport.close()
            await parts.exchange.idle(STOP_GRACE)  # commits in flight finish and ACK
            for task in followers:
                task.cancel()
        if parts.metrics_server is not None:
            await parts.metrics_server.stop()

    async def _run_hub_role(self, campaign: HubCampaign, stop: asyncio.Event) -> None:
        """Campaign and lead until `stop` is set, always with the spoke's current session (after
        RECOVER opened a new one, the campaign takes it up); a failure of the role is logged and
        the campaign starts again a second later (it never ends the TaskGroup)."""
        while not stop.is_set():
            current = self.failover.session if self.failover is not None else campaign.session
            if current is not None and current.is_alive:
                campaign.session = current
                try:
                    await campaign.run(stop)
                    continue
                except Exception:
                    log.exception("spoke.hub_role_failed", extra={"node": self.cfg.node})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def _hub_serve(self, role: HubRoleConfig, provider: Any) -> ServerFactory:
        """The hub role's gRPC server, taking its port over from the health server."""
        serve = grpc_server_factory(role, provider)
        return hand_port_to_hub(serve, self.health) if self.health is not None else serve

    def _capacity(self, scope: str) -> int:
        """Addresses in the blocks this spoke may allocate from in `scope`."""
        owned = self.assignments.owned(scope) if self.assignments is not None else {}
        return sum(int(b.last) - int(b.first) + 1 for b in owned)

    async def _follow_drain(self, client: EtcdClient, failover: FailoverSupervisor) -> None:
        """MAINTENANCE while an operator drains this spoke: entered once the hub has moved
        every bucket away (so no client is left without an answer), left when the drain is
        lifted. Block hand-overs go on meanwhile (the assignment follower)."""
        key = self.keys.drain(self.cfg.node)
        drains = PrefixMirror(client, self.keys.drains_prefix())
        await drains.load()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(drains.follow())
            while True:
                drained = key in drains.items
                assignments = self.assignments
                if drained and assignments is not None and not assignments.buckets:
                    failover.observe(Drained())
                elif not drained:
                    failover.observe(Undrained())
                await asyncio.sleep(DRAIN_POLL)

    def _on_scopes(self, scopes: tuple[Scope, ...]) -> None:
        """The stored scopes changed (cluster mode): blocks first, then the engine's view. While
        the parts are being built, `_build` applies the loaded scopes itself."""
        if self.parts is not None:
            if self.parts.assignments is not None:
                self.parts.assignments.set_scopes(scopes)
            self.parts.engine.set_scopes(scopes)
        log.info("spoke.scopes", extra={"scopes": [s.name for s in scopes]})

    async def _register(
        self,
        client: EtcdClient,
        session: Session,
        infos: tuple[InterfaceInfo, ...],
        server_ids: dict[str, IPv4Address],
    ) -> None:
        member = Member(
            node=self.cfg.node,
            lease=session.lease_id,
            role="spoke",
            hub_eligible=self._hub_role is not None,
            grpc_address=self._grpc_address,
            server_ids=tuple(str(server_ids[i.name]) for i in infos),
            started=round(self.clock(), 3),
            extra={"interfaces": [i.name for i in infos], "mode": self.cfg.mode.value},
        )
        await client.put(self.keys.member(self.cfg.node), member.encode(), lease=session.lease_id)

    # -- metrics sources -------------------------------------------------------------------
    def _binding_counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for scope in self.table.scopes():
            for state, n in self.table.count_by_state(scope).items():
                out[(scope, state.value)] = n
        return out

    def _free_counts(self) -> dict[str, int]:
        now = self.clock()
        return {scope: self.table.free_count(scope, now) for scope in self.table.scopes()}
