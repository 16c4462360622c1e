"""A spoke's failover state machine (DESIGN.md, "Failover states"): pure; no I/O, no clock reads.

Owns the states a spoke can be in, the transition table (data: state x observation kind ->
next state), the reason sentence of every transition, and what each state lets the spoke do:
`answers_at_all`, `must_journal`, `lease_cap` (MCLT while etcd may not know what we hand out)
and `may_allocate_new(now)` (stops `max_interrupted` seconds after the last successful
keep-alive, on the monotonic clock, so the hub may reassign a down spoke's blocks after
`session expiry + max_interrupted + MCLT` without racing us).

The runtime feeds observations (`EtcdOk`, `EtcdFailing`, `SessionLost`, `Ready`,
`JournalReplayed`, `Drained`, `Undrained`) and acts on the returned `Transition` (log, metric,
span event). `journal_horizon(now)` is how long (monotonic seconds from `now`) a lease that etcd
does not know about may still run: the bound of docs/cluster.md "Why no address is bound twice".
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from hubspoke.states import State

__all__ = [
    "TABLE",
    "Drained",
    "EtcdFailing",
    "EtcdOk",
    "Failover",
    "FailoverParams",
    "JournalReplayed",
    "Kind",
    "Observation",
    "Ready",
    "SessionLost",
    "State",
    "Transition",
    "Undrained",
    "classify",
]


INTERRUPTED = frozenset({State.COMMUNICATION_INTERRUPTED, State.RESOLUTION_INTERRUPTED})
JOURNALING = INTERRUPTED | {State.RECOVER}
ANSWERING = JOURNALING | {State.NORMAL}


# -- observations ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EtcdOk:
    """etcd answered. `last_keepalive`: monotonic time of the session's last successful
    keep-alive (an answer to a probe while the session is lost does not move it). `at`: when
    the request that was answered went out (default: `last_keepalive`). Evidence older than the
    last failure seen is no evidence: a keep-alive answered before a commit failed does not end
    the interruption that commit began."""

    last_keepalive: float
    at: float | None = None

    @property
    def evidence(self) -> float:
        return self.last_keepalive if self.at is None else self.at


@dataclass(frozen=True, slots=True)
class EtcdFailing:
    """etcd did not answer: `since_last_ok` seconds since the last successful keep-alive.

    `cause="keepalive"`: lost only past `interrupted_after`. Any other cause (a commit that
    timed out or found etcd unavailable, etcd's NOSPACE alarm) counts as lost at once.
    """

    since_last_ok: float
    cause: str = "keepalive"


@dataclass(frozen=True, slots=True)
class SessionLost:
    """etcd answers, but this spoke's session is gone (expired during an outage, revoked by the
    hub, lost with quorum): the cluster may already count the spoke as down. It must stop
    trusting its view, journal what it grants and register again with a new session."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Session, assignments and binding replica loaded; `journal_pending`: a journal left by
    an earlier run (or interruption) must be replayed first."""

    journal_pending: bool = False


@dataclass(frozen=True, slots=True)
class JournalReplayed:
    """Every journaled binding is in etcd (or conflicted), the journal is truncated and the
    spoke is registered again."""


@dataclass(frozen=True, slots=True)
class Drained:
    """The hub drains this spoke (`drain/<node>` present)."""


@dataclass(frozen=True, slots=True)
class Undrained:
    """The drain was lifted."""


Observation = EtcdOk | EtcdFailing | SessionLost | Ready | JournalReplayed | Drained | Undrained


class Kind(enum.Enum):
    """What an observation means for the table (after thresholds are applied)."""

    ETCD_OK = "etcd-ok"
    ETCD_BLIP = "etcd-blip"  # failing, but not yet for `interrupted_after`
    ETCD_LOST = "etcd-lost"
    SESSION_LOST = "session-lost"
    READY = "ready"
    READY_JOURNAL = "ready-journal"
    REPLAYED = "replayed"
    DRAINED = "drained"
    UNDRAINED = "undrained"


@dataclass(frozen=True, slots=True)
class FailoverParams:
    interrupted_after: float = 2.0
    max_interrupted: float = 30.0
    mclt: int = 60

    def __post_init__(self) -> None:
        if self.interrupted_after <= 0 or self.max_interrupted < 0 or self.mclt < 1:
            raise ValueError("interrupted_after > 0, max_interrupted >= 0, mclt >= 1")


def classify(obs: Observation, params: FailoverParams) -> Kind:
    """The table's column for `obs`."""
    if isinstance(obs, EtcdOk):
        return Kind.ETCD_OK
    if isinstance(obs, EtcdFailing):
        lost = obs.cause != "keepalive" or obs.since_last_ok > params.interrupted_after
        return Kind.ETCD_LOST if lost else Kind.ETCD_BLIP
    if isinstance(obs, SessionLost):
        return Kind.SESSION_LOST
    if isinstance(obs, Ready):
        return Kind.READY_JOURNAL if obs.journal_pending else Kind.READY
    if isinstance(obs, JournalReplayed):
        return Kind.REPLAYED
    if isinstance(obs, Drained):
        return Kind.DRAINED
    return Kind.UNDRAINED


