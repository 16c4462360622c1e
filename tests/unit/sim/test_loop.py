"""The virtual-time loop: sleeps and deadlines in virtual time, nothing real, deadlocks named."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.sim.loop import SimDeadlock, SimRealIO, SimTimeLimit, run


def test_sleep_and_deadlines_take_virtual_time_only() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        marks = [loop.time()]
        await asyncio.sleep(30)
        marks.append(loop.time())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.sleep(3600)
        marks.append(loop.time())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 2.5)
        marks.append(loop.time())
        return marks

    started = time.perf_counter()
    assert run(main(), start=500.0) == [500.0, 530.0, 535.0, 537.5]
    assert time.perf_counter() - started < 1.0


def test_timers_run_in_time_order_with_concurrent_tasks() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []

        async def tick(name: str, every: float, count: int) -> None:
            for _ in range(count):
                await asyncio.sleep(every)
                seen.append((name, round(loop.time() - 1000.0, 6)))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(tick("a", 0.3, 3))
            tg.create_task(tick("b", 0.5, 2))
        return seen

    assert run(main()) == [("a", 0.3), ("b", 0.5), ("a", 0.6), ("a", 0.9), ("b", 1.0)]


def test_everything_waiting_with_no_timer_is_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimDeadlock, match="every task waits"):
        run(main())


def test_virtual_time_limit() -> None:
    async def main() -> None:
        for _ in range(1000):
            await asyncio.sleep(60)

    with pytest.raises(SimTimeLimit):
        run(main(), limit=3600.0)


def test_executor_work_runs_inline() -> None:
    calls: list[str] = []

    def work(x: int) -> int:
        calls.append("ran")
        return x * 2

    async def main() -> tuple[int, list[str]]:
        future = asyncio.to_thread(work, 21)
        assert calls == []  # not started before it is awaited
        return await future, list(calls)

    assert run(main()) == (42, ["ran"])


def test_executor_errors_propagate_and_forbid_mode_refuses() -> None:
    def broken() -> None:
        raise ValueError("inline")

    async def main() -> None:
        await asyncio.to_thread(broken)

    with pytest.raises(ValueError, match="inline"):
        run(main())
    with pytest.raises(SimRealIO, match="run_in_executor"):
        run(main(), executor="forbid")


async def _connect() -> None:
    await asyncio.open_connection("127.0.0.1", 9)


async def _resolve() -> None:
    await asyncio.get_running_loop().getaddrinfo("localhost", 80)


async def _datagram() -> None:
    await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )


async def _subprocess() -> None:
    await asyncio.create_subprocess_exec("/bin/true")


async def _reader() -> None:
    a, b = socket.socketpair()
    try:
        asyncio.get_running_loop().add_reader(a.fileno(), lambda: None)
    finally:
        a.close()
        b.close()


async def _signal() -> None:
    asyncio.get_running_loop().add_signal_handler(10, lambda: None)


ATTEMPTS = [_connect, _resolve, _datagram, _subprocess, _reader, _signal]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=lambda f: f.__name__)
def test_real_io_is_refused(attempt: object) -> None:
    assert callable(attempt)
    with pytest.raises(SimRealIO):
        run(attempt())


def test_same_program_same_timeline() -> None:
    async def main() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        order: list[tuple[int, float]] = []

        async def worker(n: int) -> None:
            for step in range(5):
                await asyncio.sleep(((n * 7 + step * 3) % 5) * 0.001)
                order.append((n, loop.time()))

        await asyncio.gather(*(worker(n) for n in range(8)))
        return order

    assert run(main()) == run(main())
