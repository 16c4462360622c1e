"""The spoke's composition root: wires config, etcd, the binding replica, the engine and sockets.

The per-packet path is synchronous up to the engine's decision; only commits are awaited, each
in its own task inside the runtime's TaskGroup, so many commits are in flight at once (etcd
batches them into one raft entry and one fsync). A DHCPACK is sent only from the commit task,
after etcd has committed the binding.

Two modes (`mode` in the config). Standalone: scopes from the YAML and every block claimed at
start. Cluster: scopes from etcd (`ScopeFollower`), blocks and buckets from the hub's records
(`AssignmentFollower`), utilization streamed to the hub (`Reporter`); the spoke serves only once
its session, scopes, assignments and binding replica are loaded.

With `hub.eligible: true` a cluster-mode spoke also campaigns for the hub role with its own
session (`HubCampaign`) and runs the role and its gRPC API in-process while elected. The role runs
in its own task of the runtime's TaskGroup and its failures are logged and retried there: the
DHCP path never waits for it. A graceful stop resigns the role first.

Error boundary: a malformed datagram is the peer's fault (counted by reason, logged at debug,
dropped); an exception in our own code while handling a packet is logged loudly with context
and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from hubspoke.observe.prometheus import MetricsServer
from spoke.assign.follow import AssignmentFollower
from spoke.config import Mode, SpokeConfig, health_listen, hub_role_config
from spoke.dhcp.codec import DecodeError, decode, encode
from spoke.dhcp.decisions import Ingress
from spoke.dhcp.engine import Engine, EngineConfig
from spoke.dhcp.message import Message, MessageType, Op
from spoke.dhcp.reply import Outgoing
from spoke.failover.machine import Drained, FailoverParams, Undrained
from spoke.failover.supervisor import FailoverSupervisor
from spoke.leases.batch import CommitQueue
from spoke.leases.store import LeaseStore
from spoke.leases.table import BindingTable
from spoke.metrics import Metrics
from spoke.ratelimit import RateLimit
from spoke.reporter import Counters, Reporter
from spoke.scopefollow import ScopeFollower
from spoke.settle import Settler
from spoke.telemetry import DhcpTracer, Transaction, setup_tracing, shutdown_tracing
from spoke.transport import InterfaceInfo, Transport, interface_info

log = logging.getLogger("hubspoke.spoke")

MALFORMED_LOG_INTERVAL = 10.0
STOP_GRACE = 5.0
DRAIN_POLL = 0.5


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
        self.metrics = Metrics()
        self.counters = Counters()
        self.assignments: AssignmentFollower | None = None
        self.hub_campaign: HubCampaign | None = None
        self.failover: FailoverSupervisor | None = None
        self._hub_role: HubRoleConfig | None = None
        self.health: HealthServer | None = None
        self._grpc_address: str | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._store: LeaseStore | None = None
        self._commits: CommitQueue | None = None
        self._engine: Engine | None = None
        self._settler: Settler | None = None
        self._transport: Transport | None = None
        self._server_ids: dict[str, Any] = {}
        self._tracer = DhcpTracer(None)
        self._log_limit = RateLimit(MALFORMED_LOG_INTERVAL)

    # -- lifecycle -------------------------------------------------------------------------
    async def _first_session(self, client: EtcdClient, stop: asyncio.Event) -> Session | None:
        """The spoke's first etcd session. A spoke started before its etcd cluster can answer
        (containers start in any order) waits for it with backoff, one log line per attempt,
        instead of exiting; it serves nothing meanwhile. None: stopped while waiting."""
        delay = 0.25
        while not stop.is_set():
            try:
                return await Session.open(client, ttl=self.cfg.cluster.session_ttl)
            except EtcdError as e:
                log.warning("spoke.etcd_waiting", extra={"error": repr(e), "retry_in_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        return None

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        provider = setup_tracing(cfg.tracing, cfg.node)
        self._tracer = DhcpTracer(provider)
        infos = tuple(interface_info(name) for name in cfg.dhcp.interfaces)
        self._server_ids = {i.name: cfg.dhcp.server_id or i.ip for i in infos}
        if cfg.mode is Mode.CLUSTER and cfg.hub.eligible:
            self._hub_role = hub_role_config(cfg, infos[0].ip)
            self.health = HealthServer(self._hub_role.grpc.listen)
            self._grpc_address = self._hub_role.grpc.advertise
        elif cfg.mode is Mode.CLUSTER:
            listen, self._grpc_address = health_listen(cfg, infos[0].ip)
            self.health = HealthServer(listen)
        client = await EtcdClient.connect(cfg.etcd.client)
        session: Session | None = None
        try:
            self.metrics.set_state("startup")
            session = await self._first_session(client, stop)
            if session is None:
                return
            if self.health is not None:
                port = await self.health.start()
                if self._grpc_address is not None and self._grpc_address.endswith(":0"):
                    self._grpc_address = f"{self._grpc_address[:-2]}:{port}"
            store = LeaseStore(
                client,
                self.keys,
                self.table,
                cfg.node,
                commit_timeout=cfg.failover.interrupted_after,
            )
            self._store = store
            self._commits = CommitQueue(store)
            scope_follower: ScopeFollower | None = None
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
                self.assignments = assignments
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
                table=self.table,
                session=session,
                register=lambda s: self._register(client, s, infos),
                metrics=self.metrics,
                clock=self.clock,
            )
            self.failover = failover
            self._engine = Engine(
                EngineConfig(
                    node=cfg.node,
                    offer_lifetime=cfg.dhcp.offer_lifetime,
                    decline_probation=cfg.dhcp.decline_probation,
                    server_ids=frozenset(self._server_ids.values()),
                ),
                scopes,
                self.table,
                is_mine=self.assignments.is_mine if self.assignments is not None else None,
                conflicted=failover.conflicted,
            )
            self._settler = Settler(
                self._engine,
                self._commits,
                failover,
                metrics=self.metrics,
                counters=self.counters,
                send=self._send,
                clock=self.clock,
                max_inflight=cfg.dhcp.max_inflight_commits,
            )
            self.metrics.set_sources(self._binding_counts, self._free_counts)
            metrics_server = (
                MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port)
                if cfg.metrics
                else None
            )
            if metrics_server is not None:
                await metrics_server.start()
            server_ids = frozenset({cfg.dhcp.server_id} if cfg.dhcp.server_id else ())
            transport = Transport(
                infos,
                cfg.dhcp.port,
                self._on_datagram,
                server_ids=server_ids,
                max_queue_delay=cfg.dhcp.max_queue_delay,
                on_stale=self._on_stale,
            )
            self._transport = transport
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                followers = [
                    tg.create_task(store.follow(), name="leases"),
                    tg.create_task(self._commits.run(), name="commits"),
                    tg.create_task(failover.run(), name="failover"),
                ]
                if scope_follower is not None and self.assignments is not None:
                    reporter = Reporter(
                        client,
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
                        tg.create_task(scope_follower.follow(), name="scopes"),
                        tg.create_task(self.assignments.follow(), name="assignments"),
                        tg.create_task(reporter.run(), name="reporter"),
                        tg.create_task(self._follow_drain(client, failover), name="drain"),
                    ]
                if self._hub_role is not None:
                    campaign = HubCampaign(
                        client,
                        self.keys,
                        self._hub_role,
                        session,
                        self._hub_serve(self._hub_role, provider),
                        kind="spoke",
                    )
                    self.hub_campaign = campaign
                    tg.create_task(self._run_hub_role(campaign, stop), name="hub-role")
                transport.start()
                # Join the cluster only once this spoke can serve: the hub gives buckets to
                # members, so a restarting spoke takes clients back without a pause.
                await self._register(client, session, infos)
                failover.ready()
                log.info(
                    "spoke.ready",
                    extra={
                        "node": cfg.node,
                        "mode": cfg.mode.value,
                        "blocks": blocks,
                        "scopes": len(scopes),
                        "revision": store.revision,
                    },
                )
                if self.ready_file is not None:
                    self.ready_file.write_text(json.dumps({"node": cfg.node}))
                await stop.wait()
                log.info("spoke.stopping", extra={"inflight": self.inflight})
                transport.close()
                await self._settler.idle(STOP_GRACE)  # commits in flight finish and ACK
                for task in followers:
                    task.cancel()
            if metrics_server is not None:
                await metrics_server.stop()
        finally:
            if self.health is not None:
                await self.health.stop()
            if self.failover is not None:
                session = self.failover.session
            if session is not None:
                await session.close()
            await client.close()
            await shutdown_tracing(provider)
            log.info("spoke.stopped", extra={"node": cfg.node})

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

    @property
    def inflight(self) -> int:
        """Commits not yet answered (etcd and journal)."""
        return self._settler.inflight if self._settler is not None else 0

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
        """The stored scopes changed (cluster mode): blocks first, then the engine's view."""
        if self.assignments is not None:
            self.assignments.set_scopes(scopes)
        if self._engine is not None:
            self._engine.set_scopes(scopes)
        log.info("spoke.scopes", extra={"scopes": [s.name for s in scopes]})

    async def _register(
        self, client: EtcdClient, session: Session, infos: tuple[InterfaceInfo, ...]
    ) -> None:
        member = Member(
            node=self.cfg.node,
            lease=session.lease_id,
            role="spoke",
            hub_eligible=self._hub_role is not None,
            grpc_address=self._grpc_address,
            server_ids=tuple(str(self._server_ids[i.name]) for i in infos),
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

    # -- the packet path -------------------------------------------------------------------
    def _on_stale(self, waited: float) -> None:
        """A request waited in the socket past `dhcp.max_queue_delay`: overload, dropped unread."""
        self.metrics.drop("stale")
        suppressed = self._log_limit.allow("stale", time.monotonic())
        if suppressed is not None:
            log.warning(
                "dhcp.overload",
                extra={
                    "waited": round(waited, 3),
                    "max_queue_delay": self.cfg.dhcp.max_queue_delay,
                    "suppressed": suppressed,
                },
            )

    def _on_datagram(
        self, data: bytes, src: tuple[str, int], info: InterfaceInfo, broadcast: bool
    ) -> None:
        try:
            msg = decode(data)
        except DecodeError as e:
            reason = str(e.reason)
            self.metrics.drop(f"malformed-{reason}")
            suppressed = self._log_limit.allow(reason, time.monotonic())
            if suppressed is not None:
                log.warning(
                    "dhcp.malformed",
                    extra={
                        "src": src[0],
                        "interface": info.name,
                        "reason": reason,
                        "detail": e.detail,
                        "len": len(data),
                        "suppressed": suppressed,
                    },
                )
            return
        if msg.op is not Op.BOOTREQUEST:
            self.metrics.drop("not-a-request")
            return
        mtype = msg.message_type
        self.metrics.packet_in(mtype.name if mtype else "BOOTP")
        engine = self._engine
        assert engine is not None
        ingress = Ingress(info.name, self._server_ids[info.name], broadcast)
        try:
            screened = engine.screen(msg, ingress)
        except Exception:
            self._internal_error(msg, None)
            return
        if screened is not None:
            # Another server's request (or not one at all): counted, not traced. Behind a
            # relay that sends to every server, this is most of what the others answer.
            self.metrics.drop(screened.reason)
            return
        settler = self._settler
        assert settler is not None
        if mtype is MessageType.DISCOVER and not settler.admits_new():
            # Overload: every commit slot is taken. A new exchange would end in a REQUEST
            # nobody can commit in time; exchanges already offered finish first.
            self.metrics.drop("overload-discover")
            return
        txn = self._tracer.transaction(mtype, msg.xid, msg.client_key)
        failover = self.failover
        if failover is not None:
            if not failover.fsm.answers_at_all:
                self.metrics.drop("not-serving")
                txn.end("drop", "not-serving")
                return
            engine.policy = failover.policy()
            failover.annotate(txn.span)
        try:
            decision = engine.serve(msg, ingress, self.clock())
            settler.settle(decision, txn)
        except Exception:
            self._internal_error(msg, txn)

    def _internal_error(self, msg: Message, txn: Transaction | None) -> None:
        """In an `except` block: a bug met while handling `msg`; logged with its traceback."""
        log.exception(
            "dhcp.internal_error",
            extra={"xid": f"0x{msg.xid:08x}", "client": msg.client_key.hex()},
        )
        self.metrics.drop("internal-error")
        if txn is not None:
            txn.end("error", "internal-error")

    def _send(self, out: Outgoing) -> None:
        transport = self._transport
        assert transport is not None
        try:
            payload = encode(out.message)
        except Exception:
            log.exception("dhcp.encode_error", extra={"xid": f"0x{out.message.xid:08x}"})
            self.metrics.drop("encode-error")
            return
        transport.send(payload, out.dest, out.interface)
        mtype = out.message.message_type
        self.metrics.packet_out(mtype.name if mtype else "BOOTP")
