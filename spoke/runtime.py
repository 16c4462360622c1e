"""The spoke's composition root: wires config, etcd, the binding replica, the engine and sockets.

The per-packet path is synchronous up to the engine's decision; only commits are awaited, each
in its own task inside the runtime's TaskGroup, so many commits are in flight at once (etcd
batches them into one raft entry and one fsync). A DHCPACK is sent only from the commit task,
after etcd has committed the binding.

Error boundary: a malformed datagram is the peer's fault (counted by reason, logged at debug,
dropped); an exception in our own code while handling a packet is logged loudly with context
and the loop goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.etcd.client import EtcdClient
from hub.etcd.errors import EtcdError
from hub.etcd.session import Session
from hub.keys import Keys
from spoke.bindings import BindingTable
from spoke.config import SpokeConfig
from spoke.dhcp.codec import DecodeError, decode, encode
from spoke.dhcp.decisions import Commit, Decision, Drop, Ingress, Reply
from spoke.dhcp.engine import Engine, EngineConfig
from spoke.dhcp.message import Op
from spoke.dhcp.reply import Outgoing
from spoke.leases import Committed, LeaseStore
from spoke.metrics import Metrics, MetricsServer
from spoke.telemetry import DhcpTracer, Transaction, setup_tracing, shutdown_tracing
from spoke.transport import InterfaceInfo, Transport, interface_info

log = logging.getLogger("hubspoke.spoke")

SESSION_TTL = 5
MALFORMED_LOG_INTERVAL = 10.0


class RateLimit:
    """At most one log line per key per `interval` seconds; counts what it held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of held-back lines."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


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
        self.table = BindingTable(reuse_delay=cfg.dhcp.reuse_delay)
        self.metrics = Metrics()
        self.inflight = 0
        self._tg: asyncio.TaskGroup | None = None
        self._store: LeaseStore | None = None
        self._engine: Engine | None = None
        self._transport: Transport | None = None
        self._server_ids: dict[str, Any] = {}
        self._tracer = DhcpTracer(None)
        self._malformed_log = RateLimit(MALFORMED_LOG_INTERVAL)

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        provider = setup_tracing(cfg.tracing, cfg.node)
        self._tracer = DhcpTracer(provider)
        infos = tuple(interface_info(name) for name in cfg.dhcp.interfaces)
        self._server_ids = {i.name: cfg.dhcp.server_id or i.ip for i in infos}
        client = await EtcdClient.connect(cfg.etcd.client)
        session: Session | None = None
        try:
            session = await Session.open(client, ttl=SESSION_TTL)
            await self._register(client, session, infos)
            store = LeaseStore(client, self.keys, self.table, cfg.node)
            self._store = store
            blocks = await store.claim_all_blocks(cfg.scopes)
            await store.load()
            self._engine = Engine(
                EngineConfig(
                    node=cfg.node,
                    offer_lifetime=cfg.dhcp.offer_lifetime,
                    decline_probation=cfg.dhcp.decline_probation,
                    server_ids=frozenset(self._server_ids.values()),
                ),
                cfg.scopes,
                self.table,
            )
            self.metrics.set_sources(self._binding_counts, self._free_counts)
            metrics_server = (
                MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port)
                if cfg.metrics
                else None
            )
            if metrics_server is not None:
                await metrics_server.start()
            transport = Transport(infos, cfg.dhcp.port, self._on_datagram)
            self._transport = transport
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                follower = tg.create_task(store.follow())
                transport.start()
                self.metrics.set_state("normal")
                log.info(
                    "spoke.ready",
                    extra={
                        "node": cfg.node,
                        "blocks": blocks,
                        "scopes": len(cfg.scopes),
                        "revision": store.revision,
                    },
                )
                if self.ready_file is not None:
                    self.ready_file.write_text(json.dumps({"node": cfg.node}))
                await stop.wait()
                log.info("spoke.stopping", extra={"inflight": self.inflight})
                transport.close()
                follower.cancel()
            if metrics_server is not None:
                await metrics_server.stop()
        finally:
            if session is not None:
                await session.close()
            await client.close()
            await shutdown_tracing(provider)
            log.info("spoke.stopped", extra={"node": cfg.node})

    async def _register(
        self, client: EtcdClient, session: Session, infos: tuple[InterfaceInfo, ...]
    ) -> None:
        record = {
            "v": 1,
            "node": self.cfg.node,
            "lease": session.lease_id,
            "interfaces": [i.name for i in infos],
            "server_ids": [str(self._server_ids[i.name]) for i in infos],
            "started": round(self.clock(), 3),
        }
        await client.put(
            self.keys.member(self.cfg.node),
            json.dumps(record, separators=(",", ":")).encode(),
            lease=session.lease_id,
        )

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
    def _on_datagram(self, data: bytes, src: tuple[str, int], info: InterfaceInfo) -> None:
        try:
            msg = decode(data)
        except DecodeError as e:
            reason = str(e.reason)
            self.metrics.drop(f"malformed-{reason}")
            suppressed = self._malformed_log.allow(reason, time.monotonic())
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
        txn = self._tracer.transaction(mtype, msg.xid, msg.client_key)
        engine = self._engine
        assert engine is not None
        try:
            decision = engine.handle(
                msg, Ingress(info.name, self._server_ids[info.name]), self.clock()
            )
            self._dispatch(decision, txn)
        except Exception:
            log.exception(
                "dhcp.internal_error",
                extra={"xid": f"0x{msg.xid:08x}", "client": msg.client_key.hex()},
            )
            self.metrics.drop("internal-error")
            txn.end("error", "internal-error")

    def _dispatch(self, decision: Decision, txn: Transaction) -> None:
        if isinstance(decision, Drop):
            self.metrics.drop(decision.reason)
            txn.end("drop", decision.reason)
        elif isinstance(decision, Reply):
            self._send(decision.out)
            txn.end(decision.outcome)
        else:
            txn.set_scope(decision.write.scope)
            if self.inflight >= self.cfg.dhcp.max_inflight_commits:
                self.metrics.drop("overload")
                txn.end("drop", "overload")
                return
            assert self._tg is not None
            self.inflight += 1
            self._tg.create_task(self._commit(decision, txn))

    async def _commit(self, c: Commit, txn: Transaction) -> None:
        store, engine = self._store, self._engine
        assert store is not None and engine is not None
        try:
            try:
                with self.metrics.commit(), txn.commit():
                    outcome = await store.commit(c.write)
            except EtcdError as e:
                self.metrics.drop("etcd-unavailable")
                log.warning(
                    "dhcp.commit_error",
                    extra={"ip": str(c.write.ip), "scope": c.write.scope, "error": repr(e)},
                )
                txn.end("drop", "etcd-unavailable")
                return
            now = self.clock()
            if isinstance(outcome, Committed):
                engine.committed(c, outcome.version, now)
                if c.on_success is not None:
                    self._send(c.on_success)
                txn.end(c.outcome)
                return
            log.info(
                "dhcp.commit_conflict",
                extra={"ip": str(c.write.ip), "scope": c.write.scope, "fence": outcome.fence_lost},
            )
            self._dispatch(engine.commit_failed(c, now, outcome.current), txn)
        except Exception:
            log.exception("dhcp.commit_internal_error", extra={"ip": str(c.write.ip)})
            self.metrics.drop("internal-error")
            txn.end("error", "internal-error")
        finally:
            self.inflight -= 1

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