# -- the table -------------------------------------------------------------------------------
S, K = State, Kind
TABLE: dict[tuple[State, Kind], State] = {
    (S.STARTUP, K.READY): S.NORMAL,
    (S.STARTUP, K.READY_JOURNAL): S.RECOVER,
    (S.STARTUP, K.DRAINED): S.MAINTENANCE,
    (S.NORMAL, K.ETCD_LOST): S.COMMUNICATION_INTERRUPTED,
    (S.NORMAL, K.SESSION_LOST): S.RECOVER,
    (S.NORMAL, K.DRAINED): S.MAINTENANCE,
    (S.COMMUNICATION_INTERRUPTED, K.ETCD_OK): S.RECOVER,
    (S.RECOVER, K.ETCD_LOST): S.RESOLUTION_INTERRUPTED,
    (S.RECOVER, K.REPLAYED): S.NORMAL,
    (S.RESOLUTION_INTERRUPTED, K.ETCD_OK): S.RECOVER,
    (S.MAINTENANCE, K.UNDRAINED): S.NORMAL,
    (S.MAINTENANCE, K.SESSION_LOST): S.RECOVER,
}
"""(state, kind) -> next state. Every pair not listed keeps the state: e.g. a drain cannot be
seen while etcd is away, and a drained spoke that loses etcd answers nothing anyway."""


@dataclass(frozen=True, slots=True)
class Transition:
    source: State
    target: State
    reason: str


def _reason(source: State, kind: Kind, obs: Observation, machine: Failover, now: float) -> str:
    if isinstance(obs, EtcdFailing):
        if obs.cause == "keepalive":
            return f"etcd keep-alive failing for {obs.since_last_ok:.1f} s"
        return f"etcd {obs.cause} failed ({obs.since_last_ok:.1f} s since the last keep-alive)"
    if kind is Kind.ETCD_OK:
        since = machine.interrupted_since
        gone = f" after {now - since:.1f} s" if since is not None else ""
        return f"etcd answering again{gone}"
    texts: dict[Kind, str] = {
        Kind.SESSION_LOST: "etcd answers but our session is gone: registering again",
        Kind.READY: "session, assignments and binding replica loaded",
        Kind.READY_JOURNAL: "a journal from an earlier run must be replayed",
        Kind.REPLAYED: "journal replayed into etcd; registered again",
        Kind.DRAINED: "drained by the hub",
        Kind.UNDRAINED: "drain lifted",
    }
    return texts.get(kind, str(kind.value))


class Failover:
    """The current state, the reason of its last transition and the serving policy."""

    def __init__(self, params: FailoverParams | None = None, *, now: float = 0.0) -> None:
        self.params = params or FailoverParams()
        self.state = State.STARTUP
        self.reason = "process start"
        self.last_ok = now
        self.interrupted_since: float | None = None
        self.entered_at = now
        self.failed_at = -math.inf  # the last time etcd was seen lost (monotonic)

    def observe(self, obs: Observation, now: float) -> Transition | None:
        """Apply one observation at monotonic `now`; the transition made, if any."""
        if isinstance(obs, EtcdOk):
            self.last_ok = max(self.last_ok, obs.last_keepalive)
            if obs.evidence <= self.failed_at:
                return None
        kind = classify(obs, self.params)
        if kind is Kind.ETCD_LOST:
            self.failed_at = now
        target = TABLE.get((self.state, kind))
        if target is None:
            return None
        t = Transition(self.state, target, _reason(self.state, kind, obs, self, now))
        if target in INTERRUPTED and self.interrupted_since is None:
            self.interrupted_since = now
        if target is State.NORMAL:
            self.interrupted_since = None
        self.state, self.reason, self.entered_at = target, t.reason, now
        return t

    # -- what the spoke may do -----------------------------------------------------------------
    @property
    def answers_at_all(self) -> bool:
        return self.state in ANSWERING

    @property
    def must_journal(self) -> bool:
        """Bindings go to the local journal (fsync'd before the reply), not to etcd."""
        return self.state in JOURNALING

    @property
    def lease_cap(self) -> int | None:
        """The longest lease we may hand out now (None: the scope's own limits)."""
        return self.params.mclt if self.state in JOURNALING else None

    def journal_horizon(self, now: float) -> float | None:
        """Seconds from monotonic `now` until which a lease etcd has not recorded may run (None:
        no bound, in NORMAL). The hub hands a down spoke's blocks on only after `session expiry
        + max_interrupted + MCLT`, and the session expired at least a TTL after `last_ok`, so
        any lease ending before `last_ok + max_interrupted + mclt` ends before anyone else can
        be given the address. Never negative."""
        if self.state not in JOURNALING:
            return None
        p = self.params
        return max(0.0, self.last_ok + p.max_interrupted + p.mclt - now)

    def may_allocate_new(self, now: float) -> bool:
        """May a new address be handed out at monotonic `now`?

        In NORMAL always; while journaling only within `max_interrupted` of the last
        successful keep-alive; never in STARTUP or MAINTENANCE.
        """
        if self.state is State.NORMAL:
            return True
        if self.state in JOURNALING:
            return now - self.last_ok < self.params.max_interrupted
        return False
