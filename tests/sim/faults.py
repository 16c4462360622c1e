"""Owns the faults a simulation injects into etcd, as plain data, so a seed's schedule replays.

Pure; no I/O. A `ScheduledFault` says when (virtual seconds after `SimEtcd.schedule` is called)
and what; faults with a duration end by themselves. `random_schedule` draws one from a
`random.Random`, so the same seed gives the same schedule:

    schedule = random_schedule(random.Random(seed), ["spoke-a", "hub"], horizon=120.0)
    sim.schedule(schedule)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PartitionMode = Literal["refused", "blackhole"]


@dataclass(frozen=True, slots=True)
class Freeze:
    """etcd stopped (SIGSTOP) for `duration` seconds."""

    duration: float


@dataclass(frozen=True, slots=True)
class Partition:
    """Process `node` cut off etcd: connections refused, or packets silently dropped."""

    node: str
    mode: PartitionMode
    duration: float


@dataclass(frozen=True, slots=True)
class QuorumLoss:
    """No raft leader for `duration` seconds; `late_writes`: apply writes whose client gave up."""

    duration: float
    late_writes: bool = False


@dataclass(frozen=True, slots=True)
class NoSpace:
    """The NOSPACE alarm raised for `duration` seconds."""

    duration: float


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """A raft leader change (instant); `break_streams` also fails every open stream."""

    break_streams: bool = False

    @property
    def duration(self) -> float:
        return 0.0


@dataclass(frozen=True, slots=True)
class Compaction:
    """A compaction at the current revision (instant)."""

    @property
    def duration(self) -> float:
        return 0.0


Fault = Freeze | Partition | QuorumLoss | NoSpace | LeaderChange | Compaction
FaultKind = Literal["freeze", "refused", "blackhole", "quorum", "nospace", "leader", "compact"]
ALL_KINDS: tuple[FaultKind, ...] = (
    "freeze",
    "refused",
    "blackhole",
    "quorum",
    "nospace",
    "leader",
    "compact",
)


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    at: float
    fault: Fault


def random_schedule(
    rng: random.Random,
    nodes: Sequence[str],
    *,
    horizon: float,
    mean_gap: float = 10.0,
    max_duration: float = 8.0,
    kinds: Sequence[FaultKind] = ALL_KINDS,
) -> tuple[ScheduledFault, ...]:
    """Faults at exponential gaps (mean `mean_gap`) until `horizon`, each of a drawn kind."""
    faults: list[ScheduledFault] = []
    at = rng.expovariate(1.0 / mean_gap)
    while at < horizon:
        kind = rng.choice(list(kinds))
        duration = round(rng.uniform(0.05, max_duration), 3)
        fault: Fault
        if kind == "freeze":
            fault = Freeze(duration)
        elif kind in ("refused", "blackhole"):
            mode: PartitionMode = "refused" if kind == "refused" else "blackhole"
            fault = Partition(rng.choice(list(nodes)), mode, duration)
        elif kind == "quorum":
            fault = QuorumLoss(duration, late_writes=rng.random() < 0.5)
        elif kind == "nospace":
            fault = NoSpace(duration)
        elif kind == "leader":
            fault = LeaderChange(break_streams=rng.random() < 0.3)
        else:
            fault = Compaction()
        faults.append(ScheduledFault(round(at, 3), fault))
        at += rng.expovariate(1.0 / mean_gap)
    return tuple(faults)


__all__ = [
    "ALL_KINDS",
    "Compaction",
    "Fault",
    "FaultKind",
    "Freeze",
    "LeaderChange",
    "NoSpace",
    "Partition",
    "PartitionMode",
    "QuorumLoss",
    "ScheduledFault",
    "random_schedule",
]
