"""Owns the wire between client processes and the simulated etcd: channels, calls, links.

`SimTransport` is the real `hubspoke.etcd.transport.Transport` with one change: its channels are
`SimChannel`s, so the real retry, endpoint rotation and error translation run unchanged. A call
carries serialized protobuf both ways; each message takes a seeded latency, and the messages of
one call arrive in the order they were sent. Errors are real `grpc.aio.AioRpcError`s.

Each client process (a node name) reaches etcd over one `Link`:
- OK: messages flow.
- REFUSED: every open call fails UNAVAILABLE at once (connection reset), new calls fail
  UNAVAILABLE after one latency; messages in transit are lost (a request that already reached
  etcd stays applied).
- BLACKHOLE: messages in transit and new ones are held, and delivered in order when the link
  heals; a unary call fails DEADLINE_EXCEEDED at its deadline (its request may still be applied
  after the heal: an outcome the client cannot know).
While etcd cannot answer a link (blackholed, or etcd frozen), the connection dies every keepalive
time + timeout of the client's channel (gRPC's keepalive watchdog; 15 s by default): every call
open on it fails UNAVAILABLE "keepalive watchdog timeout" and what the link still held is lost
(what already reached a frozen etcd stays queued there). etcd learns that those calls are gone
(a waiting campaign resigns, a watch ends) once it can answer the link again.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import random
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]

from hubspoke.etcd.errors import EtcdClosed
from hubspoke.etcd.transport import EtcdConfig, Transport

Deliver = Callable[[], None]
Codec = Callable[[Any], Any]

REFUSED = "failed to connect to all addresses; last error: UNAVAILABLE: sim: Connection refused"
RESET = "Socket closed"
KEEPALIVE = "keepalive watchdog timeout"
DEADLINE = "Deadline Exceeded"


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A real gRPC error, as a channel raises it."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=details
    )


class LinkMode(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    BLACKHOLE = "blackhole"


class Server(Protocol):
    """What the wire needs from etcd (`tests.sim.etcd.SimEtcd`)."""

    @property
    def frozen(self) -> bool: ...

    def arrive(self, fn: Deliver) -> None:
        """A message reached the etcd process: handle it now, or when it thaws."""

    def serve_unary(self, call: UnaryCall, data: bytes) -> None: ...

    def cancel_unary(self, call: UnaryCall) -> None: ...

    def open_stream(self, call: StreamCall, first: bytes | None) -> ServerStream: ...


class ServerStream(Protocol):
    """etcd's side of one streaming call."""

    def on_message(self, data: bytes) -> None: ...

    def close(self) -> None:
        """The client went away (cancelled, or its connection died)."""


