"""RECOVER: replaying the spoke's journal into etcd under the commit rule.

Owns turning journaled writes back into etcd commits: per address, the write compares the
revision the spoke knew before the interruption (`create_revision == 0` for a never-used
address) and, for a new allocation, the block fence; the binding written is the address's
last journaled one. A conflict keeps etcd's binding and puts every client the spoke had given
the address to into `conflicted` (scope, address, client key), which the engine consults to
NAK that client's next RENEWING, REBINDING or INIT-REBOOT request. Replay is resumable: a
pass that fails on etcd leaves what it committed recorded, and the next pass continues.

What a replay may find (docs/cluster.md, "Why no address is bound twice"):
- our value, or our client under a newer version (its own earlier attempt, an `unknown` commit
  that etcd did apply, another spoke that renewed it meanwhile): confirmed; when etcd holds the
  same client, the binding is written again over that version with the later of the two expiries,
  so etcd records every lease we acknowledged;
- another client: our journaled lease must have ended before that binding began (the hub gives a
  down spoke's blocks away only after every journaled lease ended), or the write was only an
  `unknown` one nobody was told of. Anything else is a broken argument: an error log line
  (`failover.duplicate_alarm`) and the `hubspoke_replay_duplicates_total` counter.
Addresses held for `unknown` commits are released once their replay settled them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from hubspoke.etcd.errors import EtcdTimeout
from hubspoke.model import Versioned
from hubspoke.values import encode_binding
from spoke.dhcp.decisions import BindingWrite
from spoke.failover.journal import JournalEntry
from spoke.leases.store import Committed, Conflict, LeaseStore
from spoke.leases.table import BindingTable

log = logging.getLogger("hubspoke.recover")

REPLAY_CONCURRENCY = 64  # journaled addresses committed at once (etcd batches them)

AddressKey = tuple[str, IPv4Address]
Conflicted = set[tuple[str, IPv4Address, bytes]]

__all__ = ["Conflicted", "ReplayReport", "Replayer", "collapse"]


@dataclass(slots=True)
class ReplayReport:
    """Totals over every pass so far."""

    clean: int = 0
    conflicts: int = 0
    duplicates: int = 0
    entries: int = 0
    conflicted_ips: list[AddressKey] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Pending:
    write: BindingWrite
    last_seq: int
    clients: frozenset[bytes]
    acked_until: float | None  # the latest end of a lease we acknowledged from the journal


def collapse(
    entries: Sequence[JournalEntry], known: dict[AddressKey, Versioned | None]
) -> list[_Pending]:
    """One write per address, in first-journaled order: the compare of its first entry (or
    the version this replay already committed, `known`), the fence of its first entry, the
    binding of its last."""
    by_key: dict[AddressKey, list[JournalEntry]] = {}
    for e in entries:
        by_key.setdefault((e.write.scope, e.write.ip), []).append(e)
    out = []
    for key, group in by_key.items():
        first, last = group[0].write, group[-1].write
        if key in known:
            expected, fence = known[key], None
            if expected is None:  # conflicted before: the etcd binding stays; try as new
                expected, fence = first.expected, first.fence
        else:
            expected, fence = first.expected, first.fence
        write = BindingWrite(key[0], key[1], last.binding, expected, fence)
        clients = frozenset(e.write.binding.client_key for e in group)
        acked = [e.write.binding.expires for e in group if e.kind == "ack"]
        out.append(_Pending(write, group[-1].seq, clients, max(acked) if acked else None))
    return out


MAX_SAME_CLIENT_RETRIES = 3


class Replayer:
    """Replays journal entries through `store.commit`; keeps `conflicted` for the engine."""

    def __init__(
        self,
        store: LeaseStore,
        table: BindingTable,
        conflicted: Conflicted,
        *,
        on_duplicate: Callable[[], None] | None = None,
    ) -> None:
        self.on_duplicate = on_duplicate
        self.store = store
        self.table = table
        self.conflicted = conflicted
        self.report = ReplayReport()
        self._done_seq = -1  # every entry up to this seq is replayed
        self._known: dict[AddressKey, Versioned | None] = {}
        self._key_seq: dict[AddressKey, int] = {}

    def reset(self) -> None:
        """The journal was truncated: sequence numbers start again."""
        self._done_seq = -1
        self._key_seq.clear()
        self._known.clear()

    @property
    def done_seq(self) -> int:
        return self._done_seq

    async def replay(self, entries: Sequence[JournalEntry]) -> int:
        """Commit every entry not yet replayed; returns how many addresses were written.

        Raises `EtcdError` when etcd fails mid-way; calling again continues where it stopped.
        """
        todo = [
            e
            for e in entries
            if e.seq > self._done_seq and e.seq > self._key_seq.get((e.write.scope, e.write.ip), -1)
        ]
        written = 0
        pending = collapse(todo, self._known)
        for at in range(0, len(pending), REPLAY_CONCURRENCY):
            chunk = pending[at : at + REPLAY_CONCURRENCY]
            # distinct addresses (collapsed): their commits may be in flight together
            results = await asyncio.gather(*(self._one(p) for p in chunk), return_exceptions=True)
            failure: BaseException | None = None
            for p, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    failure = failure or result
                    continue
                self._key_seq[(p.write.scope, p.write.ip)] = p.last_seq
                written += 1
            if failure is not None:
                raise failure
        if entries:
            self._done_seq = max(self._done_seq, entries[-1].seq)
        self.report.entries += len(todo)
        return written

    async def _one(self, p: _Pending) -> None:
        w = p.write
        key = (w.scope, w.ip)
        try:
            await self._settle(p, w, key)
        finally:
            if key in self._known:
                self.table.settle_unknown(w.scope, w.ip)

    async def _settle(self, p: _Pending, w: BindingWrite, key: AddressKey) -> None:
        for _ in range(MAX_SAME_CLIENT_RETRIES):
            outcome = await self.store.commit(w)
            if isinstance(outcome, Committed):
                self.table.apply(w.scope, w.ip, w.binding, outcome.version)
                self._known[key] = outcome.version
                self.report.clean += 1
                return
            current = outcome.current
            if current is not None and encode_binding(current[0]) == encode_binding(w.binding):
                # our own earlier attempt committed (an uncertain outcome): nothing lost
                self.table.apply(w.scope, w.ip, current[0], current[1])
                self._known[key] = current[1]
                self.report.clean += 1
                return
            if current is None or current[0].client_key != w.binding.client_key:
                break
            # Our client under another version: write ours over it, keeping the later end.
            binding = w.binding
            if current[0].expires > binding.expires:
                binding = replace(binding, expires=current[0].expires)
            w = BindingWrite(w.scope, w.ip, binding, current[1], None)
        else:
            raise EtcdTimeout(f"replay of {w.ip}: the binding kept changing under us")
        self._conflict(p, w, key, outcome)

    def _conflict(self, p: _Pending, w: BindingWrite, key: AddressKey, outcome: Conflict) -> None:
        current = outcome.current
        if current is None:
            self.table.apply(w.scope, w.ip, None, None)
        owner = current[0].client_key if current is not None else None
        losers = {c for c in p.clients if c != owner}
        for client in losers:
            self.conflicted.add((w.scope, w.ip, client))
        self._known[key] = current[1] if current is not None else None
        self.report.conflicts += 1
        self.report.conflicted_ips.append(key)
        based_on = w.expected.mod_revision if w.expected is not None else 0
        duplicate = (
            current is not None
            and current[1].mod_revision != based_on  # written since our grant's view
            and p.acked_until is not None
            and owner not in (None, w.binding.client_key)
            and current[0].start < p.acked_until
        )
        extra = {
            "scope": w.scope,
            "ip": str(w.ip),
            "fence_lost": outcome.fence_lost,
            "etcd_client": owner.hex() if owner is not None else None,
            "etcd_start": current[0].start if current is not None else None,
            "acked_until": p.acked_until,
            "nak_clients": sorted(c.hex() for c in losers),
        }
        if duplicate:
            self.report.duplicates += 1
            log.error("failover.duplicate_alarm", extra=extra)
            if self.on_duplicate is not None:
                self.on_duplicate()
        else:
            log.info("failover.replay_superseded", extra=extra)
