"""The life of one DHCP request in a spoke, top to bottom. The one place a Commit becomes an ACK.

    datagram -> decode -> screen -> route -> admit -> serve -> settle -> (commit ->) reply

1. **decode** (`on_datagram`): a datagram that is not a DHCP message is counted by reason
   (`malformed-<reason>`) and logged at most once per interval; nothing else happens.
2. **screen** (`Engine.screen`): what the message alone rules out (not a request, an unknown
   type, another server's client or exchange) is counted and dropped before any span or lookup.
3. **route** (`Gate.route`, the failover supervisor): may the spoke answer now, under which
   `ServingPolicy`, through which commit path (`Committer`: etcd in NORMAL, the fsync'd journal
   while etcd cannot be written)? None: answer nothing (STARTUP, MAINTENANCE).
4. **admit**: a DISCOVER starts a new exchange only while its path has a commit slot free
   (its REQUEST could not be committed in time otherwise); a REQUEST may use twice as many.
5. **serve** (`Engine.serve`, pure): a `Drop`, a `Reply` sent at once (OFFER, NAK, an ACK that
   writes nothing), or a `Commit` whose reply waits for the write.
6. **settle**: a Commit goes to the route's committer; its `done` gets one `Outcome` and every
   outcome is handled in `_done`: durable -> table updated, the reply leaves; conflict -> the
   engine decides again from what etcd holds; diverted or refused by etcd -> served again
   under the journaling route; unknown -> the address stays held for that client and the write
   is journaled for RECOVER, nothing is sent (never a NAK); failed -> dropped.
7. **reply** (`Outbox`; in the spoke `Wire`): encoded and handed to the transport; an
   unencodable reply is counted (`reply-too-large`, `ack-too-large` for a committed binding,
   `encode-error`) and logged at most once per interval, never raised.

Bugs met on the way are logged with their traceback and counted (`internal-error`); the next
datagram is served as usual. What the exchange reports goes to a `Tally` (metrics and the
utilization counters in the spoke).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from ipaddress import IPv4Address
from typing import Protocol

from opentelemetry.trace import Span

from hubspoke.etcd.errors import EtcdError
from spoke.dhcp.codec import DecodeError, EncodeError, decode, encode
from spoke.dhcp.decisions import BindingWrite, Commit, CommitKind, Decision, Drop, Ingress, Reply
from spoke.dhcp.engine import Engine
from spoke.dhcp.message import ZERO, Message, MessageType
from spoke.dhcp.reply import Outgoing
from spoke.failover.supervisor import Route
from spoke.leases.commit import Conflict, Diverted, Durable, Failed, Outcome, Refused, Unknown
from spoke.ratelimit import RateLimit
from spoke.telemetry import DhcpTracer, Transaction
from spoke.transport import InterfaceInfo, Transport

log = logging.getLogger("hubspoke.spoke")

MALFORMED_LOG_INTERVAL = 10.0

__all__ = ["Exchange", "Gate", "Outbox", "Tally", "Wire"]


class Gate(Protocol):
    """What the request path needs from the failover supervisor."""

    def route(self) -> Route | None: ...

    def annotate(self, span: Span) -> None:
        """Put failover transitions not yet shown on a span as its events."""
        ...

    def commit_failed(self, error: EtcdError) -> None:
        """etcd did not take a commit (timeout, unavailable, NOSPACE): an observation."""
        ...

    def commit_unknown(self, write: BindingWrite) -> None:
        """Journal a commit of unknown outcome for RECOVER to settle."""
        ...


class Tally(Protocol):
    """Where the exchange reports what happened (metrics, utilization counters)."""

    def packet_in(self, kind: str) -> None: ...

    def packet_out(self, kind: str) -> None: ...

    def decided(self, decision: Decision) -> None:
        """Every decision settled, drops included (by reason)."""
        ...

    def acked(self, scope: str) -> None:
        """A lease was granted with its binding durable."""
        ...

    def commit_started(self) -> float: ...

    def commit_ended(self, started: float) -> None: ...


class Outbox(Protocol):
    """Where replies go: `Wire` (encoded onto the spoke's sockets), or a test's list."""

    def send(self, out: Outgoing) -> None: ...


class Wire:
    """The exchange's side of the transport: replies encoded and handed to it, and what the
    transport drops before decoding (`truncated`) counted in the same tally.

    A reply that cannot be encoded is counted and dropped, never raised, and logged at most once
    per interval per kind: `reply-too-large` (the engine refuses these before any write, so this
    is a backstop), `ack-too-large` for an ACK of a committed binding (the binding stays; the
    client asks again), `encode-error` for any other failure (a bug: with its traceback, still
    at most once per interval)."""

    def __init__(self, transport: Transport, tally: Tally) -> None:
        self.transport = transport
        self.tally = tally
        self._log_limit = RateLimit(MALFORMED_LOG_INTERVAL)
        transport.on_drop = self._dropped

    def send(self, out: Outgoing) -> None:
        msg = out.message
        try:
            payload = encode(msg)
        except EncodeError as e:
            mtype = msg.message_type
            committed = mtype is MessageType.ACK and msg.yiaddr != ZERO
            reason = "ack-too-large" if committed else "reply-too-large"
            self.tally.decided(Drop(reason))
            suppressed = self._log_limit.allow(reason, time.monotonic())
            if suppressed is not None:
                log.warning(
                    "dhcp.reply_too_large",
                    extra={
                        "reason": reason,
                        "type": mtype.name if mtype else "BOOTP",
                        "xid": f"0x{msg.xid:08x}",
                        "yiaddr": str(msg.yiaddr),
                        "error": str(e),
                        "suppressed": suppressed,
                    },
                )
            return
        except Exception:
            self.tally.decided(Drop("encode-error"))
            suppressed = self._log_limit.allow("encode-error", time.monotonic())
            if suppressed is not None:
                log.exception(
                    "dhcp.encode_error",
                    extra={"xid": f"0x{msg.xid:08x}", "suppressed": suppressed},
                )
            return
        self.transport.send(payload, out.dest, out.interface)
        mtype = msg.message_type
        self.tally.packet_out(mtype.name if mtype else "BOOTP")

    def _dropped(self, reason: str) -> None:
        self.tally.decided(Drop(reason))


class Exchange:
    """Serves the requests of one spoke. `inflight` counts commits not yet settled, per path."""

    def __init__(
        self,
        engine: Engine,
        gate: Gate,
        *,
        server_ids: Mapping[str, IPv4Address],
        tally: Tally,
        outbox: Outbox,
        tracer: DhcpTracer,
        clock: Callable[[], float],
        max_inflight: int,
        max_queue_delay: float | None = None,
    ) -> None:
        self.engine = engine
        self.gate = gate
        self.server_ids = dict(server_ids)
        self.tally = tally
        self.outbox = outbox
        self.tracer = tracer
        self.clock = clock
        self.max_inflight = max_inflight
        self.max_queue_delay = max_queue_delay
        self.inflight_by_path: dict[str, int] = {}
        self._log_limit = RateLimit(MALFORMED_LOG_INTERVAL)
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def inflight(self) -> int:
        return sum(self.inflight_by_path.values())

    async def idle(self, within: float) -> None:
        """Wait (at most `within` seconds) until no commit is in flight."""
        if self.inflight:
            self._idle.clear()
            try:
                async with asyncio.timeout(within):
                    await self._idle.wait()
            except TimeoutError:
                pass

    # -- 1. decode -----------------------------------------------------------------------
    def on_datagram(
        self, data: bytes, src: tuple[str, int], info: InterfaceInfo, broadcast: bool
    ) -> None:
        """The transport's callback for every datagram received on `info`'s interface."""
        try:
            msg = decode(data)
        except DecodeError as e:
            reason = str(e.reason)
            self.tally.decided(Drop(f"malformed-{reason}"))
            self._warn(
                "dhcp.malformed",
                reason,
                src=src[0],
                interface=info.name,
                reason=reason,
                detail=e.detail,
                len=len(data),
            )
            return
        self.on_request(msg, Ingress(info.name, self.server_ids[info.name], broadcast))

    def on_stale(self, waited: float) -> None:
        """A request waited in the socket past `dhcp.max_queue_delay`: overload, dropped unread."""
        self.tally.decided(Drop("stale"))
        self._warn(
            "dhcp.overload", "stale", waited=round(waited, 3), max_queue_delay=self.max_queue_delay
        )

    # -- 2-5. screen, route, admit, serve ------------------------------------------------
    def on_request(self, msg: Message, ingress: Ingress) -> None:
        engine = self.engine
        try:
            screened = engine.screen(msg, ingress)
        except Exception:
            self._internal_error(msg, None)
            return
        if screened is None or screened.reason != "not-a-request":
            mtype = msg.message_type
            self.tally.packet_in(mtype.name if mtype else "BOOTP")
        if screened is not None:
            # Another server's request (or not one at all): counted, not traced. Behind a
            # relay that sends to every server, this is most of what the others answer.
            self.tally.decided(screened)
            return
        route = self.gate.route()
        if route is None:
            self.tally.decided(Drop("not-serving"))
            return
        mtype = msg.message_type
        if mtype is MessageType.DISCOVER and not self._has_slot(route, self.max_inflight):
            # Overload: every commit slot is taken. A new exchange would end in a REQUEST
            # nobody can commit in time; exchanges already offered finish first.
            self.tally.decided(Drop("overload-discover"))
            return
        txn = self.tracer.transaction(mtype, msg.xid, msg.client_key)
        self.gate.annotate(txn.span)
        try:
            decision = engine.serve(msg, ingress, self.clock(), route.policy)
            self.settle(decision, txn, route)
        except Exception:
            self._internal_error(msg, txn)

    def _has_slot(self, route: Route, limit: int) -> bool:
        return self.inflight_by_path.get(route.committer.path, 0) < limit

    # -- 6. settle -----------------------------------------------------------------------
    def settle(self, decision: Decision, txn: Transaction, route: Route) -> None:
        self.tally.decided(decision)
        if isinstance(decision, Drop):
            txn.end("drop", decision.reason)
        elif isinstance(decision, Reply):
            self._reply(decision.out)
            txn.end(decision.outcome)
        else:
            txn.set_scope(decision.write.scope)
            # REQUESTs (exchanges already started) may use twice the slots new ones may.
            if not self._has_slot(route, 2 * self.max_inflight):
                self._drop(txn, "overload")
            else:
                self._commit(decision, txn, route)

    def _commit(self, c: Commit, txn: Transaction, route: Route) -> None:
        path = route.committer.path
        self.inflight_by_path[path] = self.inflight_by_path.get(path, 0) + 1
        self._idle.clear()
        started = self.tally.commit_started()
        span = txn.start_commit()
        route.committer.submit(c.write, c.kind, partial(self._done, c, txn, route, span, started))

    def _done(
        self,
        c: Commit,
        txn: Transaction,
        route: Route,
        span: Span | None,
        started: float,
        outcome: Outcome,
    ) -> None:
        """Every outcome of every commit, on either path."""
        self.tally.commit_ended(started)
        error = outcome.error if isinstance(outcome, Refused | Unknown | Failed) else None
        txn.end_commit(span, error)
        w = c.write
        try:
            if isinstance(outcome, Durable):
                self.engine.committed(c, outcome.version, self.clock(), journaled=outcome.journaled)
                if c.kind is CommitKind.ACK:
                    self.tally.acked(w.scope)
                if c.on_success is not None:
                    self._reply(c.on_success)
                txn.end(c.outcome, "journaled" if outcome.journaled else None)
            elif isinstance(outcome, Conflict):
                log.info(
                    "dhcp.commit_conflict",
                    extra={"ip": str(w.ip), "scope": w.scope, "fence": outcome.fence_lost},
                )
                again = self.engine.commit_failed(c, self.clock(), outcome.current, route.policy)
                self.settle(again, txn, route)
            elif isinstance(outcome, Diverted):
                self._serve_again(c, txn, route, "diverted")
            elif isinstance(outcome, Refused):
                self.gate.commit_failed(outcome.error)
                self._serve_again(c, txn, route, "etcd-nospace")
            elif isinstance(outcome, Unknown):
                # etcd may yet apply it: hold the address for its client, journal the write
                # for RECOVER to settle, send nothing (the client asks again).
                self.engine.table.hold_unknown(w.scope, w.ip, w.binding.client_key)
                self.gate.commit_unknown(w)
                self.gate.commit_failed(outcome.error)
                log.warning(
                    "dhcp.commit_unknown",
                    extra={"ip": str(w.ip), "scope": w.scope, "error": repr(outcome.error)},
                )
                self._drop(txn, "etcd-unknown")
            else:
                self._failed(c, txn, outcome)
        except Exception:
            log.exception("dhcp.commit_internal_error", extra={"ip": str(w.ip)})
            self._drop(txn, "internal-error")
        finally:
            path = route.committer.path
            self.inflight_by_path[path] -= 1
            if not self.inflight:
                self._idle.set()

    def _serve_again(self, c: Commit, txn: Transaction, tried: Route, why: str) -> None:
        """`c` never reached etcd (taken back, or refused): serve the request again if the
        spoke has another path now (the journal, under its policy: leases capped, bounded)."""
        route = self.gate.route()
        if route is None or route.committer is tried.committer:
            self._drop(txn, why)
            return
        self.settle(self.engine.serve(c.request, c.ingress, self.clock(), route.policy), txn, route)

    def _failed(self, c: Commit, txn: Transaction, outcome: Failed) -> None:
        extra = {"ip": str(c.write.ip), "scope": c.write.scope, "error": repr(outcome.error)}
        if outcome.reason == "etcd-error":
            log.warning("dhcp.commit_error", extra=extra)
        elif outcome.reason == "journal-error":
            log.error("dhcp.journal_error", extra=extra)
        elif outcome.reason == "internal-error" and outcome.error is not None:
            e = outcome.error
            log.error(
                "dhcp.commit_internal_error", extra=extra, exc_info=(type(e), e, e.__traceback__)
            )
        self._drop(txn, outcome.reason)

    def _drop(self, txn: Transaction, reason: str) -> None:
        self.tally.decided(Drop(reason))
        txn.end("error" if reason == "internal-error" else "drop", reason)

    # -- 7. reply ------------------------------------------------------------------------
    def _reply(self, out: Outgoing) -> None:
        self.outbox.send(out)

    # -- errors --------------------------------------------------------------------------
    def _internal_error(self, msg: Message, txn: Transaction | None) -> None:
        """In an `except` block: a bug met while handling `msg`; logged with its traceback."""
        log.exception(
            "dhcp.internal_error",
            extra={"xid": f"0x{msg.xid:08x}", "client": msg.client_key.hex()},
        )
        if txn is None:
            self.tally.decided(Drop("internal-error"))
        else:
            self._drop(txn, "internal-error")

    def _warn(self, event: str, key: str, **extra: object) -> None:
        """One warning per `key` per interval, with how many were suppressed."""
        suppressed = self._log_limit.allow(key, time.monotonic())
        if suppressed is not None:
            log.warning(event, extra={**extra, "suppressed": suppressed})
