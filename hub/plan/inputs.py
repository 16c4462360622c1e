"""The planner's inputs as the hub role gathers them: what etcd holds (`Snapshot`) and how fit
each spoke is from its latest report (`health`). Pure; no I/O.

The role (`hub.role`) fills a `Snapshot` from its mirrors each cycle and keeps the per-spoke
records (membership, last report, when it went down); these functions turn them into the
planner's `SpokeView`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hub.api.model import UtilizationReport
from hub.plan.model import ScopeUtil
from hubspoke.assign import BlockRecord, BucketMap
from hubspoke.model import Scope
from hubspoke.states import NOT_SERVING_NORMALLY

LOAD_STEPS = ((0.7, 1.0), (0.9, 0.5))  # (cpu below, factor); busier still: 0.25
UNFIT_STATES = frozenset(s.value for s in NOT_SERVING_NORMALLY)


@dataclass
class Snapshot:
    """What etcd holds for the planner: scopes, the bucket map (and its revision), every block
    record (and its revision), the drained nodes."""

    scopes: dict[str, Scope] = field(default_factory=dict)
    buckets: BucketMap = field(default_factory=BucketMap)
    buckets_revision: int = 0
    blocks: dict[tuple[str, str], tuple[BlockRecord, int]] = field(default_factory=dict)
    drains: set[str] = field(default_factory=set)


def load_factor(cpu: float) -> float:
    """A spoke's share of new clients by its measured load (`cpu`: share of one core), so
    ordinary jitter does not move buckets: a saturated spoke sheds new clients to the others."""
    for below, factor in LOAD_STEPS:
        if cpu < below:
            return factor
    return 0.25


def health(report: UtilizationReport | None) -> float:
    """How fit a live spoke is to take new clients, from its latest report: 0 while it says
    it cannot reach etcd (COMMUNICATION-INTERRUPTED, RECOVER, RESOLUTION-INTERRUPTED) or is
    in MAINTENANCE, else its load factor (1 below 70% of a core, less when busier). Bucket
    shares follow `weight x health` (all zero: equal shares). No report yet: 1 (judged by
    membership alone). A late report alone changes nothing: buckets would churn with every
    slow second, and a spoke that is really gone loses its session."""
    if report is None:
        return 1.0
    if report.state in UNFIT_STATES:
        return 0.0
    return load_factor(report.cpu)


def utilization(report: UtilizationReport | None) -> dict[str, ScopeUtil]:
    """The planner's per-scope utilization from a spoke's latest report."""
    if report is None:
        return {}
    return {
        su.scope: ScopeUtil(
            bound=su.bound,
            free=su.free,
            offers_per_s=su.offers_per_s,
            acks_per_s=su.acks_per_s,
            capacity=su.capacity or None,
        )
        for su in report.scopes
    }


def block_owners(snap: Snapshot) -> Mapping[str, list[str]]:
    """Each owner's blocks (`scope/block-id`), sorted."""
    out: dict[str, list[str]] = {}
    for (scope, block_id), (rec, _) in sorted(snap.blocks.items()):
        if rec.owner is not None:
            out.setdefault(rec.owner, []).append(f"{scope}/{block_id}")
    return out
