"""A seed replays exactly in one process, and the etcd workload keeps its invariants under
random faults (across processes: tests/integration/test_sim_replay.py)."""

from __future__ import annotations

import pytest

from tests.sim.workload import run_workload


def test_a_seed_replays_exactly_in_one_process() -> None:
    first = run_workload(5, horizon=15.0, settle=10.0)
    assert first.faults > 0 and first.acked > 0
    assert run_workload(5, horizon=15.0, settle=10.0) == first
    assert run_workload(6, horizon=15.0, settle=10.0).digest != first.digest


@pytest.mark.parametrize("seed", range(4))
def test_the_workload_keeps_its_invariants_under_faults(seed: int) -> None:
    run_workload(seed, horizon=30.0, settle=15.0)  # raises InvariantBroken
