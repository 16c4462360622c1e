"""The spoke's Prometheus metrics and the asyncio HTTP server that exposes them at /metrics.

Owns every metric name and label. `Metrics` holds its own `CollectorRegistry` (never the
global one), so tests and several spokes in one process do not collide. Gauges that describe
the binding replica (`hubspoke_bindings`, `hubspoke_free_addresses`) are computed at scrape
time by functions the runtime supplies: no per-packet gauge updates. The HTTP server runs on
the event loop, so those functions run on the loop thread, never beside the code that mutates
what they read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from time import perf_counter
from types import TracebackType
from typing import Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
FAILOVER_STATES = (
    "startup",
    "normal",
    "communication-interrupted",
    "recover",
    "resolution-interrupted",
    "partner-down",
    "maintenance",
)

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
        self._replica = _ReplicaCollector()
        r.register(self._replica)
        self._in: dict[str, Counter] = {}
        self._out: dict[str, Counter] = {}
        self._drop: dict[str, Counter] = {}
        self._states: dict[str, Gauge] = {s: self.state.labels(s) for s in states}
        self._current: str | None = None
        for g in self._states.values():
            g.set(0)

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

    @contextmanager
    def commit(self) -> Iterator[None]:
        """Around one etcd commit: counts it in flight and observes its duration."""
        self.commits_inflight.inc()
        start = perf_counter()
        try:
            yield
        finally:
            self.commit_seconds.observe(perf_counter() - start)
            self.commits_inflight.dec()

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
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MetricsServer:
    """A small HTTP/1.1 server on the event loop: `GET /metrics`, one request per connection."""

    READ_TIMEOUT = 5.0
    MAX_HEADER = 16384

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("metrics server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=self.MAX_HEADER
        )
        log.info("metrics.listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, ctype = self._answer(head)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # the scraper's fault or gone: nothing to answer
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return "404 Not Found", b"not found; try /metrics\n", "text/plain"
        if method != "GET":
            return "405 Method Not Allowed", b"GET only\n", "text/plain"
        accept = next(
            (
                v.strip()
                for k, _, v in (h.partition(":") for h in lines[1:])
                if k.lower() == "accept"
            ),
            None,
        )
        body, ctype = self._metrics.exposition(accept)
        return "200 OK", body, ctype
