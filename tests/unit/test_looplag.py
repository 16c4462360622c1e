"""The event-loop lag monitor: worst since start, and the worst of the last one or two windows."""

from __future__ import annotations

from hubspoke.observe.looplag import LoopLag


def test_recent_forgets_lag_older_than_two_windows_worst_never() -> None:
    lag = LoopLag(window=10.0)
    lag.observe(0.5, now=100.0)
    lag.observe(0.01, now=105.0)
    assert lag.recent() == 0.5
    lag.observe(0.02, now=112.0)  # next window: the previous one still counts
    assert lag.recent() == 0.5
    lag.observe(0.03, now=121.0)  # two windows on: the 0.5 s stall is gone from `recent`
    assert lag.recent() == 0.03
    lag.observe(0.0, now=200.0)  # a long quiet gap forgets everything but `worst`
    assert lag.recent() == 0.0
    assert lag.worst == 0.5