class Pipe:
    """One direction of one call: each message arrives after its latency, in the order sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[tuple[float, Deliver, Link | None, int]] = deque()
        self._last = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._pumping = False

    def send(self, fn: Deliver, delay: float, link: Link | None = None) -> None:
        """`link`: deliver through it (`Network.gate`) as it is on arrival."""
        at = max(self._loop.time() + delay, self._last)
        self._last = at
        self._queue.append((at, fn, link, 0 if link is None else link.resets))
        if self._handle is None and not self._pumping:
            self._handle = self._loop.call_at(at, self._pump)

    def _pump(self) -> None:
        """Deliver what is due in this loop turn. The loop runs a timer due within its turn
        (`_clock_resolution`) of now in this iteration: so do the messages, else a pump run
        early would find nothing due, re-arm itself and be run again in every iteration until
        the clock moves (a busy spin that cost most of a seed's time)."""
        self._handle = None
        self._pumping = True
        try:
            due = self._loop.time() + self._loop._clock_resolution  # type: ignore[attr-defined]
            queue = self._queue
            while queue and queue[0][0] < due:
                _, fn, link, resets = queue.popleft()
                if link is None:
                    fn()
                else:
                    gate(link, resets, fn)
        finally:
            self._pumping = False
        if self._queue and self._handle is None:
            self._handle = self._loop.call_at(self._queue[0][0], self._pump)


def gate(link: Link, resets: int, fn: Deliver) -> None:
    """A message sent over `link` when it had seen `resets` resets arrives: lost if the
    connection was reset since, held while the link is a blackhole, else delivered."""
    if link.resets != resets:
        return  # the connection it travelled on was reset
    mode = link.mode
    if mode is LinkMode.OK:
        fn()
    elif mode is LinkMode.BLACKHOLE:
        link.held.append(fn)


class Link:
    """One client process's connection to etcd, shared by all its channels."""

    def __init__(self, node: str, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.mode = LinkMode.OK
        self.calls: dict[int, Call] = {}
        self.held: list[Deliver] = []  # deliveries a blackhole holds, in order
        self.replay = Pipe(loop)
        self.resets = 0  # connection resets so far: what was in transit before one is lost
        self.unresponsive = False  # etcd cannot answer: blackholed or frozen
        self.generation = 0  # counts changes of `unresponsive`
        self.since = 0.0  # when `unresponsive` last changed
        self.orphans: list[Deliver] = []  # what etcd learns once it answers this link again
        self.keepalive_detect = 15.0  # gRPC keepalive time + timeout of its channels


class Network:
    """Every link, the latency draws and the keepalive watchdog."""

    def __init__(
        self,
        server: Server,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        latency: tuple[float, float],
    ) -> None:
        self.server = server
        self.loop = loop
        self.rng = rng
        self.latency = latency
        self.links: dict[str, Link] = {}
        self._ids = itertools.count(1)

    def link(self, node: str) -> Link:
        link = self.links.get(node)
        if link is None:
            link = self.links[node] = Link(node, self.loop)
        return link

    def delay(self) -> float:
        lo, hi = self.latency
        return lo if hi <= lo else self.rng.uniform(lo, hi)

    def next_id(self) -> int:
        return next(self._ids)

    # -- delivery --------------------------------------------------------------------------

    def _gated(self, link: Link, fn: Deliver) -> Deliver:
        resets = link.resets
        return lambda: gate(link, resets, fn)

    def to_server(self, call: Call, fn: Deliver) -> None:
        """Send a message of `call` to etcd (it runs `fn` there on arrival)."""
        link = call.link
        mode = link.mode
        if mode is LinkMode.REFUSED:
            return
        arrive = functools.partial(self.server.arrive, fn)
        if mode is LinkMode.BLACKHOLE:
            link.held.append(self._gated(link, arrive))
        else:
            call.up.send(arrive, self.delay(), link)

    def to_client(self, call: Call, fn: Deliver) -> None:
        """Send etcd's message to the client of `call` (`fn` runs at the client)."""
        link = call.link
        mode = link.mode
        if mode is LinkMode.REFUSED:
            return
        if mode is LinkMode.BLACKHOLE:
            link.held.append(self._gated(link, fn))
        else:
            call.down.send(fn, self.delay(), link)

    def refuse(self, call: Call) -> None:
        """The connection attempt of `call` fails, one latency from now."""
        call.down.send(lambda: call.fail(grpc.StatusCode.UNAVAILABLE, REFUSED), self.delay())

    # -- calls -----------------------------------------------------------------------------

    def opened(self, call: Call) -> None:
        call.link.calls[call.id] = call

    def closed(self, call: Call) -> None:
        call.link.calls.pop(call.id, None)

    def _arm_watchdog(self, link: Link) -> None:
        """While etcd cannot answer, the connection dies every keepalive time + timeout."""
        generation = link.generation

        def fire() -> None:
            if link.generation != generation or not link.unresponsive:
                return
            link.resets += 1
            link.held.clear()
            for call in list(link.calls.values()):
                if not call.done:
                    call.fail(grpc.StatusCode.UNAVAILABLE, KEEPALIVE)
                    link.orphans.append(self._goodbye(call))
            self.loop.call_later(link.keepalive_detect, fire)

        self.loop.call_later(link.keepalive_detect, fire)

    def _goodbye(self, call: Call) -> Deliver:
        """What etcd does when it learns the client of `call` is gone."""
        stream = call.server_stream
        if stream is not None:
            return stream.close
        if isinstance(call, UnaryCall):
            return lambda: self.server.cancel_unary(call)
        return lambda: None

    # -- link state ------------------------------------------------------------------------

    def set_mode(self, node: str, mode: LinkMode) -> None:
        link = self.link(node)
        if link.mode is mode:
            return
        link.mode = mode
        if mode is LinkMode.REFUSED:
            link.held.clear()
            link.resets += 1
            for call in list(link.calls.values()):
                call.fail(grpc.StatusCode.UNAVAILABLE, RESET)
                self.server.arrive(self._goodbye(call))
        elif mode is LinkMode.OK:
            held, link.held = link.held, []
            for fn in held:
                link.replay.send(fn, self.delay())
        self.refresh(link)

    def refresh(self, link: Link) -> None:
        """Re-evaluate whether etcd can answer this link (after a link change or a freeze)."""
        unresponsive = link.mode is LinkMode.BLACKHOLE or self.server.frozen
        if unresponsive == link.unresponsive:
            return
        link.unresponsive = unresponsive
        link.generation += 1
        link.since = self.loop.time()
        if unresponsive:
            self._arm_watchdog(link)
        else:
            orphans, link.orphans = link.orphans, []
            for goodbye in orphans:
                self.server.arrive(goodbye)

    def refresh_all(self) -> None:
        for link in list(self.links.values()):
            self.refresh(link)


class Call:
    """One call as its client sees it; `fail` ends it with a status."""

    def __init__(self, channel: SimChannel, path: str) -> None:
        net = channel.net
        self.net = net
        self.link = channel.link
        self.channel = channel
        self.path = path
        self.id = net.next_id()
        self.opened_at = net.loop.time()
        self.up = Pipe(net.loop)
        self.down = Pipe(net.loop)
        self.status: tuple[grpc.StatusCode, str] | None = None
        self.locally_cancelled = False
        self.server_stream: ServerStream | None = None

    @property
    def done(self) -> bool:
        return self.status is not None

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        raise NotImplementedError


class UnaryCall(Call):
    """A unary call: awaiting it sends the request and waits for the answer or the deadline."""

    def __init__(
        self,
        channel: SimChannel,
        path: str,
        data: bytes,
        parse: Codec,
        timeout: float | None,
    ) -> None:
        super().__init__(channel, path)
        self.data = data
        self.parse = parse
        self.deadline = None if timeout is None else self.opened_at + timeout
        self.answer: asyncio.Future[bytes] = self.net.loop.create_future()
        self.abandoned = False  # the client no longer waits for the answer

    def __await__(self) -> Any:
        return self._run().__await__()

    async def _run(self) -> Any:
        net = self.net
        net.opened(self)
        self.channel.calls[self.id] = self
        if self.link.mode is LinkMode.REFUSED:
            net.refuse(self)
        else:
            net.to_server(self, lambda: net.server.serve_unary(self, self.data))
        try:
            async with asyncio.timeout_at(self.deadline):
                data = await self.answer
        except TimeoutError:
            self.status = (grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE)
            net.to_server(self, lambda: net.server.cancel_unary(self))
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE) from None
        except asyncio.CancelledError:
            self.locally_cancelled = True
            self.status = self.status or (grpc.StatusCode.CANCELLED, "Locally cancelled")
            net.to_server(self, lambda: net.server.cancel_unary(self))
            raise
        finally:
            self.abandoned = True
            net.closed(self)
            self.channel.calls.pop(self.id, None)
        return self.parse(data)

    def resolve(self, data: bytes) -> None:
        if not self.answer.done():
            self.status = (grpc.StatusCode.OK, "")
            self.answer.set_result(data)

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        if self.answer.done():
            return
        self.status = (code, details)
        if code == grpc.StatusCode.CANCELLED:
            self.answer.set_exception(asyncio.CancelledError())
        else:
            self.answer.set_exception(rpc_error(code, details))

    def cancel(self) -> bool:
        if self.answer.done():
            return False
        self.fail(grpc.StatusCode.CANCELLED, "Locally cancelled")
        return True


class StreamCall(Call):
    """A streaming call (`grpc.aio.StreamStreamCall` or `UnaryStreamCall`): write, read, cancel."""

    def __init__(
        self, channel: SimChannel, path: str, serialize: Codec, parse: Codec, first: Any = None
    ) -> None:
        super().__init__(channel, path)
        self.serialize = serialize
        self.parse = parse
        self.inbox: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        net = self.net
        net.opened(self)
        channel.calls[self.id] = self
        data = None if first is None else serialize(first)
        if self.link.mode is LinkMode.REFUSED:
            net.refuse(self)
        else:
            net.to_server(self, lambda: self._open(data))

    def _open(self, first: bytes | None) -> None:
        if self.done:
            return
        self.server_stream = self.net.server.open_stream(self, first)

    # -- client API ------------------------------------------------------------------------

    async def write(self, message: Any) -> None:
        if self.done:
            raise asyncio.InvalidStateError("RPC already finished.")
        data = self.serialize(message)
        self.net.to_server(self, lambda: self._on_server(data))

    def _on_server(self, data: bytes) -> None:
        if self.server_stream is not None:
            self.server_stream.on_message(data)

    async def done_writing(self) -> None:
        pass

    async def read(self) -> Any:
        while True:
            if self.done:
                self._raise_for_status()
                return grpc.aio.EOF
            if self.inbox:
                return self.parse(self.inbox.popleft())
            self._waiter = self.net.loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                self._waiter = None

    def _raise_for_status(self) -> None:
        assert self.status is not None
        if self.locally_cancelled:
            raise asyncio.CancelledError()
        code, details = self.status
        if code != grpc.StatusCode.OK:
            raise rpc_error(code, details)

    def cancel(self) -> bool:
        if self.done:
            return False
        self.locally_cancelled = True
        self._finish(grpc.StatusCode.CANCELLED, "Locally cancelled")
        stream = self.server_stream
        if stream is not None:
            self.net.to_server(self, stream.close)
        return True

    def cancelled(self) -> bool:
        return self.locally_cancelled

    # -- etcd's side -----------------------------------------------------------------------

    def push(self, data: bytes) -> None:
        """A message from etcd arrives."""
        if self.done:
            return
        self.inbox.append(data)
        self._wake()

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        if not self.done:
            self.inbox.clear()
            self._finish(code, details)

    def end(self, code: grpc.StatusCode, details: str) -> None:
        """etcd ends the call (after the messages it sent before)."""
        if not self.done:
            self._finish(code, details)

    def _finish(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        self.net.closed(self)
        self.channel.calls.pop(self.id, None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Unary:
    def __init__(self, channel: SimChannel, path: str, parse: Codec, serialize: Codec) -> None:
        self.channel, self.path, self.parse, self.serialize = channel, path, parse, serialize

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None
    ) -> UnaryCall:
        return UnaryCall(self.channel, self.path, self.serialize(request), self.parse, timeout)


class _StreamStream:
    def __init__(self, channel: SimChannel, path: str, parse: Codec, serialize: Codec) -> None:
        self.channel, self.path, self.parse, self.serialize = channel, path, parse, serialize

    def __call__(self, *, metadata: Any = None) -> StreamCall:
        return StreamCall(self.channel, self.path, self.serialize, self.parse)


class _UnaryStream:
    def __init__(self, channel: SimChannel, path: str, parse: Codec, serialize: Codec) -> None:
        self.channel, self.path, self.parse, self.serialize = channel, path, parse, serialize

    def __call__(self, request: Any, *, metadata: Any = None) -> StreamCall:
        return StreamCall(self.channel, self.path, self.serialize, self.parse, first=request)


class SimChannel:
    """Stands in for `grpc.aio.Channel`: the multicallables the real `Transport` asks for."""

    def __init__(self, net: Network, link: Link, config: EtcdConfig) -> None:
        self.net = net
        self.link = link
        detect = (config.keepalive_time_ms + config.keepalive_timeout_ms) / 1000
        link.keepalive_detect = detect
        self.calls: dict[int, UnaryCall | StreamCall] = {}

    def unary_unary(
        self, path: str, request_serializer: Codec, response_deserializer: Codec
    ) -> _Unary:
        return _Unary(self, path, response_deserializer, request_serializer)

    def stream_stream(
        self, path: str, request_serializer: Codec, response_deserializer: Codec
    ) -> _StreamStream:
        return _StreamStream(self, path, response_deserializer, request_serializer)

    def unary_stream(
        self, path: str, request_serializer: Codec, response_deserializer: Codec
    ) -> _UnaryStream:
        return _UnaryStream(self, path, response_deserializer, request_serializer)

    async def close(self) -> None:
        """Cancel every call still open, as `grpc.aio.Channel.close` does."""
        for call in list(self.calls.values()):
            call.cancel()


class SimTransport(Transport):
    """The real transport of one client process (`node`), over simulated channels."""

    def __init__(self, net: Network, node: str, config: EtcdConfig) -> None:
        super().__init__(config)
        self.net = net
        self.node = node

    def channel(self) -> Any:
        if self._closed:
            raise EtcdClosed("etcd client is closed")
        chan = self._channels.get(self._current)
        if chan is None:
            chan = self._channels[self._current] = SimChannel(
                self.net, self.net.link(self.node), self.config
            )
        return chan


__all__ = [
    "DEADLINE",
    "KEEPALIVE",
    "REFUSED",
    "RESET",
    "Call",
    "Link",
    "LinkMode",
    "Network",
    "Pipe",
    "Server",
    "ServerStream",
    "SimChannel",
    "SimTransport",
    "StreamCall",
    "UnaryCall",
    "rpc_error",
]
