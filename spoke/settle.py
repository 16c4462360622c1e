"""Settling the engine's decisions: the one place a Commit becomes an ACK (or does not).

Owns the two commit paths and what moves between them. While etcd is being written (NORMAL) a
`Commit` goes to etcd through the `CommitQueue`; while it is not (COMMUNICATION-INTERRUPTED,
RECOVER, RESOLUTION-INTERRUPTED) to the fsync'd journal. Either way the reply that depends on the
write leaves only once the write is durable. What the paths hand each other:

- A commit still queued when the spoke starts journaling was never sent: it is taken back
  (`Diverted`) and the request is served again under the new policy (MCLT, bounds), journaled.
- A commit etcd refused outright (NOSPACE) was not applied: the spoke starts journaling and the
  request is served again the same way.
- A commit whose outcome is unknown (deadline passed, connection broke) may still be applied by
  etcd later: its address stays held for that client only (`BindingTable.hold_unknown`) and the
  write is journaled as `unknown`, so RECOVER settles it before the spoke is NORMAL again. It is
  never treated as failed: no NAK, no re-offer of the address to anyone else.

A choice of path is made synchronously when the decision is settled (the journal line is queued
at once), so RECOVER can never see "nothing pending" between the decision and the write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from opentelemetry.trace import Span

from hubspoke.etcd.errors import EtcdError, EtcdNoSpace, EtcdUncertain
from spoke.dhcp.decisions import Commit, CommitKind, Decision, Drop, Reply
from spoke.dhcp.engine import Engine
from spoke.dhcp.reply import Outgoing
from spoke.failover.supervisor import FailoverSupervisor
from spoke.leases.batch import CommitQueue, Diverted, Result
from spoke.leases.store import Committed
from spoke.metrics import Metrics
from spoke.reporter import Counters
from spoke.telemetry import Transaction

log = logging.getLogger("hubspoke.spoke")

__all__ = ["Settler"]


class Settler:
    """Settles decisions for one spoke. `inflight` counts commits not yet answered (both paths);
    a DISCOVER is refused when the path it would take has no slot left (`admits_new`)."""

    def __init__(
        self,
        engine: Engine,
        commits: CommitQueue,
        failover: FailoverSupervisor,
        *,
        metrics: Metrics,
        counters: Counters,
        send: Callable[[Outgoing], None],
        clock: Callable[[], float],
        max_inflight: int,
    ) -> None:
        self.engine = engine
        self.commits = commits
        self.failover = failover
        self.metrics = metrics
        self.counters = counters
        self.send = send
        self.clock = clock
        self.max_inflight = max_inflight
        self.etcd_inflight = 0
        self.journal_inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        failover.on_journaling.append(self._journaling)

    @property
    def inflight(self) -> int:
        return self.etcd_inflight + self.journal_inflight

    def _busy(self) -> int:
        """Commits in flight on the path a new commit would take now."""
        return self.journal_inflight if self.failover.fsm.must_journal else self.etcd_inflight

    def admits_new(self) -> bool:
        """May a new exchange start (a DISCOVER)? Not when every commit slot of its path is
        taken: its REQUEST could not be committed in time. A hung etcd's commits do not count
        against the journal's slots."""
        return self._busy() < self.max_inflight

    async def idle(self, within: float) -> None:
        """Wait (at most `within` seconds) until no commit is in flight."""
        if self.inflight:
            self._idle.clear()
            try:
                async with asyncio.timeout(within):
                    await self._idle.wait()
            except TimeoutError:
                pass

    # -- the decision --------------------------------------------------------------------
    def settle(self, decision: Decision, txn: Transaction) -> None:
        if isinstance(decision, Drop):
            self.metrics.drop(decision.reason)
            txn.end("drop", decision.reason)
        elif isinstance(decision, Reply):
            if decision.outcome == "offer" and decision.scope is not None:
                self.counters.offer(decision.scope)
            self.send(decision.out)
            txn.end(decision.outcome)
        else:
            txn.set_scope(decision.write.scope)
            # REQUESTs (exchanges already started) may use twice the slots new ones may.
            if self._busy() >= 2 * self.max_inflight:
                self.metrics.drop("overload")
                txn.end("drop", "overload")
            elif self.failover.fsm.must_journal:
                self._to_journal(decision, txn)
            else:
                self._to_etcd(decision, txn)

    def _served_again(self, c: Commit, txn: Transaction, why: str) -> None:
        """`c` was decided for etcd and never reached it; etcd is not being written now: serve
        the request again under the journaling policy (leases capped and bounded)."""
        if not self.failover.fsm.must_journal:
            self.metrics.drop(why)
            txn.end("drop", why)
            return
        self.engine.policy = self.failover.policy()
        decision = self.engine.serve(c.request, c.ingress, self.clock())
        if isinstance(decision, Commit):
            self._to_journal(decision, txn)
        else:
            self.settle(decision, txn)

    def _succeeded(self, c: Commit, txn: Transaction, reason: str | None = None) -> None:
        if c.kind is CommitKind.ACK:
            self.counters.ack(c.write.scope)
        if c.on_success is not None:
            self.send(c.on_success)
        txn.end(c.outcome, reason)

    def _gone(self, path: str) -> None:
        if path == "etcd":
            self.etcd_inflight -= 1
        else:
            self.journal_inflight -= 1
        if not self.inflight:
            self._idle.set()

    # -- etcd ----------------------------------------------------------------------------
    def _to_etcd(self, c: Commit, txn: Transaction) -> None:
        self.etcd_inflight += 1
        started = self.metrics.commit_started()
        span = txn.start_commit()
        try:
            self.commits.submit(c.write, partial(self._etcd_done, c, txn, span, started))
        except RuntimeError:  # the queue stopped: the spoke is stopping
            self.metrics.commit_ended(started)
            txn.end_commit(span)
            self.metrics.drop("stopping")
            txn.end("drop", "stopping")
            self._gone("etcd")

    def _etcd_done(
        self, c: Commit, txn: Transaction, span: Span | None, started: float, result: Result
    ) -> None:
        """A commit's outcome, called by the commit queue once etcd answered (or could not)."""
        self.metrics.commit_ended(started)
        txn.end_commit(span, result if isinstance(result, BaseException) else None)
        try:
            if isinstance(result, Committed):
                self.engine.committed(c, result.version, self.clock())
                self._succeeded(c, txn)
            elif isinstance(result, Diverted):
                self._served_again(c, txn, "diverted")
            elif isinstance(result, asyncio.CancelledError):
                self.metrics.drop("stopping")
                txn.end("drop", "stopping")
            elif isinstance(result, EtcdNoSpace):
                self.failover.commit_failed(result)
                self._served_again(c, txn, "etcd-nospace")
            elif isinstance(result, EtcdUncertain):
                self._unknown(c, txn, result)
            elif isinstance(result, EtcdError):
                self.metrics.drop("etcd-error")
                log.warning(
                    "dhcp.commit_error",
                    extra={"ip": str(c.write.ip), "scope": c.write.scope, "error": repr(result)},
                )
                txn.end("drop", "etcd-error")
            elif isinstance(result, BaseException):
                log.error(
                    "dhcp.commit_internal_error",
                    extra={"ip": str(c.write.ip)},
                    exc_info=(type(result), result, result.__traceback__),
                )
                self.metrics.drop("internal-error")
                txn.end("error", "internal-error")
            else:
                log.info(
                    "dhcp.commit_conflict",
                    extra={
                        "ip": str(c.write.ip),
                        "scope": c.write.scope,
                        "fence": result.fence_lost,
                    },
                )
                self.settle(self.engine.commit_failed(c, self.clock(), result.current), txn)
        except Exception:
            log.exception("dhcp.commit_internal_error", extra={"ip": str(c.write.ip)})
            self.metrics.drop("internal-error")
            txn.end("error", "internal-error")
        finally:
            self._gone("etcd")

    def _unknown(self, c: Commit, txn: Transaction, error: EtcdError) -> None:
        """etcd may yet apply `c.write`: hold the address for its client, journal the write for
        RECOVER to settle, send nothing (the client asks again)."""
        w = c.write
        self.engine.table.hold_unknown(w.scope, w.ip, w.binding.client_key)
        self.failover.commit_unknown(w)
        self.failover.commit_failed(error)
        log.warning(
            "dhcp.commit_unknown",
            extra={"ip": str(w.ip), "scope": w.scope, "error": repr(error)},
        )
        self.metrics.drop("etcd-unknown")
        txn.end("drop", "etcd-unknown")

    def _journaling(self) -> None:
        """The spoke started journaling: what is still queued for etcd comes back."""
        n = self.commits.divert()
        if n:
            log.info("dhcp.commits_diverted", extra={"commits": n})

    # -- journal -------------------------------------------------------------------------
    def _to_journal(self, c: Commit, txn: Transaction) -> None:
        """While etcd is unreachable the fsync'd journal line is the commit (DESIGN.md)."""
        self.journal_inflight += 1
        started = self.metrics.commit_started()
        durable = self.failover.journal_submit(c.write, c.kind.value)
        durable.add_done_callback(partial(self._journal_done, c, txn, started))

    def _journal_done(
        self, c: Commit, txn: Transaction, started: float, durable: asyncio.Future[None]
    ) -> None:
        self.metrics.commit_ended(started)
        try:
            error = durable.exception() if not durable.cancelled() else asyncio.CancelledError()
            if error is not None:
                self.metrics.drop("journal-error")
                log.error("dhcp.journal_error", extra={"ip": str(c.write.ip), "error": repr(error)})
                txn.end("drop", "journal-error")
                return
            version = self.failover.journaled_version(c.write)
            self.engine.committed(c, version, self.clock(), journaled=True)
            self._succeeded(c, txn, "journaled")
        except Exception:
            log.exception("dhcp.commit_internal_error", extra={"ip": str(c.write.ip)})
            self.metrics.drop("internal-error")
            txn.end("error", "internal-error")
        finally:
            self._gone("journal")
