"""The takeover bounds the docs publish (docs/cluster.md, "Takeover bounds"), as data.

Owns one `Bound` per fault kind, in seconds, for the timings the lab runs (session TTL 3 s,
`failover.interrupted_after` 2 s, the hub planner every 0.5 s) and where the bound is published.
The system tests and `bench/chaos_hubspoke.py` assert measurements against `Bound.limit`: the
bound as published plus a stated margin for two shared cores. Pure; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

SESSION_TTL = 3  # hub and spokes in the lab (the shipped default)
INTERRUPTED_AFTER = 2.0  # the spoke's shipped failover.interrupted_after
PUBLISHED = "docs/cluster.md, Takeover bounds"


@dataclass(frozen=True)
class Bound:
    """New clients (the faulted side's, or everyone's) are served again within `seconds` of
    the fault (`since="fault"`) or of its end (`since="restore"`: then every spoke is NORMAL
    again within it too). Tests allow `margin` on top."""

    seconds: float
    what: str
    since: str = "fault"
    margin: float = 1.0
    published: str = PUBLISHED

    @property
    def limit(self) -> float:
        return self.seconds + self.margin

    def check(self, measured: float | None, context: str = "") -> None:
        """AssertionError (naming the bound) unless `measured` is within the limit."""
        if measured is None or measured > self.limit:
            shown = "never" if measured is None else f"{measured:.2f} s"
            raise AssertionError(
                f"{self.what}: {shown}; published {self.seconds:g} s ({self.published}) "
                f"+ {self.margin:g} s margin. {context}"
            )


CRASH = Bound(1.0, "a crashed spoke's clients served again (crash probe)", margin=0.5)
SILENT = Bound(SESSION_TTL + 1.0, "a silent spoke's clients served again (session TTL + 1 s)")
NO_PAUSE = Bound(1.0, "DHCP paused by a fault that moves nothing", margin=0.5)
HUB_LOSS = Bound(SESSION_TTL + 0.5, "a crashed hub replaced (its session expires)")
HUB_HANDOVER = Bound(0.0, "a stopped hub replaced (it resigns first)", margin=1.0)
HUB_RETURN = Bound(1.0, "a returning hub process leads again (candidates looked at 1/s)")
STANDBY = Bound(SESSION_TTL + 1.0, "one-to-one: the standby serves after the primary's crash")
MEMBER_LAB = Bound(1.0, "an etcd member killed, lab raft timings (one election)", margin=0.5)
ETCD_DOWN = Bound(
    INTERRUPTED_AFTER + 2.0, "etcd dead, hung or full: new clients served again", margin=0.5
)
MEMBER_SHIPPED = Bound(
    INTERRUPTED_AFTER + 2.0, "the etcd leader killed, etcd's own raft timings", margin=0.5
)
QUORUM = Bound(10.0, "quorum back: every spoke NORMAL, new clients served", "restore", 0.0)
