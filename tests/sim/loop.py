"""Owns virtual time: an asyncio event loop whose clock moves only when every task waits.

`loop.time()` is a number that jumps straight to the next timer whenever nothing is ready, so
`asyncio.sleep(30)` costs no real time and `asyncio.timeout()` / `wait_for` deadlines fire on
the virtual clock. Nothing real may happen on it: registering a file descriptor (sockets,
pipes), resolving a name, a subprocess, a signal handler or a call from another thread raises
`SimRealIO`. Work sent to an executor (`asyncio.to_thread`, `run_in_executor`) runs inline at
once on the loop's own thread (deterministic), or raises with `executor="forbid"`. A loop with
no ready callback and no timer would sleep forever: it raises `SimDeadlock` instead.

    result = run(main(), start=1000.0, limit=3600.0)  # SimTimeLimit past 3,600 virtual s

Determinism: the same program on the same seed replays the same schedule in one process. Across
processes, iteration over sets of str/bytes follows the hash seed: run simulations under
`PYTHONHASHSEED=0` (`python -m tests.sim` re-execs itself so; tests that compare runs across
processes must do the same).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import selectors
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")

ExecutorMode = Literal["inline", "forbid"]

DEFAULT_START = 1000.0


class SimError(RuntimeError):
    """A simulation broke one of its own rules (not a failure of the code under test)."""


class SimDeadlock(SimError):
    """Every task waits and no timer is scheduled: the loop would sleep forever."""


class SimRealIO(SimError):
    """Code on the virtual loop tried real I/O, a thread or a subprocess."""


class SimTimeLimit(SimError):
    """The virtual clock passed the run's limit."""


