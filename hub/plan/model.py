"""The planner's inputs and outputs: spoke views, utilization, parameters, actions. Pure; no I/O.

`hub.plan.planner` re-exports everything here; import from there.

Each action is one etcd transaction the hub carries out, comparing the record's revision it
was decided on (`expected_revision`) and the hub's epoch; each carries a one-sentence `why`
that the hub logs and stores in the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hubspoke.assign import BlockRecord, BucketMap
from hubspoke.blocks import DEFAULT_BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class ScopeUtil:
    """One spoke's latest report for one scope.

    `capacity`: the addresses in the blocks the spoke counted `free` over when it reported
    (None when the report does not say; the planner then estimates it as `bound + free`).
    It lets the planner see a block granted after the report without waiting for the next one.
    """

    bound: int
    free: int
    offers_per_s: float = 0.0
    acks_per_s: float = 0.0
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class SpokeView:
    """What the hub knows of one spoke.

    `live`: its session (membership key) exists. `down_since`: wall-clock time the hub first
    saw it gone (None: live, or unknown; an unknown time never lets its blocks be reclaimed).
    `weight`: its share of the buckets (<= 0: none, unless every eligible spoke has <= 0).
    `util`: its latest report by scope name (empty when none or stale).
    """

    node: str
    live: bool
    down_since: float | None = None
    draining: bool = False
    weight: float = 1.0
    util: Mapping[str, ScopeUtil] = field(default_factory=dict)

    @property
    def is_eligible(self) -> bool:
        """May this spoke be given buckets and blocks?"""
        return self.live and not self.draining


@dataclass(frozen=True, slots=True)
class Current:
    """What etcd holds now: the bucket map and every block record with its mod_revision."""

    buckets: BucketMap = field(default_factory=BucketMap)
    blocks: Mapping[tuple[str, str], tuple[BlockRecord, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanParams:
    """Planner knobs.

    `down_hold`: how long after `SpokeView.down_since` (its session's end) a down spoke's blocks
    stay its own, in seconds: max-interrupted + MCLT, so they move at `session expiry +
    max-interrupted + MCLT`. `max_moves_per_cycle` bounds block actions (grants, hand-over
    requests, reclaims, removals) per cycle; `max_creates_per_cycle` bounds new reserve records.
    """

    down_hold: float
    reserve_fraction: float = 0.25
    low_watermark: int = 16
    max_moves_per_cycle: int = 8
    max_creates_per_cycle: int = 512
    block_size: int = DEFAULT_BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class CreateBlock:
    """Write a missing block record as reserve (`create_revision == 0`)."""

    scope: str
    block_id: str
    why: str


@dataclass(frozen=True, slots=True)
class SetBuckets:
    """Replace the bucket map."""

    new: BucketMap
    why: str


@dataclass(frozen=True, slots=True)
class GrantBlock:
    """Give a reserve block to a spoke."""

    scope: str
    block_id: str
    to: str
    expected_revision: int
    why: str


@dataclass(frozen=True, slots=True)
class RequestHandover:
    """Ask a live owner to give a block up to `to` (None: the reserve); the owner commits it."""

    scope: str
    block_id: str
    owner: str
    to: str | None
    expected_revision: int
    why: str


@dataclass(frozen=True, slots=True)
class ReclaimBlock:
    """Take a down spoke's block after the hold, for `to` (None: the reserve)."""

    scope: str
    block_id: str
    from_node: str
    to: str | None
    expected_revision: int
    why: str


@dataclass(frozen=True, slots=True)
class RemoveBlock:
    """Delete an unowned record that no longer matches any scope's blocks."""

    scope: str
    block_id: str
    expected_revision: int
    why: str


Action = CreateBlock | SetBuckets | GrantBlock | RequestHandover | ReclaimBlock | RemoveBlock
BlockAction = GrantBlock | RequestHandover | ReclaimBlock | RemoveBlock
