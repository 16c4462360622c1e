"""Latency statistics for the benchmark: pure; no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of `values`, linear between closest ranks.

    Matches the usual definition (numpy's default): position (n - 1) * q / 100 in sorted order.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    below, above = ordered[low], ordered[high]
    # This form is exact when below == above; the clamp absorbs rounding at the ends.
    return min(above, max(below, below + (above - below) * (position - low)))


@dataclass(frozen=True)
class LatencySummary:
    """Median and tail of one set of latencies, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencySummary:
        return cls(
            count=len(latencies_ms),
            p50_ms=percentile(latencies_ms, 50.0),
            p99_ms=percentile(latencies_ms, 99.0),
            max_ms=max(latencies_ms),
        )