class _VirtualSelector(selectors.BaseSelector):
    """A selector with nothing registered: `select(timeout)` advances the clock by `timeout`."""

    def __init__(self, loop: SimEventLoop) -> None:
        self._loop = loop

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        raise SimRealIO(f"real I/O on the virtual loop: file object {fileobj!r}")

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        raise KeyError(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimDeadlock(
                f"at virtual time {self._loop.time():.6f} every task waits and no timer is set"
            )
        if timeout > 0:
            self._loop._advance(timeout)
        return []

    def close(self) -> None:
        pass

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return {}


class SimEventLoop(asyncio.SelectorEventLoop):
    """The virtual-time loop. Build it through `run()` or `new_loop()`."""

    def __init__(
        self,
        *,
        start: float = DEFAULT_START,
        limit: float | None = None,
        executor: ExecutorMode = "inline",
        turn: float = 0.0,
    ) -> None:
        """`turn`: timers due within this many virtual seconds of the earliest run in the same
        loop iteration, as on a busy real loop where callbacks pile up between two turns (so
        races between callbacks of one turn can happen at all); 0 runs each due time alone."""
        self._now = start
        self._limit = None if limit is None else start + limit
        self._executor_mode: ExecutorMode = executor
        self._owner_thread = threading.get_ident()
        # timers as (when, sequence, handle): compared in C, equal times in the order set
        self._timers: list[tuple[float, int, Any]] = []
        self._sequence = itertools.count()
        super().__init__(_VirtualSelector(self))
        if turn > 0:
            self._clock_resolution = turn

    # -- the clock -------------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def _advance(self, seconds: float) -> None:
        now = self._now + seconds
        if self._limit is not None and now > self._limit:
            raise SimTimeLimit(f"virtual time passed {self._limit:.3f}")
        self._now = now

    # -- one iteration: no I/O to poll, only timers and ready callbacks ---------------------

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        base: Any = self  # asyncio's private parts, as `BaseEventLoop.call_at` uses them
        base._check_closed()
        if base._debug:
            base._check_thread()
            base._check_callback(callback, "call_at")
        timer = asyncio.TimerHandle(when, callback, args, self, context)
        handle: Any = timer
        if handle._source_traceback:
            del handle._source_traceback[-1]
        heapq.heappush(self._timers, (when, next(self._sequence), handle))
        handle._scheduled = True
        return timer

    def _run_once(self) -> None:
        """`BaseEventLoop._run_once` without a selector: run what is ready; when nothing is,
        move the clock to the earliest timer; then every timer due within the turn
        (`_clock_resolution`) joins the ready callbacks, and they run."""
        base: Any = self
        timers = self._timers
        ready = base._ready
        if len(timers) > 100 and base._timer_cancelled_count * 2 > len(timers):
            kept = []
            for entry in timers:
                if entry[2]._cancelled:
                    entry[2]._scheduled = False
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            self._timers = timers = kept
            base._timer_cancelled_count = 0
        else:
            while timers and timers[0][2]._cancelled:
                base._timer_cancelled_count -= 1
                heapq.heappop(timers)[2]._scheduled = False
        if not ready and not base._stopping:
            if not timers:
                base._selector.select(None)  # raises SimDeadlock
            elif timers[0][0] > self._now:
                self._advance(timers[0][0] - self._now)
        end = self._now + self._clock_resolution
        while timers and timers[0][0] < end:
            handle = heapq.heappop(timers)[2]
            handle._scheduled = False
            ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()
        handle = None  # break cycles when an exception occurs

    def close(self) -> None:
        self._timers.clear()
        super().close()

    # -- no self-pipe: nothing wakes the loop but its own callbacks -------------------------

    def _make_self_pipe(self) -> None:
        pass

    def _close_self_pipe(self) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        if threading.get_ident() != self._owner_thread:
            raise SimRealIO("a thread called into the virtual loop")
        return self.call_soon(callback, *args, context=context)

    # -- executors run inline --------------------------------------------------------------

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        if self._executor_mode == "forbid":
            raise SimRealIO(f"run_in_executor({func!r}) on the virtual loop")
        future: asyncio.Future[T] = self.create_future()
        try:
            result = func(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def set_default_executor(self, executor: Any) -> None:
        raise SimRealIO("an executor on the virtual loop")

    # -- everything real is refused --------------------------------------------------------

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"name resolution on the virtual loop: {args!r}")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"name resolution on the virtual loop: {args!r}")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a connection on the virtual loop: {args!r}")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a server on the virtual loop: {args!r}")

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a datagram endpoint on the virtual loop: {args!r}")

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a connection on the virtual loop: {args!r}")

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a server on the virtual loop: {args!r}")

    async def sock_connect(self, sock: Any, address: Any) -> None:
        raise SimRealIO(f"a socket connect on the virtual loop: {address!r}")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a subprocess on the virtual loop: {args!r}")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        raise SimRealIO(f"a subprocess on the virtual loop: {args!r}")

    def add_signal_handler(  # type: ignore[override]
        self, sig: int, callback: Callable[..., object], *args: Any
    ) -> None:
        raise SimRealIO(f"a signal handler on the virtual loop: {sig}")


def new_loop(
    *,
    start: float = DEFAULT_START,
    limit: float | None = None,
    executor: ExecutorMode = "inline",
    turn: float = 0.0,
) -> SimEventLoop:
    return SimEventLoop(start=start, limit=limit, executor=executor, turn=turn)


def run(
    main: Coroutine[Any, Any, T],
    *,
    start: float = DEFAULT_START,
    limit: float | None = None,
    executor: ExecutorMode = "inline",
    debug: bool = False,
    turn: float = 0.0,
) -> T:
    """Run `main` to completion on a fresh virtual loop starting at `start` (virtual seconds).

    `limit` bounds the virtual time the run may use (`SimTimeLimit` past it). Tasks still
    running when `main` returns are cancelled, as `asyncio.run` does.
    """
    loop = new_loop(start=start, limit=limit, executor=executor, turn=turn)
    with asyncio.Runner(loop_factory=lambda: loop, debug=debug) as runner:
        return runner.run(main)


__all__ = [
    "DEFAULT_START",
    "SimDeadlock",
    "SimError",
    "SimEventLoop",
    "SimRealIO",
    "SimTimeLimit",
    "new_loop",
    "run",
]
