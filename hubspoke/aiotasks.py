"""Ending helper tasks cleanly: every task a coroutine starts is finished before it returns.

A task that is cancelled but never awaited, or whose exception nobody retrieves, is left to
asyncio's garbage-collection hooks, which log it ("Task was destroyed but it is pending!",
"Task exception was never retrieved"). `cancel_and_wait` cancels what is still running and
waits for all of it; outcomes stay on the tasks for the caller to read.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel every task not yet done and wait until all have finished.

    Raises nothing of theirs: their exceptions are marked retrieved (read them with
    `.exception()` / `.result()`). If the caller is cancelled while waiting, the tasks have
    been cancelled already and the caller's cancellation goes on.
    """
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()
