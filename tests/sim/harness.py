"""Owns running one simulated scenario: a fresh virtual loop, a `SimEtcd` on it, a time limit.

def test_something() -> None:
    async def scenario(sim: SimEtcd) -> None:
        client = sim.client("a")
        ...

    simulate(scenario, seed=3)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tests.sim.etcd import SimEtcd
from tests.sim.loop import DEFAULT_START, run

T = TypeVar("T")


def simulate(
    scenario: Callable[[SimEtcd], Awaitable[T]],
    *,
    seed: int = 0,
    limit: float = 24 * 3600.0,
    start: float = DEFAULT_START,
    **options: Any,
) -> T:
    """Run `scenario(sim)` on a new virtual loop; `options` go to `SimEtcd`."""

    async def main() -> T:
        sim = SimEtcd(seed=seed, **options)
        return await scenario(sim)

    return run(main(), start=start, limit=limit)


__all__ = ["simulate"]
