"""Owns driving a spoke's failover state machine (`spoke.failover.machine`) with real observations.

`FailoverSupervisor` watches the etcd session (its `last_keepalive`, on the monotonic clock;
a probe when the session is lost), hears about failed commits from the exchange, and acts on
every transition: one `failover.transition` log line (from, to, reason), the
`hubspoke_state{state}` metric and a span event handed to the next transaction span.

What the request path needs from it is one call, `route()`: may the spoke answer at all, and if
so under which `ServingPolicy` and through which `Committer` (etcd in NORMAL; the fsync'd
journal while etcd cannot be written). When the spoke starts journaling, commits still queued
for etcd are taken back (`Diverted`) and served again through the journal. In RECOVER it
replays the journal into etcd (`spoke.failover.replay`), opens a new session and registers
again if the old one is gone, truncates the journal and returns to NORMAL. The binding replica
and the assignments resume by themselves: their watches restart from the last revision they
saw (a full resync only after a compaction).

Three things are not "etcd answers" although etcd answers: a session found gone while etcd
answers (expired in an outage, revoked by the hub, lost with quorum) is `SessionLost`, which
leads through RECOVER to a new session; etcd's NOSPACE alarm (a commit refused with "database
space exceeded") keeps the spoke journaling, with the `hubspoke_etcd_alarm{alarm="nospace"}`
metric and one error log line, until etcd's status no longer reports the alarm; and a commit
whose outcome is unknown is journaled as `unknown` so RECOVER settles it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from opentelemetry import trace

from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdError, EtcdNoSpace
from hubspoke.etcd.session import Session, monotonic
from hubspoke.states import State
from spoke.dhcp.decisions import BindingWrite, ServingPolicy
from spoke.failover.journal import (
    Journal,
    JournalPath,
    JournalWriter,
    Offload,
    in_thread,
)
from spoke.failover.machine import JOURNALING as JOURNALING_STATES
from spoke.failover.machine import (
    EtcdFailing,
    EtcdOk,
    Failover,
    FailoverParams,
    JournalReplayed,
    Observation,
    Ready,
    SessionLost,
    Transition,
)
from spoke.failover.replay import Conflicted, Replayer
from spoke.leases.batch import CommitQueue
from spoke.leases.commit import Committer, EtcdPath
from spoke.leases.store import LeaseStore
from spoke.leases.table import BindingTable
from spoke.metrics import Metrics

log = logging.getLogger("hubspoke.failover")

TICK = 0.2
PROBE_DEADLINE = 1.0
REVOKE_DEADLINE = 1.0
NOSPACE = "alarm:NOSPACE"

Register = Callable[[Session], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """How a request is answered now: the engine's policy and the path its commits take."""

    policy: ServingPolicy
    committer: Committer


