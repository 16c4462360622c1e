"""Unit tests for bench.stats: percentiles and latency summaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import LatencySummary, percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50.0, 5.0),
        ([5.0], 99.0, 5.0),
        ([1.0, 2.0, 3.0], 50.0, 2.0),
        ([3.0, 1.0, 2.0], 50.0, 2.0),  # order of input does not matter
        ([1.0, 2.0, 3.0, 4.0], 50.0, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100.0, 4.0),
        ([float(i) for i in range(1, 101)], 99.0, 99.01),
        ([float(i) for i in range(101)], 99.0, 99.0),
    ],
)
def test_percentile_table(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize("q", [-0.1, 100.5])
def test_percentile_refuses_out_of_range(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50.0)


finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=200), st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_percentile_is_monotonic_and_bounded(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    p_low, p_high = percentile(values, low), percentile(values, high)
    assert min(values) <= p_low <= p_high + 1e-9
    assert p_high <= max(values)


def test_latency_summary() -> None:
    summary = LatencySummary.of([0.2] * 99 + [10.0])
    assert summary.count == 100
    assert summary.p50_ms == pytest.approx(0.2)
    assert summary.max_ms == 10.0
    assert 0.2 < summary.p99_ms < 10.0
