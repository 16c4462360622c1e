"""How late the event loop runs what is due: a stall here delays keep-alives and replies alike.

`LoopLag.run` sleeps `interval` seconds over and over and records how much later than asked it
woke up. `worst` is the largest lag since the monitor started (the spoke logs it when it becomes
ready: the stall of its start); `recent()` the largest over the last one or two `window`s (the
`hubspoke_loop_lag_seconds` gauge). Costs one timer per `interval`.
"""

from __future__ import annotations

import asyncio

INTERVAL = 0.05
WINDOW = 10.0


class LoopLag:
    def __init__(self, interval: float = INTERVAL, window: float = WINDOW) -> None:
        self.interval = interval
        self.window = window
        self.worst = 0.0
        self._current = 0.0
        self._previous = 0.0
        self._window_started: float | None = None

    def observe(self, lag: float, now: float) -> None:
        """Record one wake-up `lag` seconds late at loop time `now`."""
        if self._window_started is None:
            self._window_started = now
        elif now - self._window_started >= self.window:
            elapsed_windows = (now - self._window_started) // self.window
            self._previous = self._current if elapsed_windows < 2 else 0.0
            self._current = 0.0
            self._window_started += elapsed_windows * self.window
        self._current = max(self._current, lag)
        self.worst = max(self.worst, lag)

    def recent(self) -> float:
        """The worst lag over the current and the previous window."""
        return max(self._current, self._previous)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.observe(max(now - asked - self.interval, 0.0), now)