class FailoverSupervisor:
    """One per spoke process; `run()` in a task of the runtime's TaskGroup."""

    def __init__(
        self,
        params: FailoverParams,
        journal_path: Path,
        *,
        node: str,
        client: EtcdClient,
        store: LeaseStore,
        commits: CommitQueue,
        table: BindingTable,
        session: Session,
        register: Register,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = monotonic,
        clock: Callable[[], float] = time.time,
        offload: Offload = in_thread,
    ) -> None:
        """`monotonic`: the clock of keep-alives and of `max_interrupted` (the event loop's);
        `clock`: the wall clock bindings are written on (`journal_until` is on it)."""
        self.node = node
        self.client = client
        self.session = session
        self.register = register
        self.metrics = metrics
        self.monotonic = monotonic
        self.clock = clock
        self.table = table
        self.fsm = Failover(params, now=monotonic())
        self.fsm.last_ok = session.last_keepalive
        self.journal = Journal(journal_path)
        self.writer = JournalWriter(self.journal, offload=offload)
        self.commits = commits
        self.etcd_path: Committer = EtcdPath(commits)
        self.journal_path: Committer = JournalPath(self.writer)
        self.offload = offload
        self._replayed_to = (0, 0)  # journal (byte offset, line number) replayed so far
        self.conflicted: Conflicted = set()
        self.replayer = Replayer(store, table, self.conflicted, on_duplicate=self._duplicate_alarm)
        # A linearizable read of our own member key: it needs etcd's quorum, as writes do (a
        # status answer alone comes from any one member, even one without a leader).
        self._probe_key = store.keys.member(node)
        self.transitions: list[Transition] = []
        self.span_events: list[Transition] = []
        self.recovered_at: float | None = None
        self.nospace = False
        self.duplicates = 0
        self._set_metric()

    # -- what the runtime reads ----------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.fsm.state

    @property
    def reason(self) -> str:
        return self.fsm.reason

    def annotate(self, span: trace.Span) -> None:
        """Put transitions not yet shown on a span as events on `span` (a transaction's)."""
        while self.span_events and span.is_recording():
            t = self.span_events.pop(0)
            span.add_event(
                "failover.transition",
                {"from": t.source.value, "to": t.target.value, "reason": t.reason},
            )

    def route(self) -> Route | None:
        """None: answer nothing now (STARTUP, MAINTENANCE)."""
        if not self.fsm.answers_at_all:
            return None
        committer = self.journal_path if self.fsm.must_journal else self.etcd_path
        return Route(self.policy(), committer)

    def policy(self) -> ServingPolicy:
        now = self.monotonic()
        horizon = self.fsm.journal_horizon(now)
        until = None if horizon is None else self.clock() + horizon
        return ServingPolicy(self.fsm.lease_cap, self.fsm.may_allocate_new(now), until)

    # -- observations ----------------------------------------------------------------------------
    def observe(self, obs: Observation) -> Transition | None:
        t = self.fsm.observe(obs, self.monotonic())
        if t is not None:
            if t.target in JOURNALING_STATES and t.source not in JOURNALING_STATES:
                # what is still queued for etcd comes back (Diverted) and goes to the journal
                n = self.commits.divert()
                if n:
                    log.info("dhcp.commits_diverted", extra={"commits": n})
            self.transitions.append(t)
            del self.transitions[:-50]
            self.span_events.append(t)
            del self.span_events[:-10]
            log.info(
                "failover.transition",
                extra={
                    "node": self.node,
                    "from": t.source.value,
                    "to": t.target.value,
                    "reason": t.reason,
                },
            )
            self._set_metric()
        return t

    def _set_metric(self) -> None:
        if self.metrics is not None:
            self.metrics.set_state(self.fsm.state.metric_label)

    def ready(self) -> Transition | None:
        """Session, assignments and replica are loaded (a journal left over means RECOVER).
        Commits of unknown outcome an earlier run journaled hold their addresses again."""
        pending = not self.journal.is_empty()
        if pending:
            for entry in self.journal.read().entries:
                if entry.kind == "unknown":
                    w = entry.write
                    self.table.hold_unknown(w.scope, w.ip, w.binding.client_key)
        return self.observe(Ready(journal_pending=pending))

    def commit_failed(self, error: EtcdError) -> None:
        """A binding commit timed out, found etcd unavailable, or was refused (NOSPACE)."""
        if isinstance(error, EtcdNoSpace):
            self._set_nospace(True)
        since = self.monotonic() - self.session.last_keepalive
        cause = "nospace" if self.nospace else f"commit ({type(error).__name__})"
        self.observe(EtcdFailing(since, cause=cause))

    def _set_nospace(self, on: bool) -> None:
        if on == self.nospace:
            return
        self.nospace = on
        if self.metrics is not None:
            self.metrics.set_alarm("nospace", on)
        if on:
            log.error(
                "etcd.nospace_alarm",
                extra={
                    "node": self.node,
                    "action": "etcd refuses writes (quota full): journaling until an operator "
                    "compacts, defragments and disarms the alarm",
                },
            )
        else:
            log.info("etcd.nospace_cleared", extra={"node": self.node})

    def commit_unknown(self, write: BindingWrite) -> None:
        """A commit's outcome is unknown: journal it so RECOVER settles it (no reply waits)."""
        done = self.writer.submit(write, "unknown")
        done.add_done_callback(self._unknown_journaled)

    def _unknown_journaled(self, done: asyncio.Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.error("failover.journal_error", extra={"kind": "unknown", "error": repr(error)})

    def _duplicate_alarm(self) -> None:
        self.duplicates += 1
        if self.metrics is not None:
            self.metrics.replay_duplicate()

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Observe etcd every tick; replay while in RECOVER. Runs until cancelled."""
        try:
            while True:
                await self._tick()
                if self.metrics is not None:
                    self.metrics.set_unknown(self.table.unknown_count())
                await asyncio.sleep(TICK)
        finally:
            await self.writer.close()
            self.journal.close()

    async def _tick(self) -> None:
        s = self.session
        now = self.monotonic()
        if self.nospace:
            # etcd answers keep-alives but refuses writes: interrupted until the alarm is gone.
            try:
                status = await self.client.status(deadline=PROBE_DEADLINE)
                if not any(NOSPACE in e for e in status.errors):
                    self._set_nospace(False)
            except EtcdError:
                pass
            if self.nospace:
                self.observe(EtcdFailing(now - s.last_keepalive, cause="nospace"))
                return
        if s.is_alive:
            # Keep-alives go out every `keepalive_interval`: only silence beyond that counts.
            since = now - s.last_keepalive - s.keepalive_interval
            if since > self.fsm.params.interrupted_after:
                self.observe(EtcdFailing(since))
            else:
                self.observe(EtcdOk(s.last_keepalive))
        elif self.fsm.state is not State.STARTUP:
            asked = self.monotonic()
            try:
                await self.client.get(self._probe_key, deadline=PROBE_DEADLINE)
            except EtcdError:
                self.observe(EtcdFailing(self.monotonic() - s.last_keepalive))
            else:
                if self.fsm.state in (State.NORMAL, State.MAINTENANCE):
                    self.observe(SessionLost())
                else:
                    self.observe(EtcdOk(s.last_keepalive, at=asked))
        if self.fsm.state is State.RECOVER:
            await self._recover()

    async def _recover(self) -> None:
        """One replay round; NORMAL when the journal is empty and we are registered."""
        started = self.monotonic()
        try:
            # Only what was journaled since the last round that replayed cleanly: a round
            # that fails on etcd reads the same lines again (the replayer skips what it did).
            start, seq = self._replayed_to
            read = await self.offload(partial(self.journal.read, start, seq))
            if read.bad_lines:
                log.warning("failover.journal_damaged", extra={"bad_lines": list(read.bad_lines)})
            await self.replayer.replay(read.entries)
            self._replayed_to = (read.end, read.next_seq)
            if not self.session.is_alive:
                await self._new_session()
            async with self.writer.lock:
                if self.writer.has_pending:
                    return
                # No append is running (we hold the writer's lock): whole lines past what we
                # replayed were written meanwhile (next round); a torn line left by a crash was
                # never acknowledged and goes with the truncation.
                tail = self.journal.read(*self._replayed_to)
                if tail.entries or tail.bad_lines:
                    return
                if tail.torn_tail:
                    log.warning("failover.journal_damaged", extra={"torn_tail": True})
                self.journal.truncate()
                self.replayer.reset()
                self._replayed_to = (0, 0)
                t = self.observe(JournalReplayed())
            if t is not None:
                self.recovered_at = self.monotonic()
                r = self.replayer.report
                log.info(
                    "failover.recovered",
                    extra={
                        "node": self.node,
                        "entries": r.entries,
                        "clean": r.clean,
                        "conflicts": r.conflicts,
                        "seconds": round(self.recovered_at - started, 3),
                    },
                )
        except EtcdError as e:
            self.commit_failed(e)

    async def _new_session(self) -> None:
        old = self.session
        new = await Session.open(self.client, ttl=old.ttl)
        try:
            await self.register(new)
        except BaseException:
            await new.abandon()
            raise
        self.session = new
        # The old lease may still exist (etcd extends leases when quorum returns): revoke it,
        # so nothing the cluster sees stays attached to it.
        with contextlib.suppress(Exception):
            await old.abandon()
        with contextlib.suppress(EtcdError):
            await self.client.lease_revoke(old.lease_id, deadline=REVOKE_DEADLINE)
        log.info(
            "failover.session_renewed",
            extra={
                "node": self.node,
                "old_lease": f"{old.lease_id:x}",
                "lease": f"{new.lease_id:x}",
            },
        )
