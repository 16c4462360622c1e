"""The hub role while this process holds the election: watch, plan, write. The only hub writer.

Each cycle reads a snapshot of what the mirrors hold (members, scopes, assignments, drains) and
the latest utilization reports, asks the pure planner (`hub.plan.planner.plan`) for actions, and
carries each out as one etcd transaction that compares the hub's epoch (the leader key's create
revision) and the record's revision it was decided on. A failed epoch compare means another
hub was elected: the role ends (`Deposed`). Each action is logged as one sentence (`hub.move`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import hub.plan.planner as P
from hub.api.model import ReportAck, UtilizationReport
from hub.config import HubRoleConfig
from hub.metrics import HubMetrics
from hub.plan.inputs import Snapshot, health, utilization
from hub.plan.writes import write_for
from hubspoke.aiotasks import cancel_and_wait
from hubspoke.assign import BlockRecord, BucketMap, Member
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.election import Leadership
from hubspoke.etcd.errors import EtcdError
from hubspoke.etcd.mirror import PrefixMirror
from hubspoke.etcd.records import Compare, KeyValue
from hubspoke.etcd.session import monotonic
from hubspoke.keys import KeyError_, Keys
from hubspoke.scopes.store import parse_scope_doc, seed_configured_scopes
from hubspoke.values import ValueFormatError

log = logging.getLogger("hubspoke.hub")

REPORT_STALE_INTERVALS = 3
PROBE_TIMEOUT = 1.0
PROBE_ATTEMPTS = 4
PROBE_INTERVAL = 0.15


class Deposed(Exception):
    """Another hub holds the epoch now: stop acting."""


@dataclass
class SpokeRecord:
    """What the hub knows of one spoke beyond etcd: its last report and when it went down."""

    member: Member | None = None
    report: UtilizationReport | None = None
    report_at: float | None = None  # monotonic
    stream_open: bool = False
    down_since: float | None = None  # monotonic (the event loop's clock)
    state_reason: str = ""


class HubRole:
    """Plans and writes assignments for one epoch; also the data behind the management API."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        cfg: HubRoleConfig,
        leadership: Leadership,
        *,
        address: str,
        clock: Callable[[], float] = time.time,
        metrics: HubMetrics | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.cfg = cfg
        self.leadership = leadership
        self.address = address
        self.clock = clock
        self.metrics = metrics
        self.epoch = leadership.epoch
        self.spokes: dict[str, SpokeRecord] = {}
        self.members = PrefixMirror(client, keys.members_prefix(), self._member_changed)
        self.assign = PrefixMirror(client, keys.assign_prefix())
        self.scope_docs = PrefixMirror(client, keys.scopes_prefix())
        self.drains = PrefixMirror(client, keys.drains_prefix())
        self.wake = asyncio.Event()
        self.cycles = 0
        self.started = clock()
        self.started_mono = monotonic()
        self.written_revision = 0  # the planner waits for its mirrors to see its own writes
        self._tg: asyncio.TaskGroup | None = None
        self._probing: set[str] = set()

    # -- fencing -----------------------------------------------------------------------------
    def fence(self) -> list[Compare]:
        return [Compare.create_revision(self.leadership.key, "=", self.epoch)]

    async def check_epoch(self) -> None:
        kv = await self.client.get(self.leadership.key)
        if kv is None or kv.create_revision != self.epoch:
            raise Deposed(f"leader key {self.leadership.key!r} is no longer ours")

    # -- mirrors -----------------------------------------------------------------------------
    def _member_changed(self, key: bytes, old: KeyValue | None, new: KeyValue | None) -> None:
        try:
            node = self.keys.parse_member(key)
        except KeyError_:
            return
        rec = self.spokes.setdefault(node, SpokeRecord())
        if new is None:
            rec.member = None
            if rec.down_since is None:
                rec.down_since = monotonic()
                rec.state_reason = rec.state_reason or "session ended"
                log.info("hub.spoke_down", extra={"node": node, "reason": rec.state_reason})
        else:
            try:
                rec.member = Member.decode(new.value)
            except ValueFormatError as e:
                log.warning("hub.bad_member", extra={"node": node, "error": str(e)})
                return
            if old is None:
                log.info("hub.spoke_up", extra={"node": node, "role": rec.member.role})
            rec.down_since = None
            rec.state_reason = ""
        self.wake.set()

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for kv in self.scope_docs.items.values():
            try:
                name = self.keys.parse_scope(kv.key)
                snap.scopes[name] = parse_scope_doc(kv.value, name)
            except (KeyError_, ValueError) as e:
                log.warning("hub.bad_scope", extra={"key": kv.key.decode(), "error": str(e)})
        buckets_key = self.keys.buckets()
        for kv in self.assign.items.values():
            if kv.key == buckets_key:
                try:
                    snap.buckets = BucketMap.decode(kv.value)
                    snap.buckets_revision = kv.mod_revision
                except ValueFormatError as e:
                    log.warning("hub.bad_buckets", extra={"error": str(e)})
                continue
            try:
                ident = self.keys.parse_block(kv.key)
                snap.blocks[ident] = (BlockRecord.decode(kv.value), kv.mod_revision)
            except (KeyError_, ValueFormatError) as e:
                log.warning("hub.bad_block", extra={"key": kv.key.decode(), "error": str(e)})
        for kv in self.drains.items.values():
            snap.drains.add(kv.key[len(self.keys.drains_prefix()) :].decode())
        return snap

    # -- planning ----------------------------------------------------------------------------
    def spoke_views(self, snap: Snapshot, now: float) -> list[P.SpokeView]:
        known = set(self.spokes)
        known |= {o for o in snap.buckets.owners if o is not None}
        known |= {r.owner for r, _ in snap.blocks.values() if r.owner is not None}
        views = []
        for node in sorted(known):
            rec = self.spokes.setdefault(node, SpokeRecord())
            member = rec.member
            if member is not None and member.role != "spoke":
                continue
            live = member is not None
            if not live and rec.down_since is None:
                # Owned something before this hub knew it: count its absence from now on.
                rec.down_since = self.started_mono
                rec.state_reason = "not a member when this hub started"
            views.append(
                P.SpokeView(
                    node=node,
                    live=live,
                    down_since=None if live else rec.down_since,
                    draining=node in snap.drains or bool(member and member.draining),
                    weight=self.cfg.weight(node) * self.health(node),
                    util=utilization(rec.report),
                )
            )
        return views

    def health(self, node: str) -> float:
        """`hub.plan.inputs.health` of the spoke's latest report (1 with none yet)."""
        rec = self.spokes.get(node)
        return health(rec.report if rec is not None else None)

    def params(self) -> P.PlanParams:
        """The planner's knobs. `down_since` is when this hub saw the spoke's session end (its
        member key deleted: expiry or revocation), so its blocks are held for max-interrupted
        + MCLT after it: `session expiry + max-interrupted + MCLT` (DESIGN.md, Failover)."""
        p = self.cfg.planner
        return P.PlanParams(
            reserve_fraction=p.reserve_fraction,
            low_watermark=p.low_watermark,
            down_hold=p.max_interrupted + p.mclt,
            max_moves_per_cycle=p.max_moves_per_cycle,
            block_size=p.block_size,
        )

    async def cycle(self) -> int:
        """One planning cycle; returns the number of actions carried out. The planner's `now`
        is monotonic: a down spoke's blocks are held for `down_hold` of elapsed time, whatever
        the wall clock does meanwhile (a step of NTP must not hand them over early, R5)."""
        now = monotonic()
        snap = self.snapshot()
        current = P.Current(buckets=snap.buckets, blocks=dict(snap.blocks))
        actions = P.plan(
            tuple(snap.scopes.values()), self.spoke_views(snap, now), current, now, self.params()
        )
        done = 0
        for action in actions:
            if await self.execute(action, snap):
                done += 1
        self.cycles += 1
        return done

    async def execute(self, action: P.Action, snap: Snapshot) -> bool:
        """One action as one transaction: epoch fence plus the record's revision."""
        w = write_for(action, self.keys, snap.buckets_revision)
        compares, ops, what = self.fence() + w.compares, w.ops, w.what
        result = await self.client.txn(compares, ops)
        kind = type(action).__name__
        self.written_revision = max(self.written_revision, result.revision)
        if not result.succeeded:
            await self.check_epoch()
            log.info("hub.move_stale", extra={"action": kind, "why": action.why, **what})
            return False
        log.info(f"hub.move: {action.why}", extra={"action": kind, "epoch": self.epoch, **what})
        if self.metrics is not None:
            self.metrics.moved(kind)
        return True

    # -- running -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Seed scopes (first start only), then load every mirror."""
        await seed_configured_scopes(self.client, self.keys, self.cfg.seed_scopes, self.fence())
        for mirror in (self.members, self.assign, self.scope_docs, self.drains):
            await mirror.load()

    async def run(self) -> None:
        """Follow the mirrors and plan until deposed or cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for mirror in (self.members, self.assign, self.scope_docs, self.drains):
                tg.create_task(mirror.follow())
            tg.create_task(self._plan_loop())

    async def _caught_up(self, within: float = 2.0) -> None:
        """Wait (bounded) until the assignment mirror has seen this role's last write."""
        deadline = monotonic() + within
        while self.assign.revision < self.written_revision and monotonic() < deadline:
            self.assign.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.assign.changed.wait(), deadline - monotonic())

    async def _plan_loop(self) -> None:
        interval = self.cfg.planner.interval
        while True:
            await self._caught_up()
            self.wake.clear()
            for mirror in (self.members, self.assign, self.scope_docs, self.drains):
                mirror.changed.clear()
            try:
                moved = await self.cycle()
            except Deposed:
                raise
            except Exception:
                log.exception("hub.cycle_failed", extra={"epoch": self.epoch})
                moved = 0
            if moved:
                continue  # the world changed: look again at once
            waits = [
                asyncio.ensure_future(e.wait())
                for e in (
                    self.wake,
                    self.members.changed,
                    self.assign.changed,
                    self.scope_docs.changed,
                    self.drains.changed,
                )
            ]
            try:
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(*waits)

    # -- reports -----------------------------------------------------------------------------
    def on_report(self, report: UtilizationReport, peer: str) -> ReportAck:
        rec = self.spokes.setdefault(report.node, SpokeRecord())
        first = rec.report is None
        rec.report = report
        rec.report_at = monotonic()
        rec.stream_open = True
        if self.metrics is not None:
            self.metrics.report()
        if first:
            self.wake.set()
        return ReportAck(epoch=self.epoch, hub_node=self.cfg.node, seq=report.seq)

    def on_report_stream_closed(self, node: str, error: str | None) -> None:
        rec = self.spokes.get(node)
        if rec is not None:
            rec.stream_open = False
        log.info("hub.report_stream_closed", extra={"node": node, "error": error or ""})
        if error is not None and self._tg is not None and node not in self._probing:
            probe = self._probe(node)
            try:
                self._tg.create_task(probe)
            except RuntimeError:  # the role is shutting down: no more probes
                probe.close()
                return
            self._probing.add(node)

    async def _probe(self, node: str) -> None:
        """A report stream broke: is the spoke's process gone (its port refuses)?

        Refused: the process crashed; revoke its session now, so it is down at once and its
        buckets move (DESIGN.md, Liveness). Accepted, or no answer (frozen, cut off): leave it
        to the session TTL, which is the only safe judge of a silent spoke.
        """
        try:
            rec = self.spokes.get(node)
            member = rec.member if rec is not None else None
            if member is None or not member.grpc_address:
                return
            host, _, port = member.grpc_address.rpartition(":")
            # A dying process closes its stream before its listener is gone: look a few times.
            for attempt in range(1, PROBE_ATTEMPTS + 1):
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, int(port)), PROBE_TIMEOUT
                    )
                except ConnectionRefusedError:
                    break
                except (TimeoutError, OSError) as e:
                    log.info("hub.probe_inconclusive", extra={"node": node, "error": repr(e)})
                    return
                writer.close()
                if attempt == PROBE_ATTEMPTS:
                    log.info("hub.probe_alive", extra={"node": node, "attempts": attempt})
                    return
                await asyncio.sleep(PROBE_INTERVAL)
            current = self.spokes.get(node)
            if current is None or current.member is None or current.member.lease != member.lease:
                return  # it came back with a new session meanwhile
            current.state_reason = "crashed: report stream reset and its port refused"
            log.warning(
                "hub.spoke_crashed",
                extra={"node": node, "lease": member.lease, "why": "stream reset, port refused"},
            )
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(member.lease)
        finally:
            self._probing.discard(node)

    def report_age(self, node: str) -> float | None:
        rec = self.spokes.get(node)
        if rec is None or rec.report_at is None:
            return None
        return monotonic() - rec.report_at

    def is_report_stale(self, node: str) -> bool:
        age = self.report_age(node)
        return age is None or age > REPORT_STALE_INTERVALS * 1.0
