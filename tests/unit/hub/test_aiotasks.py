"""cancel_and_wait: every task finished, nothing left for asyncio's garbage-collection hooks."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from hubspoke.aiotasks import cancel_and_wait


async def test_cancels_what_runs_and_keeps_what_finished() -> None:
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))

    async def fail() -> None:
        raise ValueError("boom")

    async def value() -> int:
        return 7

    sleeper = asyncio.ensure_future(asyncio.sleep(60))
    failed = asyncio.ensure_future(fail())
    done = asyncio.ensure_future(value())
    await asyncio.sleep(0)
    await cancel_and_wait(sleeper, failed, done)
    assert sleeper.cancelled()
    assert isinstance(failed.exception(), ValueError)
    assert done.result() == 7
    del sleeper, failed, done
    gc.collect()
    await asyncio.sleep(0)
    assert seen == []  # no "Task exception was never retrieved"
    loop.set_exception_handler(None)


async def test_a_task_that_ignores_nothing_is_waited_for() -> None:
    finished = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)
            finished.set()

    task = asyncio.ensure_future(slow_cleanup())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert finished.is_set() and task.done()
