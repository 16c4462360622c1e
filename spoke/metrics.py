"""The spoke's Prometheus metrics, exposed at /metrics by
`hubspoke.observe.prometheus.MetricsServer`.

Owns every metric name and label. `Metrics` holds its own `CollectorRegistry` (never the
global one), so tests and several spokes in one process do not collide. Gauges that describe
the binding replica (`hubspoke_bindings`, `hubspoke_free_addresses`) are computed at scrape
time by functions the runtime supplies: no per-packet gauge updates. The HTTP server runs on
the event loop, so those functions run on the loop thread, never beside the code that mutates
what they read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from time import perf_counter
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hubspoke.observe.prometheus import exposition
from hubspoke.states import State
from spoke.dhcp.decisions import Decision, Drop, Reply

FAILOVER_STATES = tuple(s.metric_label for s in State)
log = logging.getLogger(__name__)

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

BindingCounts = Callable[[], Mapping[tuple[str, str], int]]  # (scope, state) -> bindings
FreeCounts = Callable[[], Mapping[str, int]]  # scope -> free addresses


class _ReplicaCollector(Collector):
    """Binding and free-address gauges, computed from the runtime's functions at scrape time."""

    def __init__(self) -> None:
        self.bindings: BindingCounts | None = None
        self.free: FreeCounts | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "hubspoke_bindings", "Bindings in this spoke's replica", labels=["scope", "state"]
            ),
            GaugeMetricFamily(
                "hubspoke_free_addresses",
                "Free addresses in blocks this spoke owns",
                labels=["scope"],
            ),
        ]

    def collect(self) -> Iterable[Metric]:
        bindings, free = self._families()
        try:
            for (scope, state), n in (self.bindings() if self.bindings else {}).items():
                bindings.add_metric([scope, state], n)
            for scope, n in (self.free() if self.free else {}).items():
                free.add_metric([scope], n)
        except Exception:  # our fault: log loudly, keep the rest of the scrape
            log.exception("metrics.collect_failed")
            return []
        return [bindings, free]


class Metrics:
    """Every metric a spoke exports; cheap per-packet methods (label children are cached)."""

    def __init__(self, states: Iterable[str] = FAILOVER_STATES) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.packets = Counter(
            "hubspoke_dhcp_packets", "DHCP packets", ["direction", "type"], registry=r
        )
        self.drops = Counter(
            "hubspoke_dhcp_drops", "Packets dropped, by reason", ["reason"], registry=r
        )
        self.commit_seconds = Histogram(
            "hubspoke_etcd_commit_seconds",
            "Time from sending a binding commit to etcd to its answer",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.commits_inflight = Gauge(
            "hubspoke_commits_inflight",
            "Binding commits sent to etcd and not yet answered",
            registry=r,
        )
        self.state = Gauge(
            "hubspoke_state", "Failover state: 1 for the current one", ["state"], registry=r
        )
        self.commits_unknown = Gauge(
            "hubspoke_commits_unknown",
            "Addresses held because a commit of theirs has an unknown outcome (etcd did not "
            "answer in time); settled by RECOVER",
            registry=r,
        )
        self.etcd_alarm = Gauge(
            "hubspoke_etcd_alarm",
            "1 while etcd reports this alarm to this spoke (nospace: writes refused, quota full)",
            ["alarm"],
            registry=r,
        )
        self.etcd_alarm.labels("nospace").set(0)
        self.replay_duplicates = Counter(
            "hubspoke_replay_duplicates",
            "Journal replays that found another client bound to an address while a lease we "
            "acknowledged for it ran: the no-duplicate argument was broken (alarm)",
            registry=r,
        )
        self.loop_lag = Gauge(
            "hubspoke_loop_lag_seconds",
            "Worst lag of the event loop over the last 10-20 s: how late a 50 ms timer fired "
            "(a stall delays replies and the etcd keep-alive alike)",
            registry=r,
        )
        self._replica = _ReplicaCollector()
        r.register(self._replica)
        self._in: dict[str, Counter] = {}
        self._out: dict[str, Counter] = {}
        self._drop: dict[str, Counter] = {}
        self._states: dict[str, Gauge] = {s: self.state.labels(s) for s in states}
        self._current: str | None = None
        for g in self._states.values():
            g.set(0)

    def set_loop_lag(self, recent: Callable[[], float]) -> None:
        """The loop-lag monitor's reading, taken at scrape time."""
        self.loop_lag.set_function(recent)

    def set_sources(self, bindings: BindingCounts | None, free: FreeCounts | None) -> None:
        """The functions read at scrape time; called on the event loop's thread."""
        self._replica.bindings = bindings
        self._replica.free = free

    def packet_in(self, msg_type: str) -> None:
        child = self._in.get(msg_type)
        if child is None:
            child = self._in[msg_type] = self.packets.labels("in", msg_type)
        child.inc()

    def packet_out(self, msg_type: str) -> None:
        child = self._out.get(msg_type)
        if child is None:
            child = self._out[msg_type] = self.packets.labels("out", msg_type)
        child.inc()

    def drop(self, reason: str) -> None:
        child = self._drop.get(reason)
        if child is None:
            child = self._drop[reason] = self.drops.labels(reason)
        child.inc()

    def commit_started(self) -> float:
        """One etcd commit leaves: count it in flight; returns its start for `commit_ended`."""
        self.commits_inflight.inc()
        return perf_counter()

    def commit_ended(self, started: float) -> None:
        self.commit_seconds.observe(perf_counter() - started)
        self.commits_inflight.dec()

    @contextmanager
    def commit(self) -> Iterator[None]:
        """Around one etcd commit: counts it in flight and observes its duration."""
        started = self.commit_started()
        try:
            yield
        finally:
            self.commit_ended(started)

    def set_unknown(self, n: int) -> None:
        self.commits_unknown.set(n)

    def set_alarm(self, alarm: str, on: bool) -> None:
        self.etcd_alarm.labels(alarm).set(1 if on else 0)

    def replay_duplicate(self) -> None:
        self.replay_duplicates.inc()

    def set_state(self, state: str) -> None:
        if state == self._current:
            return
        if self._current is not None:
            self._states[self._current].set(0)
        gauge = self._states.get(state)
        if gauge is None:
            gauge = self._states[state] = self.state.labels(state)
        gauge.set(1)
        self._current = state

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
        return exposition(self.registry, accept)


class ScopeCounters(Protocol):
    """Offers and ACKs per scope (the reporter's `Counters`)."""

    def offer(self, scope: str) -> None: ...

    def ack(self, scope: str) -> None: ...


class Tally:
    """What the request path reports (`spoke.exchange.Tally`): packets, drops by reason and
    commit timings to the metrics; offers and ACKs per scope to the utilization counters."""

    def __init__(self, metrics: Metrics, counters: ScopeCounters) -> None:
        self.metrics = metrics
        self.counters = counters
        self.packet_in = metrics.packet_in
        self.packet_out = metrics.packet_out
        self.commit_started = metrics.commit_started
        self.commit_ended = metrics.commit_ended

    def decided(self, decision: Decision) -> None:
        if isinstance(decision, Drop):
            self.metrics.drop(decision.reason)
        elif isinstance(decision, Reply) and decision.outcome == "offer" and decision.scope:
            self.counters.offer(decision.scope)

    def acked(self, scope: str) -> None:
        self.counters.ack(scope)
