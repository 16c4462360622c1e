"""The hub's Prometheus metrics (`hubspoke_hub_*`), exposed by
`hubspoke.observe.prometheus.MetricsServer`.

Owns every hub metric name and label. `HubMetrics` holds its own `CollectorRegistry`, and is
handed to `HubCampaign` (and by it to each term's `HubRole`) rather than reached as a global:
a hub role inside a hub-eligible spoke runs without one, and several hubs in one process (tests)
do not collide.

- `hubspoke_hub_leader`, `hubspoke_hub_epoch`: set on election, back to 0 on stepping down, so
  a standby hub scrapes as leader 0.
- `hubspoke_hub_elections_total`, `hubspoke_hub_reports_total`,
  `hubspoke_hub_moves_total{kind}`: counted where they happen; `kind` is the planner's action
  (`SetBuckets`, `CreateBlock`, `GrantBlock`, `RequestHandover`, `ReclaimBlock`,
  `RemoveBlock`, as in the `hub.move` log line), counted once its transaction committed.
- `hubspoke_hub_spokes{state}`, `hubspoke_hub_buckets{node}`, `hubspoke_hub_buckets_unassigned`:
  computed at scrape time from the management API's cluster state while this process leads
  (no samples on a standby). The server runs on the event loop, so that read never races the
  role's mirrors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.api.model import ClusterState
from hub.plan.model import Action
from hubspoke.observe.prometheus import exposition
from hubspoke.states import State

log = logging.getLogger(__name__)

# Failover states as metric labels (lower case): the spoke's `hubspoke_state{state}` and the
# hub's `hubspoke_hub_spokes{state}` use the same values.
FAILOVER_STATES = tuple(s.metric_label for s in State)
# The planner's action kinds, as `hub.role` logs them (`action=<class name>`).
MOVE_KINDS: tuple[str, ...] = tuple(t.__name__ for t in get_args(Action))

ClusterSource = Callable[[], ClusterState]


def state_label(state: str) -> str:
    """A failover state as the API names it (`PARTNER-DOWN`) as a metric label value."""
    return state.lower()


def cluster_families(state: ClusterState | None) -> list[GaugeMetricFamily]:
    """The scrape-time gauges from one cluster state; None (not leading): no samples.

    Every known failover state gets a sample (0 when no spoke is in it), plus any other state
    a spoke reported; every spoke the state lists gets its bucket count, 0 included.
    """
    spokes = GaugeMetricFamily(
        "hubspoke_hub_spokes", "Spokes by failover state, as the hub sees them", labels=["state"]
    )
    buckets = GaugeMetricFamily(
        "hubspoke_hub_buckets", "Hash buckets per spoke in the current bucket map", labels=["node"]
    )
    unassigned = GaugeMetricFamily(
        "hubspoke_hub_buckets_unassigned", "Hash buckets no spoke answers in the bucket map"
    )
    if state is not None:
        counts = dict.fromkeys(FAILOVER_STATES, 0)
        for spoke in state.spokes:
            label = state_label(spoke.state)
            counts[label] = counts.get(label, 0) + 1
        for label, n in counts.items():
            spokes.add_metric([label], n)
        for spoke in state.spokes:
            buckets.add_metric([spoke.node], spoke.bucket_count)
        unassigned.add_metric([], state.buckets_unassigned)
    return [spokes, buckets, unassigned]


class _ClusterCollector(Collector):
    """`cluster_families` over the leading role's cluster state, read at scrape time."""

    def __init__(self) -> None:
        self.source: ClusterSource | None = None

    def describe(self) -> Iterable[Metric]:
        return cluster_families(None)

    def collect(self) -> Iterable[Metric]:
        try:
            state = self.source() if self.source is not None else None
        except Exception:  # our fault: log loudly, keep the rest of the scrape
            log.exception("metrics.collect_failed")
            return []
        return cluster_families(state)


class HubMetrics:
    """Every metric a hub process exports; one object for the life of the process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.leader = Gauge(
            "hubspoke_hub_leader", "1 while this process holds the hub role, else 0", registry=r
        )
        self.epoch = Gauge(
            "hubspoke_hub_epoch",
            "The hub's epoch (its election key's create revision) while it leads, else 0",
            registry=r,
        )
        self.elections = Counter(
            "hubspoke_hub_elections", "Times this process was elected hub", registry=r
        )
        self.reports = Counter(
            "hubspoke_hub_reports", "Utilization reports received from spokes", registry=r
        )
        self.moves = Counter(
            "hubspoke_hub_moves",
            "Assignment changes the planner committed, by action kind",
            ["kind"],
            registry=r,
        )
        self._cluster = _ClusterCollector()
        r.register(self._cluster)
        self._moves: dict[str, Counter] = {k: self.moves.labels(k) for k in MOVE_KINDS}

    def elected(self, epoch: int) -> None:
        """This process won the election with `epoch`."""
        self.elections.inc()
        self.leader.set(1)
        self.epoch.set(epoch)

    def serving(self, cluster: ClusterSource) -> None:
        """The role has loaded its mirrors: scrapes read the cluster state from `cluster`."""
        self._cluster.source = cluster

    def stepped_down(self) -> None:
        """This process no longer holds the hub role."""
        self._cluster.source = None
        self.leader.set(0)
        self.epoch.set(0)

    def moved(self, kind: str) -> None:
        """The planner committed one action of `kind`."""
        child = self._moves.get(kind)
        if child is None:
            child = self._moves[kind] = self.moves.labels(kind)
        child.inc()

    def report(self) -> None:
        """One utilization report arrived."""
        self.reports.inc()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
        return exposition(self.registry, accept)
