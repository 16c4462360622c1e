"""What a binding commit can come to, on either path, and the one shape both paths have.

A `Committer` takes a `BindingWrite` and calls `done` once, later, with an `Outcome`:

- `Durable`: the write is in etcd (`journaled=False`) or fsync'd in the local journal
  (`journaled=True`, while etcd cannot be written). The reply that depends on it may leave.
- `Conflict`: etcd's compare failed; `current` is what etcd holds for the address now.
- `Diverted`: taken back before it was sent, because the spoke started journaling.
- `Refused`: etcd refused the write outright (NOSPACE): not applied.
- `Unknown`: etcd may still apply it (deadline passed, connection broke): never a failure.
- `Failed`: nothing was written (`reason` says why: stopping, etcd-error, journal-error,
  internal-error).

`EtcdPath` is the etcd commit queue in that shape; `spoke.failover.journal.JournalPath` is the
journal's. The exchange (`spoke.exchange`) settles every outcome in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hubspoke.etcd.errors import EtcdError, EtcdNoSpace, EtcdUncertain
from hubspoke.model import Versioned
from spoke.dhcp.decisions import BindingWrite, CommitKind
from spoke.leases.batch import CommitQueue, Diverted, Result
from spoke.leases.store import Committed, Conflict

__all__ = [
    "Committer",
    "Conflict",
    "Diverted",
    "Done",
    "Durable",
    "EtcdPath",
    "Failed",
    "Outcome",
    "Refused",
    "Unknown",
]


@dataclass(frozen=True, slots=True)
class Durable:
    version: Versioned
    journaled: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    error: EtcdError


@dataclass(frozen=True, slots=True)
class Unknown:
    error: EtcdError


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    error: BaseException | None = None


Outcome = Durable | Conflict | Diverted | Refused | Unknown | Failed
Done = Callable[[Outcome], None]


class Committer(Protocol):
    """One commit path. `path` names it in metrics and logs ("etcd", "journal")."""

    path: str

    def submit(self, write: BindingWrite, kind: CommitKind, done: Done) -> None:
        """Start committing `write`; `done` is called once with its outcome, never from
        inside `submit`."""
        ...


def from_etcd(result: Result) -> Outcome:
    """The commit queue's result (an outcome or the exception it met) as an `Outcome`."""
    if isinstance(result, Committed):
        return Durable(result.version)
    if isinstance(result, Conflict | Diverted):
        return result
    if isinstance(result, asyncio.CancelledError):
        return Failed("stopping")
    if isinstance(result, EtcdNoSpace):
        return Refused(result)
    if isinstance(result, EtcdUncertain):
        return Unknown(result)
    if isinstance(result, EtcdError):
        return Failed("etcd-error", result)
    return Failed("internal-error", result)


class EtcdPath:
    """The etcd commit queue as a `Committer`."""

    path = "etcd"

    def __init__(self, queue: CommitQueue) -> None:
        self.queue = queue

    def submit(self, write: BindingWrite, kind: CommitKind, done: Done) -> None:
        try:
            self.queue.submit(write, lambda result: done(from_etcd(result)))
        except RuntimeError:  # the queue stopped: the spoke is stopping
            asyncio.get_running_loop().call_soon(done, Failed("stopping"))
