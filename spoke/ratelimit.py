"""A log rate limit: at most one line per key per interval, counting the lines held back."""

from __future__ import annotations


class RateLimit:
    """At most one log line per key per `interval` seconds; counts what it held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of held-back lines."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
